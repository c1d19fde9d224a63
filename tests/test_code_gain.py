"""Code gain in the health table: teacher-forced accuracy with the IDM's and the policy's code minus that with a seeded
uniformly random code. Hand-checked on a planted model where the code decides the token, exactly 0 where codes cannot
act; the sampled positions of a real-vocabulary health check; the trainer logs it."""

import random

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from trl_latent.metrics.latent_health import HEALTH_METRICS, latent_health
from trl_latent.modeling import LatentActionModel
from trl_latent.modeling.tiny import tiny_lm, tiny_lm_path

CODES = 16
CORPUS = ["the red star is on the left.", "a blue circle on the right.", "two small squares."]


@pytest.fixture(scope="module")
def tokenizer_and_path(tiny_cache):
    path = tiny_lm_path("tiny", cache_dir=tiny_cache, corpus=CORPUS)
    return tiny_lm("tiny", cache_dir=tiny_cache, corpus=CORPUS)[1], path


def build(path):
    torch.manual_seed(0)
    return LatentActionModel.from_base(path, codebook_size=CODES, inverse_layers=1, policy_layers=1)


def answer_batch(target: int, other: int):
    """Two records of 10 tokens whose last 5 are the answer, every answer token `target`: 2 x 5 = 10 positions (the
    steps t = 4..8 predict tokens 5..9)."""
    ids = torch.tensor([[other] * 5 + [target] * 5, [other + 1] * 5 + [target] * 5])
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, 5:] = True
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_mask": loss_mask}


def test_planted_codes_decide_the_token(tokenizer_and_path):
    """The world model says `target` under codes 0-3 and `other` under codes 4-15; the IDM always picks code 0 (right
    everywhere), the policy code 4 (wrong everywhere). The random code is right where its seeded draw is below 4."""
    _, path = tokenizer_and_path
    model = build(path)
    target, other = 7, 11
    vocab = model.backbone.lm_head.weight.shape[0]

    def world_logits(e, codes):
        codes = codes if codes.dim() == e.dim() - 1 else codes.argmax(-1)
        return F.one_hot(torch.where(codes < 4, target, other), vocab).float()

    def fixed(code):
        return lambda e, base, cache=None: F.one_hot(torch.full(e.shape[:2], code), CODES).float()

    model.world_logits, model.inverse_logits, model.policy_logits = world_logits, fixed(0), fixed(4)
    health = latent_health(model, [answer_batch(target, other)], seed=3)
    # The hand count: the 10 random codes are the seeded draw the docstring names.
    drawn = torch.randint(CODES, (10,), generator=torch.Generator().manual_seed(3))
    right_by_chance = int((drawn < 4).sum())
    assert drawn.tolist() == [10, 8, 9, 3, 8, 8, 0, 5, 13, 3] and right_by_chance == 3
    assert health["health/world_accuracy_inverse"] == 1.0 and health["health/world_accuracy_policy"] == 0.0
    assert health["health/world_accuracy_random"] == 0.3
    assert health["health/code_gain_inverse"] == pytest.approx(0.7, abs=1e-12)
    assert health["health/code_gain_policy"] == pytest.approx(-0.3, abs=1e-12)
    assert health["health/world_accuracy_best"] == 1.0 and health["health/controllability"] == 2.0
    assert set(health) == set(HEALTH_METRICS)


def test_codes_that_cannot_act_gain_exactly_nothing(tokenizer_and_path):
    """A zero codebook: every code feeds the merge the same zero vector, so every code gives the same token."""
    tokenizer, path = tokenizer_and_path
    model = build(path)
    with torch.no_grad():
        model.codebook.proj.weight.zero_()
        model.world_merge.apply(lambda m: m.weight.normal_(0, 1.0) if isinstance(m, torch.nn.Linear) else None)
    ids = tokenizer(["the red star is on the left.", "two small squares."], padding=True, return_tensors="pt")
    batch = dict(ids, loss_mask=ids["attention_mask"].bool())
    health = latent_health(model, [batch])
    assert health["health/code_gain_inverse"] == 0.0 and health["health/code_gain_policy"] == 0.0
    assert health["health/world_accuracy_random"] == health["health/world_accuracy_inverse"]
    assert health["health/controllability"] == 1.0
    # With the codebook back, the same model's codes act and the gain is no longer exactly 0.
    with torch.no_grad():
        model.codebook.proj.weight.normal_(0, 100.0)
    acting = latent_health(model, [batch])
    assert acting["health/controllability"] > 1.0


def test_sampled_positions_keep_a_seeded_subset(tokenizer_and_path):
    """`positions` / `sweep_positions` measure a seeded sample: the same metrics as measuring only those positions."""
    tokenizer, path = tokenizer_and_path
    model = build(path)
    with torch.no_grad():
        model.codebook.proj.weight.mul_(100.0)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(CORPUS).split()[: rng.randint(3, 6)]) for _ in range(8)]
    ids = tokenizer(texts, padding=True, return_tensors="pt")
    batch = dict(ids, loss_mask=ids["attention_mask"].bool())
    full = latent_health(model, [batch])
    sampled = latent_health(model, [batch], positions=10, sweep_positions=6, seed=1)
    assert sampled["health/positions"] == 10.0 and sampled["health/sweep_positions"] == 6.0
    assert "health/positions" not in full and "health/sweep_positions" not in full
    # Caps at or above the number of positions measure everything, exactly as without caps.
    n = int(batch["loss_mask"][:, 1:].sum())
    assert latent_health(model, [batch], positions=n, sweep_positions=n) == full
    with pytest.raises(ValueError, match="positions must be at least 1"):
        latent_health(model, [batch], positions=0)


def test_the_trainer_logs_code_gain(tokenizer_and_path, tmp_path):
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    tokenizer, path = tokenizer_and_path
    model = build(path)
    args = LatentSFTConfig(str(tmp_path), stage="inverse_warmup", max_steps=1, per_device_train_batch_size=4,
                           health_samples=4, use_cpu=True, bf16=False, report_to="none", save_strategy="no")  # fmt: skip
    trainer = LatentSFTTrainer(
        model, args, train_dataset=Dataset.from_dict({"text": CORPUS}), processing_class=tokenizer
    )
    trainer.train()
    logged = trainer.state.log_history[-1]
    for key in ("health/code_gain_inverse", "health/code_gain_policy", "health/world_accuracy_random"):
        assert key in logged and key in trainer.health
    gain = trainer.health["health/world_accuracy_inverse"] - trainer.health["health/world_accuracy_random"]
    assert trainer.health["health/code_gain_inverse"] == pytest.approx(gain)


def test_zero_initialised_merges_start_from_the_base_and_then_learn(tokenizer_and_path, tmp_path):
    """`world_merge_init="zeros"` with the `residual` form: the world model predicts exactly the base's logits under
    every code (code gain exactly 0, world accuracy the base's), and a step of stage 1 makes the codes act while the
    frozen base stays bit-identical. The default init does not start from the base."""
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    tokenizer, path = tokenizer_and_path
    ids = tokenizer(CORPUS, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    model = LatentActionModel.from_base(
        path, codebook_size=CODES, inverse_layers=1, policy_layers=1, world_merge_init="zeros", world_output="residual"
    )
    with torch.no_grad():
        out = model.base(**ids, output_hidden_states=True)
        e = out.hidden_states[-1]  # after the final norm, as the latent model's base states are
        base_logits = out.logits.float()
        for code in (0, CODES - 1):
            codes = torch.full(ids["input_ids"].shape, code)
            torch.testing.assert_close(model.world_logits(e, codes), base_logits, rtol=0, atol=0)
    loss_mask = ids["attention_mask"].bool()
    batch = {**ids, "loss_mask": loss_mask}
    health = latent_health(model, [batch])
    assert health["health/code_gain_inverse"] == 0.0
    assert health["health/world_accuracy_inverse"] == health["health/base_accuracy"]

    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    args = LatentSFTConfig(str(tmp_path), stage="inverse_warmup", max_steps=2, per_device_train_batch_size=3,
                           learning_rate=1e-2, world_output_schedule="residual", health_samples=3, use_cpu=True,
                           bf16=False, report_to="none", save_strategy="no")  # fmt: skip
    LatentSFTTrainer(
        model, args, train_dataset=Dataset.from_dict({"text": CORPUS}), processing_class=tokenizer
    ).train()
    assert all(block.down_proj.weight.abs().sum() > 0 for block in model.world_merge.blocks)
    with torch.no_grad():
        spread = [model.world_logits(e, torch.full(ids["input_ids"].shape, c)) for c in range(CODES)]
    assert (torch.stack(spread) - spread[0]).abs().max() > 0  # the codes now change what the world model says
    for name, value in model.base.state_dict().items():
        assert torch.equal(value, base_before[name]), name

    torch.manual_seed(0)
    default = LatentActionModel.from_base(path, codebook_size=CODES, inverse_layers=1, policy_layers=1,
                                          world_output="residual")  # fmt: skip
    with torch.no_grad():
        assert not torch.equal(default.world_logits(e, torch.zeros_like(ids["input_ids"])), base_logits)
    with pytest.raises(ValueError, match="world_merge_init must be one of"):
        LatentActionModel.config_class(world_merge_init="ones")
