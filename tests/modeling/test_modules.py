"""`modeling.modules`: the codebook, Gumbel straight-through, the Gaussian NLL, entropies, and activation checkpointing of
the policy's decoder stack."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.fixtures.models import tiny_vlm, tiny_vlm_path
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset
from trl_latent.modeling import LatentActionModel
from trl_latent.modeling import model as model_module
from trl_latent.modeling.generation import latent_generate
from trl_latent.modeling.modules import Codebook, entropy_from_logits, gaussian_nll, gumbel_straight_through
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_grpo_trainer import POLICY_LORA_TARGET_MODULES, LatentGRPOTrainer


def test_gumbel_straight_through_is_one_hot_forward_with_a_relaxed_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, requires_grad=True)
    sample = gumbel_straight_through(logits, temperature=2.0)
    assert torch.equal(sample.sum(-1), torch.ones(5)) and set(sample.unique().tolist()) <= {0.0, 1.0}
    (sample * torch.arange(7.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # the gradient of the relaxed sample flows


def test_codebook_indices_and_one_hots_give_the_same_vectors():
    codebook = Codebook(num_codes=6, dim=4)
    codes = torch.tensor([[0, 5, 2]])
    one_hot = torch.nn.functional.one_hot(codes, 6).float()
    assert torch.allclose(codebook(codes), codebook(one_hot)) and codebook(codes).shape == (1, 3, 4)


def test_gaussian_nll_and_entropy_match_their_formulas():
    mean, logvar, target = torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)
    assert torch.equal(gaussian_nll(mean, logvar, target), torch.full((2,), 3.0))  # sum of (0 - 1)^2 * 1 + 0
    assert torch.allclose(gaussian_nll(mean, torch.full((2, 3), 2.0), mean), torch.full((2,), 6.0))
    assert entropy_from_logits(torch.zeros(8)).item() == pytest.approx(math.log(8))
    assert entropy_from_logits(torch.tensor([100.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)


# -------------------------------------------------------------- activation checkpointing of the policy
# Activation (gradient) checkpointing of the policy layers: `LatentGRPOConfig(gradient_checkpointing=True)`.
#
# What is checked: the config accepts it (TRL's users set it); only the policy's decoder layers are checkpointed (the
# frozen base and the other new modules are untouched); checkpointing changes neither the loss nor a single gradient
# (model level under every option, and the trainer's own loss on one rollout batch), while the policy keeps fewer
# tensors for backward; decoding (no gradient, KV caches) is unaffected; LoRA on the policy with reentrant
# checkpointing (what TRL forces under PEFT + ZeRO-3) still trains.

POLICY_LAYERS = 2


@pytest.fixture(scope="module")
def initial_model(tiny_cache):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LatentActionModel.from_base(
            tiny_vlm_path("tiny", cache_dir=tiny_cache),
            codebook_size=16,
            inverse_layers=1,
            policy_layers=POLICY_LAYERS,
            world_output="residual_minus_base",
        )


@pytest.fixture
def model(initial_model):
    return copy.deepcopy(initial_model)


@pytest.fixture(scope="module")
def processor(tiny_cache):
    return tiny_vlm("tiny", cache_dir=tiny_cache)[1]


def checkpointed_layers(model) -> list[str]:
    return [name for name, m in model.named_modules() if getattr(m, "gradient_checkpointing", False)]


def policy_grads(model, states, positions, mask):
    """Policy logits on fixed states (as the update computes them), a fixed random objective, its gradients; also
    the number of elements saved for backward."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        view = model.states_view(states, mask, positions)
        logits = model.policy_logits(states, view)
    weights = torch.linspace(-1, 1, logits.numel()).reshape(logits.shape)
    loss = (torch.log_softmax(logits.float(), -1) * weights).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, saved[0]


# ------------------------------------------------------------------------------------------------------ config
def test_config_accepts_gradient_checkpointing():
    args = LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, gradient_checkpointing=True)
    assert args.activation_checkpointing and args.gradient_checkpointing
    kwargs = {"use_reentrant": True, "every_n_layers": 2}
    args = LatentGRPOConfig(
        "out",
        use_cpu=True,
        per_device_train_batch_size=8,
        activation_checkpointing=True,
        gradient_checkpointing_kwargs=kwargs,
    )
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == kwargs
    default = LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8)
    assert default.activation_checkpointing is False  # off unless asked for (TRL's default is on)


# ------------------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize(
    "kwargs, every_n_layers, checkpointed",
    [
        (None, 1, [0, 1]),
        ({"use_reentrant": True}, 1, [0, 1]),
        ({"use_reentrant": False, "every_n_layers": 2}, 1, [0]),  # TRL passes the raw kwargs back on re-enable
        (None, 2, [0]),
        ({"offload": True}, 1, [0, 1]),  # a no-op on CPU (the activations already live there)
    ],
    ids=["non_reentrant", "reentrant", "every_2_from_kwargs", "every_2", "offload"],
)
def test_only_policy_layers_are_checkpointed_with_the_same_gradients(model, kwargs, every_n_layers, checkpointed):
    model.set_trainable(["policy"])
    model.train()
    torch.manual_seed(0)
    batch, seq, dim = 3, 10, model.backbone.hidden_size
    states = torch.randn(batch, seq, dim)
    positions = torch.arange(seq).expand(3, batch, seq)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, :3] = 0  # a left-padded row
    loss, grads, saved = policy_grads(model, states, positions, mask)

    assert not model.is_activation_checkpointing and model.supports_gradient_checkpointing
    model.gradient_checkpointing_enable(kwargs, every_n_layers=every_n_layers)  # what TRL calls
    assert checkpointed_layers(model) == [f"policy.layers.{i}" for i in checkpointed]
    assert model.is_gradient_checkpointing
    ck_loss, ck_grads, ck_saved = policy_grads(model, states, positions, mask)
    assert ck_saved < saved, (ck_saved, saved)  # checkpointed layers keep only their inputs for backward
    assert torch.equal(ck_loss, loss)
    assert ck_grads.keys() == grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(ck_grads[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)

    model.gradient_checkpointing_disable()
    assert checkpointed_layers(model) == [] and not model.is_activation_checkpointing
    model.activation_checkpointing_enable()  # transformers' (non-deprecated) name
    assert checkpointed_layers(model) == [f"policy.layers.{i}" for i in range(POLICY_LAYERS)]


def test_decoding_is_unaffected(model, processor):
    """Decoding runs without gradient (`latent_generate` is `no_grad`), so checkpointed layers run as usual and keep
    their KV cache, in train mode too."""
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
    ] * 2
    images = [example["image"] for example in synthetic_rl_dataset(2, seed=0)]
    batch = dict(processor(text=texts, images=images, return_tensors="pt", padding=True))
    model.train()
    plain = latent_generate(model, **batch, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    model.gradient_checkpointing_enable()
    checkpointed = latent_generate(model, **batch, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.sequences, checkpointed.sequences) and torch.equal(plain.codes, checkpointed.codes)


# ----------------------------------------------------------------------------------------------------- trainer
def make_trainer(model, processor, tmp_path, trainer_kwargs=None, **overrides):
    kwargs = dict(
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-2,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)

    def reward(completion_ids, **kw):  # varied, so the advantages (and the loss) are not zero
        return [float(hash(tuple(ids)) % 1000) / 1000 for ids in completion_ids]

    return LatentGRPOTrainer(
        model,
        reward_funcs=reward,
        args=LatentGRPOConfig(str(tmp_path / "out"), **kwargs),
        train_dataset=synthetic_rl_dataset(16, seed=0),
        processing_class=processor,
        **(trainer_kwargs or {}),
    )


def test_trainer_loss_and_gradients_are_the_same_with_and_without(model, processor, tmp_path, monkeypatch):
    """`gradient_checkpointing=True` reaches the policy through `Trainer` (and only the policy); on the first rollout
    batch the trainer's loss and every policy gradient are the same checkpointed and not, and the checkpointed
    update really goes through `torch.utils.checkpoint` (once per policy layer)."""
    calls = []
    real_checkpoint = model_module.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real_checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(model_module, "checkpoint", counting)
    trainer = make_trainer(model, processor, tmp_path, gradient_checkpointing=True)
    compute_loss = trainer._compute_loss
    results = {}

    def comparing(model_, inputs):
        latent = trainer._latent_model()
        assert checkpointed_layers(latent) == [f"policy.layers.{i}" for i in range(POLICY_LAYERS)]
        params = [p for p in latent.parameters() if p.requires_grad]
        for checkpointed in (True, False):
            if not checkpointed:
                latent.gradient_checkpointing_disable()
            calls.clear()
            loss = compute_loss(model_, inputs)
            results[checkpointed] = (loss.detach(), torch.autograd.grad(loss, params), list(calls))
        latent.gradient_checkpointing_enable(trainer.args.gradient_checkpointing_kwargs)
        return compute_loss(model_, inputs)

    trainer._compute_loss = comparing
    trainer.train()
    (loss, grads, ck_calls), (plain_loss, plain_grads, plain_calls) = results[True], results[False]
    assert ck_calls == [False] * POLICY_LAYERS and plain_calls == []  # non-reentrant by default
    assert loss.abs() > 0
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    assert any(g.abs().sum() > 0 for g in grads)
    for g, plain in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, plain, rtol=1e-6, atol=1e-7)


def test_lora_on_the_policy_with_reentrant_checkpointing(model, processor, tmp_path):
    """TRL forces `use_reentrant=True` for PEFT under ZeRO-3 and enables input gradients for PEFT: the policy's input
    (detached base states) is made to require grad, so the adapter still gets gradients."""
    from peft import LoraConfig

    trainer = make_trainer(
        model,
        processor,
        tmp_path,
        max_steps=2,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": True},
        trainer_kwargs={"peft_config": LoraConfig(r=4, lora_alpha=8, target_modules=POLICY_LORA_TARGET_MODULES)},
    )
    trainer.train()
    latent = trainer._latent_model()
    assert checkpointed_layers(latent) == [f"policy.layers.{i}" for i in range(POLICY_LAYERS)]
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # initialised at zero, trained
