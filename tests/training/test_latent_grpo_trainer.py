"""LatentGRPOConfig / LatentGRPOTrainer: latent-action RL on the tiny VLM (CPU, a few steps per test).

What is checked, beyond "it runs":
- every loss learns: with a reward only a choice of codes can raise, mean reward rises clearly;
- only the policy changes; the base and the world model (codebook, merge) stay bit-identical;
- the reference is a copy of the policy modules only (counted), KL is exactly 0 before the first update;
- the update reuses the rollout's base states (the base is never run in the update) and recomputes exactly the
  rollout's sampling log-probabilities (so positions, codes and rows stay aligned through TRL's shuffle and split);
- PEFT (LoRA on the policy), the TR-DPO reference sync, the migration of a TRL script, and bad input.
"""

from __future__ import annotations

import ast
import copy
import difflib
import gc
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, TrainerCallback
from trl import GRPOConfig, ModelConfig, TrlParser, get_peft_config

from tests.fixtures.bad_input import Case, bad_input_test, train_on_empty
from tests.fixtures.models import tiny_vlm, tiny_vlm_path
from tests.fixtures.paths import ROOT
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset
from trl_latent.modeling import LatentActionModel
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_grpo_trainer import (
    POLICY_LORA_TARGET_MODULES,
    LatentGRPOTrainer,
    policy_peft_config,
)
from trl_latent.training.losses import LOSS_CLASSES, get_loss

LOSSES = sorted(LOSS_CLASSES)


# Measured on this setup (16 steps, lr 1e-2, 2 prompts x 4 rollouts of 8 steps, seed 0), mean reward of the first 4
# steps -> the last 4 steps, every loss: 0.035 -> 0.48-0.49 (an earlier tiny-model build: 0.06-0.08 -> 0.43-0.67).
# Asked: a rise of at least 0.2.
LEARNING_STEPS = 16


MIN_REWARD_RISE = 0.2


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def base_path(tiny_cache):
    return tiny_vlm_path("tiny", cache_dir=tiny_cache)


@pytest.fixture(scope="module")
def processor(tiny_cache):
    return tiny_vlm("tiny", cache_dir=tiny_cache)[1]


@pytest.fixture(scope="module")
def dataset():
    return synthetic_rl_dataset(64, seed=0)


@pytest.fixture(scope="module")
def initial_model(base_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # Minus-base output: with an untrained merge its tokens depend on the (scaled-up) codes, which the learning
        # tests below need; the trainer itself is form-agnostic.
        return LatentActionModel.from_base(
            base_path, codebook_size=16, inverse_layers=1, policy_layers=1, world_output="residual_minus_base"
        )


@pytest.fixture
def model(initial_model):
    return copy.deepcopy(initial_model)


@pytest.fixture(scope="module")
def steerable_model(initial_model):
    """The untrained model with its codebook scaled up, so the world model's next token depends on the code (at
    initialisation the code vectors are ~0.02 per dimension against base states of ~1, and barely matter)."""
    model = copy.deepcopy(initial_model)
    with torch.no_grad():
        model.codebook.proj.weight.mul_(100.0)
    return model


@pytest.fixture(scope="module")
def code_token_pair(steerable_model, processor, dataset):
    """A code c and a token x of the untrained world model such that c makes it emit x at most rollout states while
    the other codes rarely do: a reward counting x can only be raised by choosing c."""
    rows = dataset.select(range(16))
    texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True) for r in rows]
    inputs = processor(text=texts, images=[r["image"] for r in rows], return_tensors="pt", padding=True)
    model = steerable_model
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=8,
            code_top_k=None,
            eos_token_id=[],
            return_states=True,
            generator=torch.Generator().manual_seed(0),
        )
        prompt_width = inputs["input_ids"].shape[1]
        states = out.states[:, prompt_width - 1 :].reshape(-1, 1, out.states.shape[-1])
        num_codes = model.config.codebook_size
        tokens = torch.stack(
            [
                model.world_logits(states, torch.full((len(states), 1), c)).argmax(-1).flatten()
                for c in range(num_codes)
            ]
        )  # (codes, states): the greedy token of each code at each state
    vocab = len(processor.tokenizer)
    freq = torch.stack([torch.bincount(t, minlength=vocab).float() / t.numel() for t in tokens])  # P(x | c)
    freq[:, processor.tokenizer.all_special_ids] = -1.0
    code, token = divmod(int(freq.argmax()), vocab)
    p_token_given_code, p_token = freq[code, token].item(), freq[:, token].clamp(min=0).mean().item()
    assert p_token_given_code >= 0.5 and p_token <= 0.15, (p_token_given_code, p_token)
    return code, token


def token_fraction_reward(token_id):
    def token_fraction(completion_ids, **kwargs):
        return [sum(t == token_id for t in ids) / max(len(ids), 1) for ids in completion_ids]

    return token_fraction


def text_length_reward(completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]


def token_hash_reward(completion_ids, **kwargs):  # arbitrary but varied: any two different completions differ
    return [float(hash(tuple(ids)) % 1000) / 1000 for ids in completion_ids]


def make_config(tmp_path, **overrides):
    kwargs = dict(
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=3,
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
    return LatentGRPOConfig(str(tmp_path / "out"), **kwargs)


def make_trainer(model, processor, dataset, tmp_path, reward=text_length_reward, trainer_kwargs=None, **config):
    return LatentGRPOTrainer(
        model,
        reward_funcs=reward,
        args=make_config(tmp_path, **config),
        train_dataset=dataset,
        processing_class=processor,
        **(trainer_kwargs or {}),
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_only_policy_changed(before, model):
    after = dict(model.named_parameters())
    unchanged_policy = [n for n in before if n.startswith("policy.") and torch.equal(before[n], after[n])]
    changed_frozen = [n for n in before if not n.startswith("policy.") and not torch.equal(before[n], after[n])]
    assert not unchanged_policy, f"policy parameters that did not change: {unchanged_policy}"
    assert not changed_frozen, f"frozen parameters that changed: {changed_frozen}"
    groups = {n.split(".")[0] for n in before}
    assert {"base", "codebook", "world_merge", "policy"} <= groups


def logged(trainer, key) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h and "train_runtime" not in h]


def record_rollout_codes(trainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The rollout codes and completion masks of every micro-batch the update sees, in order."""
    from trl_latent.training.latent_grpo_trainer import CODES_KEY

    seen = []
    compute_loss = trainer._compute_loss

    def recording(model_, inputs):
        seen.append((inputs[CODES_KEY].clone(), inputs["completion_mask"].bool().clone()))
        return compute_loss(model_, inputs)

    trainer._compute_loss = recording
    return seen


def count_codes(codes: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Distinct codes and the perplexity (exp of the entropy) of their usage over the masked steps, counted by hand."""
    from collections import Counter
    from math import exp, log

    counts = Counter(codes[mask].tolist())
    total = sum(counts.values())
    return float(len(counts)), exp(-sum(n / total * log(n / total) for n in counts.values()))


# --------------------------------------------------------------------------------------------------- bad input
def test_plain_vlm_is_rejected_with_the_recipe(base_path, processor, dataset, tmp_path, tiny_cache):
    plain, _ = tiny_vlm("tiny", cache_dir=tiny_cache)
    for model in (plain, str(base_path)):
        with pytest.raises(TypeError, match=r"needs a latent action model.*LatentActionModel\.from_base"):
            make_trainer(model, processor, dataset, tmp_path)


def test_saved_latent_model_path_is_accepted(model, dataset, tmp_path, caplog):
    folder = tmp_path / "latent"
    model.save_pretrained(folder)
    # No processing_class: it is loaded from the latent model's base (left padding, the multimodal processor).
    args = make_config(tmp_path, model_init_kwargs={"dtype": "float32"})
    with caplog.at_level("WARNING", logger="trl.trainer.grpo_trainer"):
        trainer = LatentGRPOTrainer(str(folder), reward_funcs=text_length_reward, args=args, train_dataset=dataset)
    # The kwargs loaded the latent model: TRL is not left to claim they "will be ignored", and the config keeps them.
    assert not [r for r in caplog.records if "model_init_kwargs" in r.getMessage()]
    assert args.model_init_kwargs == {"dtype": "float32"}
    assert LatentActionModel.from_pretrained(folder, dtype="bfloat16").policy.head.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'float33'"):
        LatentActionModel.from_pretrained(folder, dtype="float33")
    assert isinstance(trainer.model, LatentActionModel)
    assert type(trainer.processing_class).__name__ == "Qwen2_5_VLProcessor"
    assert trainer.processing_class.tokenizer.padding_side == "left"
    torch.testing.assert_close(trainer.model.policy.head.weight, model.policy.head.weight, rtol=0, atol=0)


def test_trainer_rejects_what_cannot_apply(model, processor, dataset, tmp_path):
    with pytest.raises(TypeError, match="LatentGRPOConfig"):
        LatentGRPOTrainer(
            model, text_length_reward, args=GRPOConfig("out", use_cpu=True, per_device_train_batch_size=8)
        )
    for kwargs, match in [
        ({"tools": [len]}, "tool calling"),
        ({"rollout_func": lambda prompts, trainer: {}}, "rollout_func"),
        ({"environment_factory": object}, "environments"),
    ]:
        with pytest.raises(NotImplementedError, match=match):
            make_trainer(model, processor, dataset, tmp_path, trainer_kwargs=kwargs)


# ---------------------------------------------------------------------------------------------- the four losses
@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_learns_to_choose_codes(loss, steerable_model, processor, dataset, code_token_pair, tmp_path):
    """The loss with its paper defaults (Dr.GRPO without std scaling, DAPO with clip-higher) and beta = 0.01: the
    reward (fraction of completion tokens equal to the token code c produces) rises clearly; only the policy changes;
    KL to the policy-only reference is 0 before the first update and positive after. (Completions here all run to
    max_completion_length, so GRPO's and BNPO's aggregations coincide; tests/training/test_losses.py checks them apart.)"""
    code, token = code_token_pair
    model = copy.deepcopy(steerable_model)
    before = snapshot(model)
    trainer = make_trainer(
        model,
        processor,
        dataset,
        tmp_path,
        reward=token_fraction_reward(token),
        loss=get_loss(loss, paper=True, beta=0.01),
        max_steps=LEARNING_STEPS,
        code_top_k=None,
    )
    assert trainer.policy_loss.name == loss and trainer.policy_loss.beta == 0.01
    trainer.train()

    rewards = logged(trainer, "reward")
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    print(f"{loss}: mean reward first 4 steps {first:.3f}, last 4 steps {last:.3f}")
    assert last - first >= MIN_REWARD_RISE, rewards
    assert_only_policy_changed(before, model)
    for key in ("latent/kl", "kl"):  # exact KL over the codes, and the loss's k3 estimate on the sampled codes
        values = logged(trainer, key)
        assert values[0] == 0.0 and values[-1] > 0.0, (key, values)
    # The policy now prefers code c (the reward's code) by a wide margin.
    assert logged(trainer, "latent/code_entropy")[-1] < logged(trainer, "latent/code_entropy")[0]


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_without_kl(loss, model, processor, dataset, tmp_path):
    """beta = 0: no KL term in the loss, but `latent/kl` is still logged: 0 at the first step, positive later. The
    logged code usage is that of the step's rollout codes, counted here over the completion steps."""
    before = snapshot(model)
    trainer = make_trainer(model, processor, dataset, tmp_path, loss=loss, beta=0.0, max_steps=3)
    rollouts = record_rollout_codes(trainer)
    trainer.train()
    assert trainer.policy_loss.beta == 0.0
    assert not logged(trainer, "kl")  # the loss has no KL term
    kl = logged(trainer, "latent/kl")
    assert kl[0] == 0.0 and kl[-1] > 0.0, kl
    assert_only_policy_changed(before, model)
    for key in ("latent/codes_used", "latent/code_perplexity", "latent/code_entropy", "diversity/distinct_1"):
        assert len(logged(trainer, key)) == 3, key
    assert len(rollouts) == 3  # one generation batch (one micro-batch) per step
    used, perplexity = zip(*(count_codes(codes, mask) for codes, mask in rollouts))
    assert logged(trainer, "latent/codes_used") == list(used), (logged(trainer, "latent/codes_used"), used)
    assert logged(trainer, "latent/code_perplexity") == pytest.approx(perplexity, rel=1e-9)
    assert all(1 < n <= 16 for n in used)  # sampled codes of an untrained policy are spread over the codebook


class _Writer:
    """Stands in for TensorBoard's SummaryWriter: records `add_histogram` calls."""

    def __init__(self):
        self.histograms = []

    def add_histogram(self, tag, values, step, bins=None):
        self.histograms.append((tag, values.copy(), step, bins))


class _TensorBoardLike(TrainerCallback):
    def __init__(self):
        self.tb_writer = _Writer()


def test_completions_table_shows_the_codes_and_usage_is_a_histogram(model, processor, dataset, tmp_path, capsys):
    """`log_completions` prints TRL's table with a `codes` column: each completion's codes, one per completion token;
    at each log the codes of the steps since the last one go to a histogram-drawing logger, one bin per code."""
    board = _TensorBoardLike()
    trainer = make_trainer(model, processor, dataset, tmp_path, max_steps=2, log_completions=True,
                           trainer_kwargs=dict(callbacks=[board]))  # fmt: skip
    rollouts = record_rollout_codes(trainer)
    trainer.train()
    codes_column = list(trainer._logs["extra"]["codes"])
    assert len(codes_column) == len(trainer._logs["completion"]) == 8  # the last generation batch
    last_codes, last_mask = rollouts[-1]
    # the update sees the batch shuffled (TRL's shuffle), so compare as multisets
    expected = [" ".join(map(str, row[keep].tolist())) for row, keep in zip(last_codes, last_mask)]
    assert sorted(codes_column) == sorted(expected)
    assert "codes" in capsys.readouterr().out  # the printed table's column
    histograms = board.tb_writer.histograms
    assert [(tag, step) for tag, _, step, _ in histograms] == [("latent/code_usage", 1), ("latent/code_usage", 2)]
    for (_, values, _, bins), (codes, mask) in zip(histograms, rollouts, strict=True):
        assert sorted(values.tolist()) == sorted(codes[mask].tolist())
        assert len(bins) == model.config.codebook_size + 1


def test_no_reference_without_kl(model, processor, dataset, tmp_path):
    trainer = make_trainer(model, processor, dataset, tmp_path, beta=0.0, log_reference_kl=False, max_steps=1)
    trainer.train()
    assert trainer._reference_policy_copy is None
    assert not logged(trainer, "latent/kl") and not logged(trainer, "kl")


# ------------------------------------------------------------------------------------------- reference, reuse
def test_reference_is_a_copy_of_the_policy_only(model, processor, dataset, tmp_path):
    alive = [o for o in gc.get_objects() if isinstance(o, torch.nn.Parameter)]  # held, so no id is reused
    alive_ids = {id(p) for p in alive}
    trainer = make_trainer(model, processor, dataset, tmp_path, max_steps=1)
    trainer.train()
    gc.collect()
    created = [o for o in gc.get_objects() if isinstance(o, torch.nn.Parameter) and id(o) not in alive_ids]
    policy_numel = sum(p.numel() for p in model.policy.parameters())
    base_numel = sum(p.numel() for p in model.base.parameters())
    # The only parameters training created are the reference: as many as the policy, far fewer than the base.
    assert sum(p.numel() for p in created) == policy_numel < base_numel
    reference = trainer._reference_policy()
    assert trainer.ref_model is None  # TRL's reference model (a reload of the whole model) was never built
    assert sum(p.numel() for p in reference.parameters()) == policy_numel
    assert not any(p.requires_grad for p in reference.parameters())
    ref_state, policy_state = reference.state_dict(), model.policy.state_dict()
    assert ref_state.keys() == policy_state.keys()
    assert all(ref_state[k].data_ptr() != policy_state[k].data_ptr() for k in ref_state)


def test_reference_sync_tr_dpo(model, processor, dataset, tmp_path):
    """sync_ref_model with alpha 1 copies the policy into the reference after every step: KL 0 at every step."""
    trainer = make_trainer(
        model,
        processor,
        dataset,
        tmp_path,
        max_steps=2,
        sync_ref_model=True,
        ref_model_sync_steps=1,
        ref_model_mixup_alpha=1.0,
    )
    trainer.train()
    assert logged(trainer, "latent/kl") == [0.0, 0.0]
    for ref_p, p in zip(trainer._reference_policy().parameters(), model.policy.parameters(), strict=True):
        assert torch.equal(ref_p, p)


@pytest.mark.parametrize("reuse", [True, False], ids=["reuse_states", "recompute_states_right_padding"])
def test_update_reuses_rollout_states_and_matches_rollout_logprobs(reuse, model, processor, dataset, tmp_path, caplog):
    """With reuse the base never runs in the update; either way the update's code log-probabilities before any
    optimizer step equal the rollout's sampling log-probabilities (rows, steps and 3-D positions line up after TRL's
    shuffle and split into 2 micro-batches). The recompute case uses a processor padding on the right, which the
    trainer switches to left padding (otherwise mm_token_type_ids and the prompt ids would be misaligned)."""
    if not reuse:
        processor = copy.deepcopy(processor)
        processor.tokenizer.padding_side = "right"
    with caplog.at_level(logging.WARNING, logger="trl_latent.training.latent_grpo_trainer"):
        trainer = make_trainer(
            model,
            processor,
            dataset,
            tmp_path,
            reuse_rollout_states=reuse,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,  # the generation batch is shuffled, then split in 2 micro-batches
            max_steps=2,
        )
    assert processor.tokenizer.padding_side == "left"
    assert ("switches it to left padding" in caplog.text) == (not reuse)

    calls = {"rollout": 0, "update": 0}
    phase = ["rollout"]
    hook = model.backbone.inner.register_forward_pre_hook(lambda *a: calls.__setitem__(phase[0], calls[phase[0]] + 1))
    captured = []
    compute_loss, compute_policy_loss = trainer._compute_loss, trainer._compute_policy_loss

    def counting_compute_loss(model_, inputs):
        phase[0] = "update"
        try:
            return compute_loss(model_, inputs)
        finally:
            phase[0] = "rollout"

    def capturing_policy_loss(inputs, per_token_logps, entropies, **kwargs):
        mask = inputs["completion_mask"].bool()
        captured.append((per_token_logps.detach()[mask], inputs["sampling_per_token_logps"][mask]))
        return compute_policy_loss(inputs, per_token_logps, entropies, **kwargs)

    trainer._compute_loss, trainer._compute_policy_loss = counting_compute_loss, capturing_policy_loss
    try:
        trainer.train()
    finally:
        hook.remove()
    assert calls["rollout"] > 0
    assert calls["update"] == (0 if reuse else 4), calls  # 2 steps x 2 micro-batches when recomputing
    assert len(captured) == 4
    for logps, sampling_logps in captured[:2]:  # the first optimizer step: on-policy
        torch.testing.assert_close(logps, sampling_logps, rtol=0, atol=1e-5)


def test_static_cache_rollouts_give_the_same_loss(steerable_model, processor, dataset, tmp_path, monkeypatch):
    """`latent_cache_implementation` and `compile_latent_step` reach latent decoding; one step under each cache (same
    seed) rolls out the same codes and completions and computes the same loss and states. (The compiled step itself is
    tested in tests/modeling/test_generation.py; here it is only asked for, and decoded uncompiled.)"""
    from trl_latent.training import latent_grpo_trainer

    decode = latent_grpo_trainer.latent_generate
    used = []

    def recording(*args, **kwargs):
        used.append((kwargs["cache_implementation"], kwargs["compile_step"]))
        return decode(*args, **{**kwargs, "compile_step": False})

    monkeypatch.setattr(latent_grpo_trainer, "latent_generate", recording)
    runs = [("dynamic", False), ("static", False), ("static", True)]
    seen = []
    for cache, compiled in runs:
        trainer = make_trainer(
            copy.deepcopy(steerable_model),  # codes that matter, so completions (and rewards) differ in a group
            processor,
            dataset,
            tmp_path / f"{cache}-{compiled}",
            latent_cache_implementation=cache,
            compile_latent_step=compiled,
            max_steps=1,
        )
        compute_loss = trainer._compute_loss
        records = []

        def recording_loss(model_, inputs, compute_loss=compute_loss, records=records):
            loss = compute_loss(model_, inputs)
            records.append(
                {"loss": loss.detach(), **{k: inputs[k] for k in ("codes", "completion_ids", "rollout_states")}}
            )
            return loss

        def recording_policy_loss(
            inputs, per_token_logps, entropies, policy_loss=trainer._compute_policy_loss, records=records, **kw
        ):
            records.append({"logps": per_token_logps.detach(), "advantages": inputs["advantages"]})
            return policy_loss(inputs, per_token_logps, entropies, **kw)

        trainer._compute_loss, trainer._compute_policy_loss = recording_loss, recording_policy_loss
        trainer.train()
        seen.append({k: v for record in records for k, v in record.items()})
    assert used == runs
    dynamic = seen[0]
    assert dynamic["advantages"].abs().sum() > 0  # rewards differ within groups: the loss has something to compare
    for static in seen[1:]:
        assert torch.equal(dynamic["codes"], static["codes"])
        assert torch.equal(dynamic["completion_ids"], static["completion_ids"])
        torch.testing.assert_close(dynamic["rollout_states"], static["rollout_states"], rtol=0, atol=1e-5)
        torch.testing.assert_close(dynamic["advantages"], static["advantages"], rtol=0, atol=1e-6)
        torch.testing.assert_close(dynamic["logps"], static["logps"], rtol=0, atol=1e-5)
        torch.testing.assert_close(dynamic["loss"], static["loss"], rtol=1e-4, atol=1e-6)


def test_off_policy_iterations_use_rollout_logprobs_as_old(steerable_model, processor, dataset, tmp_path):
    """num_iterations=2: TRL asks for the old policy's log-probabilities while scoring; they are the rollout's. (The
    steerable model: its codes change the completions, so rewards differ in a group and the update moves the policy.)"""
    seen = []
    model = copy.deepcopy(steerable_model)
    trainer = make_trainer(model, processor, dataset, tmp_path, num_iterations=2, max_steps=2)
    compute_policy_loss = trainer._compute_policy_loss

    def capturing_policy_loss(inputs, per_token_logps, entropies, **kwargs):
        seen.append((inputs, per_token_logps.detach()))
        return compute_policy_loss(inputs, per_token_logps, entropies, **kwargs)

    trainer._compute_policy_loss = capturing_policy_loss
    trainer.train()
    (first, logps_1), (second, logps_2) = seen
    assert first is second  # the second iteration reuses the batch, after an update
    mask = first["completion_mask"].bool()
    old = first["old_per_token_logps"][mask]
    torch.testing.assert_close(old, first["sampling_per_token_logps"][mask], rtol=0, atol=0)
    torch.testing.assert_close(logps_1[mask], old, rtol=0, atol=1e-5)  # iteration 1: ratio 1
    assert (logps_2[mask] - old).abs().max() > 1e-3  # iteration 2: the policy moved, the ratio is not 1


def test_text_only_base_and_evaluation(tiny_cache, tmp_path):
    """A text-only Qwen2 base (2-D positions, a tokenizer as processing class), and `evaluate()`."""
    from datasets import Dataset

    from tests.fixtures.models import tiny_lm, tiny_lm_path

    model = LatentActionModel.from_base(
        tiny_lm_path("tiny", cache_dir=tiny_cache), codebook_size=16, inverse_layers=1, policy_layers=1
    )
    with torch.no_grad():  # codes that matter to the untrained world model (see `steerable_model`)
        model.codebook.proj.weight.mul_(100.0)
    _, tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)
    prompts = [[{"role": "user", "content": "Which colour is the circle?"}], [{"role": "user", "content": "Ahoy!"}]]
    before = snapshot(model)
    rewards = []  # (training?, the rewards of one call)

    def recorded_hash_reward(completion_ids, **kwargs):
        values = token_hash_reward(completion_ids)
        rewards.append((model.training, values))
        return values

    trainer = LatentGRPOTrainer(
        model,
        reward_funcs=recorded_hash_reward,
        args=make_config(tmp_path, per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=2),
        train_dataset=Dataset.from_dict({"prompt": prompts * 4}),
        eval_dataset=Dataset.from_dict({"prompt": prompts[:1]}),
        processing_class=tokenizer,
    )
    trainer.train()
    assert_only_policy_changed(before, model)
    trained = snapshot(model)
    rewards.clear()
    rollouts = record_rollout_codes(trainer)
    metrics = trainer.evaluate()
    # Evaluation trains nothing.
    assert all(torch.equal(trained[n], p) for n, p in model.named_parameters())
    # It rolls out the eval prompt's group (4 completions) once, in eval mode, and reports what it computed: the mean of
    # the rewards the reward function returned, the codes of those rollouts, and the policy's KL to its reference
    # (trained for 2 steps: positive).
    ((training, values),) = rewards
    (codes, mask), *_ = rollouts
    assert not training and len(values) == 4 and len(set(values)) > 1
    assert metrics["eval_reward"] == pytest.approx(sum(values) / 4, abs=1e-6)
    used, perplexity = count_codes(codes, mask)
    assert metrics["eval_latent/codes_used"] == used and metrics["eval_latent/code_perplexity"] == pytest.approx(
        perplexity, rel=1e-9
    )
    assert metrics["eval_latent/kl"] > 0.0 and 0.0 < metrics["eval_latent/code_entropy"] <= math.log(16) + 1e-6


# --------------------------------------------------------------------------------------------------------- PEFT
def test_lora_on_the_policy(model, processor, dataset, tmp_path):
    from peft import LoraConfig

    before = snapshot(model)
    trainer = make_trainer(
        model,
        processor,
        dataset,
        tmp_path,
        max_steps=3,
        trainer_kwargs={"peft_config": LoraConfig(r=4, lora_alpha=8, target_modules=POLICY_LORA_TARGET_MODULES)},
    )
    trainer.train()
    peft_model = trainer.model
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert lora and all(".policy.layers." in n for n in lora)
    lora_b = [p for n, p in lora.items() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # initialised at zero, trained
    # Every original parameter (base, world model and the policy's own weights) is bit-identical.
    after = {
        n.removeprefix("base_model.model.").replace(".base_layer.", "."): p
        for n, p in peft_model.named_parameters()
        if "lora_" not in n
    }
    assert after.keys() == before.keys()
    assert [n for n in before if not torch.equal(before[n], after[n])] == []
    kl = logged(trainer, "latent/kl")  # reference = the policy with the adapter disabled
    assert kl[0] == 0.0 and kl[-1] > 0.0, kl


def test_a_lora_run_reloads_from_its_own_output(model, processor, dataset, tmp_path):
    """A LoRA run started from a saved latent model records that folder: in adapter_config.json and in the card's
    quick start; `LatentActionModel.from_pretrained(output)` loads it with the adapter merged into the policy, and
    the commands take the output folder as a latent model (its processor from the folder)."""
    from peft import LoraConfig

    from trl_latent.commands.models import check_model, is_latent_model, processor_source
    from trl_latent.commands.running import CommandError

    start = tmp_path / "start"
    model.save_pretrained(start)
    processor.save_pretrained(start)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=POLICY_LORA_TARGET_MODULES)
    args = make_config(tmp_path, max_steps=2)
    trainer = LatentGRPOTrainer(
        str(start), reward_funcs=text_length_reward, args=args, train_dataset=dataset, peft_config=lora
    )
    trainer.train()
    out = Path(args.output_dir)
    trainer.save_model(str(out))
    trainer.create_model_card()  # as every checkpoint save does
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(start)
    assert not (out / "config.json").exists()
    card = (out / "README.md").read_text()
    assert f'start = "{start}"' in card, card

    reloaded = LatentActionModel.from_pretrained(out)
    merged = copy.deepcopy(trainer.model).merge_and_unload()
    assert isinstance(reloaded, LatentActionModel) and reloaded.name_or_path == str(out)
    for name, value in merged.policy.state_dict().items():
        torch.testing.assert_close(reloaded.policy.state_dict()[name], value, rtol=0, atol=0)
    assert not torch.equal(
        reloaded.policy.layers[0].self_attn.q_proj.weight, model.policy.layers[0].self_attn.q_proj.weight
    )

    check_model(str(out), "models")
    assert is_latent_model(str(out)) and processor_source(str(out)) == str(out)  # the trainer saved it there

    # An adapter that names no model (a run started from a model built in memory) says what to do.
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    config = json.loads((out / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    with pytest.raises(ValueError, match="names no latent model to load it onto"):
        LatentActionModel.from_pretrained(orphan)
    with pytest.raises(CommandError, match="names no model to load it onto"):
        check_model(str(orphan), "models")


def test_lora_beyond_the_policy_is_rejected(model, processor, dataset, tmp_path):
    from peft import LoraConfig

    with pytest.raises(ValueError, match=r"trains the policy only.*POLICY_LORA_TARGET_MODULES"):
        make_trainer(
            model,
            processor,
            dataset,
            tmp_path,
            # A regex is used as given: this one also reaches the base's and the world model's q_proj. (Module names,
            # as TRL's `--lora_target_modules q_proj` gives, are put on the policy: tests/training/test_latent_grpo_trainer.py.)
            trainer_kwargs={"peft_config": LoraConfig(r=4, target_modules=r".*\.q_proj")},
        )


# ------------------------------------------------------------------------------------------------------ example
def _code_without_docstring(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    start = tree.body[1].lineno if ast.get_docstring(tree) else 1
    return source.splitlines()[start - 1 :]


def test_example_is_the_trl_script_with_names_swapped():
    token = _code_without_docstring(ROOT / "examples" / "grpo_tiny_vlm_token.py")
    latent = _code_without_docstring(ROOT / "examples" / "grpo_tiny_vlm.py")
    renamed = [
        line.replace("LatentGRPOConfig", "GRPOConfig").replace("LatentGRPOTrainer", "GRPOTrainer") for line in latent
    ]
    changed = [
        line[2:] for line in difflib.ndiff(token, renamed) if line.startswith(("- ", "+ ")) and line[2:].strip()
    ]
    other = [line for line in changed if not line.startswith(("from ", "import ")) and "model = " not in line]
    assert other == [], f"the latent example differs from the TRL script beyond imports and the model: {other}"
    assert sum("model = " in line for line in changed) == 2  # the model line, before and after


def test_example_script_runs(tmp_path, tiny_cache):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "grpo_tiny_vlm.py"),
        *("--output_dir", str(out), "--cache_dir", str(tiny_cache), "--max_steps", "2", "--num_prompts", "8"),
        *("--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "6"),
        *("--use_cpu", "--bf16", "false", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("policy.") for k in saved)
    assert not any(k.startswith("base.") for k in saved)  # the frozen base is not duplicated


def test_generation_config_comes_from_the_base(model, processor, dataset, tmp_path, base_path):
    trainer = make_trainer(model, processor, dataset, tmp_path)
    # The base's own generation config (its saved file): TRL reads the pad and end-of-sequence ids from it.
    expected = GenerationConfig.from_pretrained(base_path)
    assert expected.eos_token_id is not None and expected.pad_token_id is not None
    config = trainer.model.generation_config
    assert config.to_diff_dict() == expected.to_diff_dict()
    assert (config.eos_token_id, config.pad_token_id) == (
        processor.tokenizer.eos_token_id,
        processor.tokenizer.pad_token_id,
    )
    assert trainer.eos_token_ids == [processor.tokenizer.eos_token_id]


def test_doc_snippets_run(tmp_path, monkeypatch, tiny_cache):
    import re

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "latent_grpo.md").read_text(), flags=re.S)
    assert len(snippets) == 2
    namespace: dict = {}
    for code in snippets:
        exec(compile(code, "docs/latent_grpo.md", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 2
    assert namespace["peft_config"].target_modules == POLICY_LORA_TARGET_MODULES


def test_a_token_temperature_that_greedy_decoding_ignores_is_named():
    """TRL's `temperature` samples tokens; under the paper's greedy tokens it does nothing, so the config says so."""
    import warnings

    with pytest.warns(
        UserWarning, match=r"temperature=0.7 has no effect with token_strategy='greedy'.*code_temperature"
    ):
        LatentGRPOConfig("out", use_cpu=True, bf16=False, temperature=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        LatentGRPOConfig("out", use_cpu=True, bf16=False, temperature=0.7, token_strategy="sample")
        LatentGRPOConfig("out", use_cpu=True, bf16=False)


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case(
        "grpo/empty_dataset",
        lambda c: train_on_empty(c, "grpo"),
        ValueError,
        ("train_dataset is empty",),
    ),
]


test_bad_input = bad_input_test(BAD_INPUT, model=True)


# -------------------------------------------------------------------------------- PEFT through TRL's script path
def distinct_characters(completions, **kwargs):
    return [float(len(set(c[0]["content"]))) for c in completions]


def script_arguments(tmp_path, *extra):
    """What a TRL script's `TrlParser((..., GRPOConfig, ModelConfig))` returns, with the latent config swapped in."""
    parser = TrlParser((LatentGRPOConfig, ModelConfig))
    return parser.parse_args_and_config(
        args=[
            *("--output_dir", str(tmp_path), "--per_device_train_batch_size", "4", "--num_generations", "4"),
            *("--max_completion_length", "6", "--max_steps", "3", "--learning_rate", "5e-2", "--use_cpu"),
            *("--bf16", "false", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"),
            *("--disable_tqdm", "true", "--seed", "0", *extra),
        ]
    )


class TestTRLScriptPEFT:
    """PEFT through TRL's script path: `--use_peft --lora_target_modules q_proj v_proj` with `LatentGRPOTrainer`.

    TRL's example scripts (its VLM GRPO script, say) parse a `ModelConfig` and pass `get_peft_config(model_args)`, a
    `LoraConfig(task_type="CAUSAL_LM", target_modules={"q_proj", "v_proj"}, ...)`. The latent trainer puts that adapter on
    the policy (the only module RL trains) and it learns there; the base and the world model stay bit-identical. Names no
    policy module has fail with the project's message naming `POLICY_LORA_TARGET_MODULES`.

    The steerable model's fixtures (a class of their own: the module's `model` is the unscaled one)."""

    @pytest.fixture(scope="class")
    def initial_model(self, steerable_latent_model):
        return steerable_latent_model()

    @pytest.fixture
    def model(self, initial_model):
        return copy.deepcopy(initial_model)

    def test_trl_lora_arguments_train_an_adapter_on_the_policy(self, model, processor, tmp_path):
        training_args, model_args = script_arguments(
            tmp_path, "--use_peft", "--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4"
        )
        peft_config = get_peft_config(model_args)
        assert peft_config.task_type == "CAUSAL_LM" and peft_config.target_modules == {"q_proj", "v_proj"}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}

        trainer = LatentGRPOTrainer(
            model,
            reward_funcs=distinct_characters,
            args=training_args,
            train_dataset=synthetic_rl_dataset(16, seed=0),
            processing_class=processor,
            peft_config=peft_config,
        )
        lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
        trainer.train()

        lora = {n: p.detach() for n, p in trainer.model.named_parameters() if "lora_" in n}
        adapted = sorted({n.split(".lora_")[0].removeprefix("base_model.model.") for n in lora})
        assert adapted == ["policy.layers.0.self_attn.q_proj", "policy.layers.0.self_attn.v_proj"]
        assert all(not torch.equal(lora_before[n], lora[n]) for n in lora)  # every adapter weight learned
        after = {
            n.removeprefix("base_model.model.").replace(".base_layer.", "."): p.detach()
            for n, p in trainer.model.named_parameters()
            if "lora_" not in n
        }
        assert after.keys() == before.keys()
        assert [n for n in before if not torch.equal(before[n], after[n])] == []  # base, world model, policy weights
        assert trainer.model.peft_config["default"].task_type is None  # the plain PeftModel wraps the latent model
        assert peft_config.task_type == "CAUSAL_LM"  # the caller's config is not modified
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert len(losses) == 3

    def test_module_names_outside_the_policy_fail_naming_the_policy_targets(self, model, processor, tmp_path):
        training_args, model_args = script_arguments(
            tmp_path, "--use_peft", "--lora_target_modules", "q_proj", "c_attn"
        )
        with pytest.raises(
            ValueError, match=r"\['c_attn'\] match no module of the policy.*POLICY_LORA_TARGET_MODULES"
        ):
            LatentGRPOTrainer(
                model,
                reward_funcs=distinct_characters,
                args=training_args,
                train_dataset=synthetic_rl_dataset(8),
                processing_class=processor,
                peft_config=get_peft_config(model_args),
            )

    @pytest.mark.parametrize("targets", [None, "all-linear"])
    def test_no_targets_or_all_linear_mean_the_policy_projections(self, model, targets):
        config = get_peft_config(ModelConfig(use_peft=True, lora_target_modules=targets))
        assert policy_peft_config(config, model).target_modules == POLICY_LORA_TARGET_MODULES

    def test_scoped_names_follow_pefts_matching_rule(self, model):
        from peft.tuners.tuners_utils import check_target_module_exists

        config = policy_peft_config(
            get_peft_config(ModelConfig(use_peft=True, lora_target_modules=["self_attn.o_proj", "down_proj"])), model
        )
        matched = sorted(n for n, _ in model.named_modules() if check_target_module_exists(config, n))
        assert matched == ["policy.layers.0.mlp.down_proj", "policy.layers.0.self_attn.o_proj"]
