"""The loss classes against TRL 1.16's own `GRPOTrainer._compute_loss` and advantage computation, the paper options,
the ```python snippets of docs/losses.md, and when DAPO and BNPO give different updates in both trainers."""

from __future__ import annotations

import ast
import copy
import doctest
import re
import zlib
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from trl.rewards import get_soft_overlong_punishment

from tests.fixtures.models import tiny_lm, tiny_vlm, tiny_vlm_path
from tests.fixtures.paths import ROOT
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset
from trl_latent.modeling import LatentActionModel
from trl_latent.training import losses
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer
from trl_latent.training.losses import (
    LOSS_CLASSES,
    BNPOLoss,
    DAPOLoss,
    DrGRPOLoss,
    GRPOLoss,
    PolicyLoss,
    get_loss,
    loss_from_config,
)
from trl_latent.training.token_grpo_config import TokenGRPOConfig
from trl_latent.training.token_grpo_trainer import TokenGRPOTrainer

LOSS_NAMES = ["grpo", "dr_grpo", "dapo", "bnpo"]
B, S = 6, 7  # micro-batch of 6 completions of at most 7 steps


# ------------------------------------------------------------------------------------------------------ fixtures
class _RewardBox:
    """A reward function returning preset rewards (None for NaN), so TRL's advantage code sees chosen values."""

    __name__ = "preset_reward"

    def __init__(self):
        self.values = []

    def __call__(self, completions, **kwargs):
        assert len(self.values) == len(completions)
        return [None if v != v else v for v in self.values]


def _config(tmp_path, **kwargs):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=S,
        max_steps=1,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
    )
    base.update(kwargs)
    return GRPOConfig(**base)


@pytest.fixture(scope="module")
def trainers(tiny_cache, tmp_path_factory):
    """A stock TRL `GRPOTrainer` and a `TokenGRPOTrainer` on the tiny LM (built once; tests patch attributes)."""
    out = tmp_path_factory.mktemp("loss_parity")
    model, tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)
    token_model, _ = tiny_lm("tiny", cache_dir=tiny_cache)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": "Which colour is the circle?"}]] * 8})
    box = _RewardBox()
    common = dict(reward_funcs=box, train_dataset=dataset, processing_class=tokenizer)
    # Every new TrainingArguments resets accelerate's shared state, which breaks existing trainers' accelerators, so
    # all configs are made here, first, and tests take shallow copies (`_args`).
    base_args = _config(out / "base")
    trl_trainer = GRPOTrainer(model=model, args=_config(out / "trl"), **common)
    token_trainer = TokenGRPOTrainer(model=token_model, args=_config(out / "token"), **common)
    return SimpleNamespace(trl=trl_trainer, token=token_trainer, box=box, base_args=base_args)


def _args(trainers, **overrides):
    """A GRPOConfig with `overrides`, as a shallow copy of the fixture's (see `trainers`)."""
    args = copy.copy(trainers.base_args)
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def _random_batch(seed, dtype=torch.float32, per_step_advantages=False):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([S, 3, 0, 5, 1, 6])  # ragged, with an empty completion
    mask = (torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)).long()
    logps = -3 * torch.rand(B, S, generator=g, dtype=dtype)
    # Old log-probs off by up to +-0.5 nats so that many ratios leave [1 - 0.2, 1 + 0.28]: clipping is active.
    old = logps + (torch.rand(B, S, generator=g, dtype=dtype) - 0.5)
    ref = logps + 0.3 * torch.randn(B, S, generator=g, dtype=dtype)
    shape = (B, S) if per_step_advantages else (B,)
    advantages = torch.randn(*shape, generator=g, dtype=dtype)
    entropies = 5 * torch.rand(B, S, generator=g, dtype=dtype)
    return SimpleNamespace(mask=mask, logps=logps, old=old, ref=ref, advantages=advantages, entropies=entropies)


def _inputs(batch, num_items_in_batch):
    return {
        "prompt_ids": torch.ones(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.ones(B, S, dtype=torch.long),
        "completion_mask": batch.mask,
        "advantages": batch.advantages,
        "old_per_token_logps": batch.old,
        "ref_per_token_logps": batch.ref,
        "num_items_in_batch": torch.tensor(num_items_in_batch),
    }


def _configure_trl(monkeypatch, trainer, args, *, grad_accum, steps_per_generation, num_processes, training):
    """Put `args` on an existing GRPOTrainer the way `GRPOTrainer.__init__` reads them."""
    monkeypatch.setattr(trainer, "loss_type", args.loss_type)
    monkeypatch.setattr(trainer, "beta", args.beta)
    monkeypatch.setattr(trainer, "epsilon_low", args.epsilon)
    monkeypatch.setattr(trainer, "epsilon_high", args.epsilon_high if args.epsilon_high is not None else args.epsilon)
    monkeypatch.setattr(trainer, "importance_sampling_level", args.importance_sampling_level)
    monkeypatch.setattr(trainer, "max_completion_length", args.max_completion_length)
    monkeypatch.setattr(trainer, "current_gradient_accumulation_steps", grad_accum, raising=False)
    for field in ("delta", "use_bias_correction_kl"):
        monkeypatch.setattr(trainer.args, field, getattr(args, field))
    monkeypatch.setattr(trainer.args, "steps_per_generation", steps_per_generation)
    if num_processes > 1:
        # Several processes change DAPO's normaliser; the metric reductions see only this process's values.
        stub = SimpleNamespace(
            num_processes=num_processes, reduce=lambda t, reduction: t, gather=lambda t: t, gather_for_metrics=None
        )
        monkeypatch.setattr(trainer, "accelerator", stub)
    trainer.model.train(training)
    monkeypatch.setattr(trainer, "_metrics", {"train": defaultdict(list), "eval": defaultdict(list)})


def _patch_logps(monkeypatch, trainer, batch):
    """Make the trainer's log-prob computation return fresh leaves holding the batch's log-probs."""
    leaf = batch.logps.clone().requires_grad_(True)
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", lambda *a, **k: (leaf, batch.entropies, None))
    return leaf


def _trl_reference(monkeypatch, trainer, batch, inputs, mode):
    leaf = _patch_logps(monkeypatch, trainer, batch)
    loss = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics[mode].items()}
    return loss.detach(), leaf.grad, metrics


def _assert_exact(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


# (gradient_accumulation_steps, steps_per_generation, num_processes, training)
SCHEDULES = [(1, 1, 1, True), (4, 4, 1, True), (2, 4, 1, True), (2, 4, 2, True), (3, 3, 2, False)]


# ----------------------------------------------------------------------------------------------- loss parity
@pytest.mark.parametrize("loss_type", LOSS_NAMES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize(
    "schedule", SCHEDULES, ids=lambda s: "ga{}-spg{}-np{}-{}".format(*s[:3], "train" if s[3] else "eval")
)
def test_loss_matches_trl(trainers, monkeypatch, loss_type, beta, schedule):
    grad_accum, spg, num_processes, training = schedule
    args = _args(trainers, loss_type=loss_type, beta=beta)
    batch = _random_batch(seed=zlib.crc32(repr((loss_type, beta, schedule)).encode()))
    inputs = _inputs(batch, num_items_in_batch=int(batch.mask.sum()) * 3 + 5)  # generation batch > micro-batch
    _configure_trl(
        monkeypatch,
        trainers.trl,
        args,
        grad_accum=grad_accum,
        steps_per_generation=spg,
        num_processes=num_processes,
        training=training,
    )
    mode = "train" if training else "eval"
    ref_loss, ref_grad, ref_metrics = _trl_reference(monkeypatch, trainers.trl, batch, inputs, mode)
    assert ref_grad.abs().sum() > 0 and (ref_metrics["clip_ratio/region_mean"] > 0)  # clipping is active

    loss_fn = loss_from_config(args)
    assert type(loss_fn) is LOSS_CLASSES[loss_type]
    leaf = batch.logps.clone().requires_grad_(True)
    loss, metrics = loss_fn(
        leaf,
        batch.old,
        batch.ref,
        batch.advantages,
        batch.mask,
        entropies=batch.entropies,
        num_items_in_batch=inputs["num_items_in_batch"],
        gradient_accumulation_steps=grad_accum if training else 1,
        steps_per_generation=spg if training else 1,
        num_processes=num_processes,
        accelerator=trainers.trl.accelerator,
    )
    loss.backward()
    _assert_exact(loss.detach(), ref_loss)
    _assert_exact(leaf.grad, ref_grad)
    assert metrics == pytest.approx(ref_metrics, rel=0, abs=0, nan_ok=True)
    assert ("kl" in metrics) == (beta > 0)


@pytest.mark.parametrize("loss_type", LOSS_NAMES)
@pytest.mark.parametrize(
    "options",
    [
        dict(importance_sampling_level="sequence"),
        dict(epsilon_high=0.28, delta=1.3),
        dict(use_bias_correction_kl=False, epsilon=0.1),
        dict(scale_rewards="batch", per_step_advantages=True),
    ],
    ids=["sequence-is", "clip-higher-delta", "no-kl-correction", "per-step-advantages"],
)
def test_loss_matches_trl_options(trainers, monkeypatch, loss_type, options):
    options = dict(options)
    per_step = options.pop("per_step_advantages", False)
    args = _args(trainers, loss_type=loss_type, beta=0.02, **options)
    batch = _random_batch(seed=7, per_step_advantages=per_step)
    inputs = _inputs(batch, num_items_in_batch=40)
    _configure_trl(
        monkeypatch, trainers.trl, args, grad_accum=2, steps_per_generation=2, num_processes=1, training=True
    )
    ref_loss, ref_grad, ref_metrics = _trl_reference(monkeypatch, trainers.trl, batch, inputs, "train")

    leaf = batch.logps.clone().requires_grad_(True)
    loss, metrics = loss_from_config(args)(
        leaf,
        batch.old,
        batch.ref,
        batch.advantages,
        batch.mask,
        entropies=batch.entropies,
        num_items_in_batch=inputs["num_items_in_batch"],
        gradient_accumulation_steps=2,
        steps_per_generation=2,
    )
    loss.backward()
    _assert_exact(loss.detach(), ref_loss)
    _assert_exact(leaf.grad, ref_grad)
    assert metrics == pytest.approx(ref_metrics, rel=0, abs=0, nan_ok=True)


@pytest.mark.parametrize("loss_type", LOSS_NAMES)
@pytest.mark.parametrize(
    "extras",
    [{}, dict(top_entropy_quantile=0.5, off_policy_mask_threshold=0.05)],
    ids=["plain", "entropy-and-off-policy-masks"],
)
def test_token_trainer_compute_loss_matches_trl(trainers, monkeypatch, loss_type, extras):
    """The trainer glue (`TokenGRPOTrainer._compute_loss`) gives TRL's loss, gradients and logged metrics."""
    args = _args(trainers, loss_type=loss_type, beta=0.04)
    batch = _random_batch(seed=11)
    inputs = _inputs(batch, num_items_in_batch=50)
    for trainer in (trainers.trl, trainers.token):
        _configure_trl(
            monkeypatch, trainer, args, grad_accum=2, steps_per_generation=4, num_processes=1, training=True
        )
        for name, value in extras.items():
            monkeypatch.setattr(trainer, name, value)
    monkeypatch.setattr(trainers.token, "policy_loss", loss_from_config(args))
    ref_loss, ref_grad, ref_metrics = _trl_reference(monkeypatch, trainers.trl, batch, inputs, "train")

    leaf = _patch_logps(monkeypatch, trainers.token, batch)
    loss = trainers.token._compute_loss(trainers.token.model, inputs)
    loss.backward()
    _assert_exact(loss.detach(), ref_loss)
    _assert_exact(leaf.grad, ref_grad)
    metrics = {k: v[-1] for k, v in trainers.token._metrics["train"].items()}
    assert metrics == pytest.approx(ref_metrics, rel=0, abs=0, nan_ok=True)


# ------------------------------------------------------------------------------------------ advantage parity
def _score(trainer, box, rewards, num_generations=4, completion_lengths=None):
    """Run the trainer's real `_generate_and_score_completions` on fixed completions with preset rewards."""
    n = len(rewards)
    lengths = completion_lengths or [S] * n
    completion_ids = [[7] * length for length in lengths]
    prompt_ids = [[5, 6]] * n
    completions = [[{"role": "assistant", "content": f"answer {i} " * (i % 3)}] for i in range(n)]

    def fake_generate(prompts):
        return prompt_ids, completion_ids, None, completions, None, {}, None, None

    box.values = list(rewards)
    trainer.model.train()
    inputs = [{"prompt": [{"role": "user", "content": f"prompt {i // num_generations}"}]} for i in range(n)]
    original = trainer._generate
    trainer._generate = fake_generate
    try:
        return trainer._generate_and_score_completions(inputs)
    finally:
        trainer._generate = original


NAN = float("nan")
REWARDS = [0.0, 1.0, 1.0, 0.5, 2.0, 2.0, 2.0, 2.0, 0.3, NAN, -1.0, 4.0, 0.2, 0.2, 0.9, 0.2]


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_match_trl(trainers, monkeypatch, scale_rewards):
    monkeypatch.setattr(trainers.trl, "scale_rewards", scale_rewards)
    expected = _score(trainers.trl, trainers.box, REWARDS)["advantages"]
    rewards = torch.tensor(REWARDS)
    for cls in (GRPOLoss, DrGRPOLoss, DAPOLoss, BNPOLoss):
        _assert_exact(cls(scale_rewards=scale_rewards).compute_advantages(rewards, 4), expected)
    # Zero-variance group (2, 2, 2, 2) -> 0; unscorable (NaN) completion -> 0.
    assert expected[4:8].eq(0).all() and expected[9] == 0

    # The token trainer's advantages come from its loss object and agree with TRL.
    monkeypatch.setattr(trainers.token, "policy_loss", GRPOLoss(scale_rewards=scale_rewards))
    _assert_exact(_score(trainers.token, trainers.box, REWARDS)["advantages"], expected)


def test_overlong_shaping_matches_trl_reward(trainers, monkeypatch):
    """Soft over-length shaping on the loss == adding TRL's `get_soft_overlong_punishment` reward function (for
    scorable completions: shaping keeps an unscorable one unscorable, where TRL's nansum would score it)."""
    rewards = [0.7 if r != r else r for r in REWARDS]
    lengths = [1, 3, 5, 7, 2, 4, 6, 7, 7, 7, 1, 2, 3, 4, 5, 6]
    punishment = get_soft_overlong_punishment(max_completion_len=S, soft_punish_cache=3)
    monkeypatch.setattr(trainers.trl, "reward_funcs", [trainers.box, punishment])
    monkeypatch.setattr(trainers.trl, "reward_func_names", ["preset_reward", "overlong"])
    monkeypatch.setattr(trainers.trl, "reward_processing_classes", [None, None])
    monkeypatch.setattr(trainers.trl, "reward_weights", torch.ones(2))
    monkeypatch.setattr(trainers.trl, "scale_rewards", "group")
    expected = _score(trainers.trl, trainers.box, rewards, completion_lengths=lengths)["advantages"]

    loss_fn = GRPOLoss(overlong_buffer_length=3, max_completion_length=S)
    monkeypatch.setattr(trainers.token, "policy_loss", loss_fn)
    actual = _score(trainers.token, trainers.box, rewards, completion_lengths=lengths)["advantages"]
    torch.testing.assert_close(actual, expected)
    assert not torch.allclose(actual, GRPOLoss().compute_advantages(torch.tensor(rewards), 4))


def test_overlong_penalty_only_beyond_max_minus_cache():
    loss_fn = DAPOLoss(overlong_buffer_length=4, max_completion_length=10)
    lengths = torch.arange(0, 13)
    penalty = loss_fn.overlong_penalty(lengths)
    assert penalty[:7].eq(0).all()  # |y| <= L_max - L_cache = 6: no penalty
    assert (penalty[7:] < 0).all() and torch.all(penalty[7:11].diff() < 0)  # then linear down to -1 at L_max
    torch.testing.assert_close(penalty[7:11], torch.tensor([-0.25, -0.5, -0.75, -1.0]))
    assert penalty[11:].eq(-1).all()
    trl_values = get_soft_overlong_punishment(10, 4)([[0] * n for n in lengths.tolist()])
    torch.testing.assert_close(penalty, torch.tensor(trl_values))
    # The penalty factor scales it; without lengths, shaping refuses to guess.
    assert (
        DAPOLoss(overlong_buffer_length=4, max_completion_length=10, overlong_penalty_factor=0.5)
        .overlong_penalty(torch.tensor([10]))
        .item()
        == -0.5
    )
    with pytest.raises(ValueError, match="completion_lengths"):
        loss_fn.compute_advantages(torch.zeros(4), 2)


# --------------------------------------------------------------------------------------------- paper options
def test_a_name_means_trls_loss_type_and_the_papers_settings_are_explicit(trainers):
    """`DrGRPOLoss()`, `get_loss(name)` and a config's `loss=name` are TRL's `loss_type` with GRPOConfig's defaults;
    `get_loss(name, paper=True)` applies the paper's own settings, and `**config` still wins over them."""
    from trl_latent.training.losses import PAPER_SETTINGS

    for name in ("grpo", "dr_grpo", "dapo", "bnpo"):
        # the fixture's config (GRPOConfig's defaults but the test's sizes; a new one would reset accelerate's state)
        trl = loss_from_config(_args(trainers, loss_type=name, beta=0.0, max_completion_length=None))
        assert repr(get_loss(name)) == repr(trl) == repr(type(trl)())
    assert get_loss("dr_grpo", paper=True).scale_rewards == "none" and DrGRPOLoss().scale_rewards == "group"
    assert get_loss("dapo", paper=True).epsilon_high == 0.28 and DAPOLoss().epsilon_high == 0.2
    assert get_loss(DAPOLoss, paper=True).epsilon_high == 0.28
    assert get_loss("dapo", paper=True, epsilon_high=0.3).epsilon_high == 0.3
    assert repr(get_loss("grpo", paper=True)) == repr(GRPOLoss()) and set(PAPER_SETTINGS) == {"dr_grpo", "dapo"}
    with pytest.raises(TypeError, match="configure the object through its constructor"):
        get_loss(DAPOLoss(), paper=True)


def test_dr_grpo_paper_setting_has_no_std_scaling():
    rewards = torch.tensor([0.0, 3.0, 1.0, 1.0, 10.0, 20.0, 30.0, 40.0])
    advantages = get_loss("dr_grpo", paper=True).compute_advantages(rewards, 4)
    _assert_exact(advantages, rewards - rewards.view(2, 4).mean(1).repeat_interleave(4))
    scaled = DrGRPOLoss().compute_advantages(rewards, 4)
    torch.testing.assert_close(scaled.view(2, 4).std(1), torch.ones(2), atol=1e-4, rtol=0)


def test_dapo_clip_higher_changes_clipping():
    assert DAPOLoss(epsilon_high=0.28).epsilon_high == 0.28 and DAPOLoss().epsilon_low == 0.2
    # Ratios 1.25 (inside 1 + 0.28, outside 1 + 0.2) with positive advantages.
    old = torch.zeros(2, 3)
    logps = torch.full((2, 3), 1.25).log()
    advantages, mask = torch.tensor([1.0, 1.0]), torch.ones(2, 3)
    grads, high = {}, {}
    for name, loss_fn in {"symmetric": DAPOLoss(), "clip-higher": DAPOLoss(epsilon_high=0.28)}.items():
        leaf = logps.clone().requires_grad_(True)
        loss, metrics = loss_fn(leaf, old, None, advantages, mask)
        loss.backward()
        grads[name], high[name] = leaf.grad, metrics["clip_ratio/high_mean"]
    assert grads["symmetric"].eq(0).all() and high["symmetric"] == 1.0  # clipped: no gradient
    assert (grads["clip-higher"] < 0).all() and high["clip-higher"] == 0.0  # not clipped: pushes the ratio up


@pytest.mark.parametrize("cls", [GRPOLoss, DrGRPOLoss, DAPOLoss, BNPOLoss])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_dropping_zero_variance_groups_removes_them_from_the_normaliser(cls, beta):
    """Dropping = the loss of the informative completions alone, with their own normaliser."""
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 2.0])  # groups of 2: (1, 1) and (2, 2) have no variance
    loss_fn = cls(beta=beta, max_completion_length=S, drop_zero_variance_groups=True, scale_rewards="none")
    informative = loss_fn.informative_mask(rewards, 2)
    assert informative.tolist() == [False, False, True, True, False, False]
    batch = _random_batch(seed=3)
    batch.advantages = loss_fn.compute_advantages(rewards, 2)
    keep = informative.nonzero().squeeze(1)

    def run(rows, **kwargs):
        leaf = batch.logps.clone().requires_grad_(True)
        loss, _ = loss_fn(
            leaf[rows], batch.old[rows], batch.ref[rows], batch.advantages[rows], batch.mask[rows], **kwargs
        )
        loss.backward()
        return loss.detach(), leaf.grad

    full = torch.arange(B)
    dropped_loss, dropped_grad = run(full, sequence_mask=informative)
    subset_loss, subset_grad = run(keep)
    torch.testing.assert_close(dropped_loss, subset_loss)
    torch.testing.assert_close(dropped_grad, subset_grad)
    kept_loss, _ = run(full)  # without dropping, the uninformative completions dilute the loss
    assert not torch.allclose(kept_loss, dropped_loss)
    if cls is DAPOLoss:  # the normaliser is the informative tokens' count
        manual_loss, _ = run(full, sequence_mask=informative, num_items_in_batch=batch.mask[keep].sum())
        torch.testing.assert_close(manual_loss, subset_loss)


def test_token_trainer_drops_zero_variance_groups(trainers, monkeypatch):
    monkeypatch.setattr(trainers.token, "policy_loss", DAPOLoss(drop_zero_variance_groups=True))
    lengths = [1, 3, 5, 7, 2, 4, 6, 7, 7, 7, 1, 2, 3, 4, 5, 6]
    out = _score(trainers.token, trainers.box, REWARDS, completion_lengths=lengths)
    # Group 2 (2, 2, 2, 2) has no variance; group 3 has a NaN but still varies.
    assert out["sequence_mask"].tolist() == [1.0] * 4 + [0.0] * 4 + [1.0] * 8
    assert out["num_items_in_batch"].item() == sum(lengths) - sum(lengths[4:8])


# ------------------------------------------------------------------------------------------- API and errors
def test_get_loss_and_loss_from_config(trainers):
    assert sorted(LOSS_CLASSES) == sorted(LOSS_NAMES)
    for name in LOSS_NAMES:
        assert get_loss(name).name == name
    loss_fn = DAPOLoss()
    assert get_loss(loss_fn) is loss_fn
    assert isinstance(get_loss(BNPOLoss, beta=0.1), BNPOLoss)
    # loss_from_config reproduces TRL: epsilon_high None means epsilon, scale_rewards as configured.
    from_config = loss_from_config(_args(trainers, loss_type="dapo", beta=0.01, scale_rewards="none"))
    assert (from_config.epsilon_high, from_config.beta, from_config.scale_rewards) == (0.2, 0.01, "none")
    assert from_config.max_completion_length == S
    assert isinstance(loss_from_config(_args(trainers), loss_type="grpo", beta=0.5), GRPOLoss)


def test_bad_input_gives_clear_errors(trainers):
    with pytest.raises(ValueError, match=r"Unknown loss 'ppo'.*\['bnpo', 'dapo', 'dr_grpo', 'grpo'\]"):
        get_loss("ppo")
    with pytest.raises(ValueError, match="TRL loss_type without a trl-latent class"):
        loss_from_config(_args(trainers, loss_type="cispo"))
    with pytest.raises(TypeError, match="constructor"):
        get_loss(DAPOLoss(), beta=0.1)
    with pytest.raises(ValueError, match="scale_rewards"):
        GRPOLoss(scale_rewards="prompt")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        GRPOLoss(importance_sampling_level="step")
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOLoss().compute_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="max_completion_length"):
        DrGRPOLoss()(torch.zeros(2, 3), None, None, torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        GRPOLoss(beta=0.1)(torch.zeros(2, 3), None, None, torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="same"):
        GRPOLoss()(torch.zeros(2, 3), None, None, torch.zeros(2), torch.ones(2, 4))


def test_loss_is_shape_agnostic_over_latent_steps():
    """The same object serves latent codes: any (B, S), e.g. per-step log-probs of a 128-way code distribution."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 128, generator=g, requires_grad=True)
    codes = torch.randint(0, 128, (4, 5), generator=g)
    code_logps = logits.log_softmax(-1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    loss_fn = DAPOLoss(beta=0.01)
    advantages = loss_fn.compute_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2)
    loss, metrics = loss_fn(code_logps, code_logps.detach(), code_logps.detach() + 0.1, advantages, torch.ones(4, 5))
    loss.backward()
    assert logits.grad.abs().sum() > 0 and metrics["kl"] > 0


# ---------------------------------------------------------------------------------------------------- docs
DOCS = ROOT / "docs" / "losses.md"


def test_docs_python_snippets_run(tiny_cache, tmp_path, monkeypatch, capsys):
    snippets = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(snippets) == 4
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    monkeypatch.chdir(tmp_path)
    namespaces, printed = [], []
    for snippet in snippets:
        namespace = {}
        capsys.readouterr()
        exec(compile(snippet, str(DOCS), "exec"), namespace)
        namespaces.append(namespace)
        printed.append([line for line in capsys.readouterr().out.splitlines() if line.strip()])

    # 1. Dr.GRPO's advantages are the rewards minus their group's mean, not divided by the std (counted by hand:
    # group means 0.75 and 2.0).
    advantages, loss_line = printed[0][0], printed[0][-1]
    values = [float(v) for v in re.findall(r"-?\d+\.\d*", advantages)]
    assert values == pytest.approx([0.25, -0.75, 0.25, 0.25, 1.0, -1.0, 0.0, 0.0], abs=1e-6), advantages
    # DAPO on-policy: every ratio is 1, nothing is clipped, and the loss is minus the advantage-weighted mean over the
    # informative groups' tokens (a token-level mean).
    ns = namespaces[0]
    kept = ns["mask"] * ns["sequence_mask"].float().unsqueeze(1)
    expected_loss = -(ns["advantages"].unsqueeze(1) * kept).sum() / kept.sum()
    loss, clipped = (float(v) for v in loss_line.split())
    assert kept.sum() > 0 and loss == pytest.approx(float(expected_loss), abs=1e-5) and clipped == 0.0, loss_line
    torch.testing.assert_close(ns["logps"].grad, -ns["advantages"].unsqueeze(1) * kept / kept.sum())

    # 3. The token trainer with Dr.GRPO: the first step's KL to the reference is exactly 0 (nothing updated yet), the
    # loss and the diversity metrics are logged, and two steps ran.
    first = ast.literal_eval(printed[2][-1])
    log = namespaces[2]["trainer"].state.log_history[0]
    assert first == {k: v for k, v in log.items() if k.startswith(("diversity", "kl", "loss"))}
    assert first["kl"] == 0.0 and {"loss", "diversity/distinct_1", "diversity/distinct_2"} <= set(first), first
    assert namespaces[2]["trainer"].state.global_step == 2
    assert printed[1] == [] and printed[3] == []  # the other two check themselves with asserts


def test_module_docstring_example():
    result = doctest.testmod(losses, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_policy_loss_base_is_usable_by_subclassing():
    class ReinforceLoss(PolicyLoss):
        name = "reinforce"
        aggregation = "token_mean"

        def per_token_loss(self, coef_1, advantages, per_token_logps):
            return -advantages * per_token_logps

        def clip_masks(self, coef_1, advantages):
            return None

    logps = torch.randn(3, 4, requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, 0.0])
    loss, metrics = ReinforceLoss()(logps, None, None, advantages, torch.ones(3, 4))
    loss.backward()
    torch.testing.assert_close(logps.grad, -advantages.unsqueeze(1).expand(3, 4) / 12)
    assert metrics == {}


# ----------------------------------------------------------------------- loss settings in the trainers
# When DAPO and BNPO give different updates: the RL schedule, end to end on one generation batch.
#
# A study ran one optimisation step per generation batch (`steps_per_generation=1`, `num_iterations=1`,
# `gradient_accumulation_steps=1`) and got identical DAPO and BNPO runs. That is what the math says:
#
# - TRL computes old log-probabilities only when `gradient_accumulation_steps % (steps_per_generation *
#   num_iterations) != 0`, i.e. when the policy takes an optimizer step between generating a batch and using part of
#   it; otherwise the update is on-policy, the importance ratio is exactly 1, the clip (and DAPO's clip-higher) never
#   acts, and the gradient of the clipped surrogate is `-A * grad log pi` for every epsilon;
# - with one micro-batch per generation batch, DAPO's normaliser (the tokens of the generation batch, rescaled to one
#   accumulation window) is the micro-batch's token count, BNPO's.
#
# Here, on the tiny VLM (latent actions) and the tiny LM (tokens), with identical seeds and therefore identical
# rollouts: the control schedule gives bit-identical parameters; `steps_per_generation=2, gradient_accumulation_steps=2`
# makes the normalisers differ (micro-batches of different token counts); `num_iterations=2` on top makes the second
# pass off-policy, the clip act (`clip_ratio/*` > 0) and clip-higher change the update.

# One generation batch of 2 prompts x 4 completions of at most 8 steps.
COMMON = dict(
    num_generations=4,
    max_completion_length=8,
    learning_rate=1e-2,  # large, so that one optimizer step moves the ratios out of [1 - 0.2, 1 + 0.2]
    use_cpu=True,
    bf16=False,
    report_to="none",
    logging_steps=1,
    save_strategy="no",
    disable_tqdm=True,
    seed=0,
)


# The study's schedule: one micro-batch, one optimizer step per generation batch.
ONE_STEP = dict(per_device_train_batch_size=8, steps_per_generation=1, gradient_accumulation_steps=1, max_steps=1)


# Two micro-batches of 4 accumulated into one optimizer step: on-policy (GA % (spg * iterations) == 0).
TWO_MICRO_BATCHES = dict(
    per_device_train_batch_size=4, steps_per_generation=2, gradient_accumulation_steps=2, max_steps=1
)


# The same, two passes over the generation batch: 2 optimizer steps, the second off-policy (2 % (2 * 2) != 0).
TWO_PASSES = dict(TWO_MICRO_BATCHES, num_iterations=2, max_steps=2)


CLIP_KEYS = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")


def token_hash_reward(completion_ids, **kwargs):  # varied: different completions get different rewards
    return [float(hash(tuple(ids)) % 1000) / 1000 for ids in completion_ids]


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def latent_setup(tiny_cache):
    path = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    _, processor = tiny_vlm("tiny", cache_dir=tiny_cache)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LatentActionModel.from_base(
            path, codebook_size=16, inverse_layers=1, policy_layers=1, world_output="residual_minus_base"
        )
    with (
        torch.no_grad()
    ):  # codes that matter to the untrained world model (tests/training/test_latent_grpo_trainer.py)
        model.codebook.proj.weight.mul_(100.0)
    # Completions of different lengths, so that micro-batches hold different numbers of steps: every fifth token
    # ends a completion (the untrained world model rarely emits the real end-of-sequence token).
    vocab = len(processor.tokenizer)
    model.generation_config.eos_token_id = [processor.tokenizer.eos_token_id, *range(0, vocab, 5)]
    return model, processor, synthetic_rl_dataset(8, seed=0)


class Run:
    """One training run: the trained parameters, the generation batch, the micro-batches and the logs."""

    def __init__(self, trainer):
        self.generation_batches, self.micro_batches = [], []
        generate, compute = trainer._generate_and_score_completions, trainer._compute_policy_loss

        def recording_generate(inputs):
            output = generate(inputs)
            self.generation_batches.append(output)
            return output

        def recording_compute(inputs, *args, **kwargs):
            self.micro_batches.append(inputs)
            return compute(inputs, *args, **kwargs)

        trainer._generate_and_score_completions = recording_generate
        trainer._compute_policy_loss = recording_compute
        trainer.train()
        self.params = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        self.logs = [h for h in trainer.state.log_history if "train_runtime" not in h]

    def clip(self, step: int) -> dict[str, float]:
        return {k: self.logs[step][k] for k in CLIP_KEYS}


def run_latent(setup, tmp_path, loss, schedule) -> Run:
    model, processor, dataset = setup
    args = LatentGRPOConfig(str(tmp_path / "out"), loss=loss, code_top_k=None, **COMMON, **schedule)
    trainer = LatentGRPOTrainer(
        copy.deepcopy(model),
        reward_funcs=token_hash_reward,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    return Run(trainer)


def run_token(tiny_cache, tmp_path, loss, schedule) -> Run:
    model, tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": "Which colour is the circle?"}]] * 8})
    # beta 0 as GRPOConfig has it (a loss object brings its own)
    args = TokenGRPOConfig(
        str(tmp_path / "out"), gradient_checkpointing=False, loss=loss, beta=0.0, **COMMON, **schedule
    )
    trainer = TokenGRPOTrainer(
        model, reward_funcs=token_hash_reward, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    return Run(trainer)


def max_difference(a: Run, b: Run) -> float:
    return max((a.params[n] - b.params[n]).abs().max().item() for n in a.params)


def assert_same_rollouts(a: Run, b: Run) -> None:
    """Both runs update from the same generation batch: any difference is the objective's."""
    assert len(a.generation_batches) == len(b.generation_batches) == 1
    (x,), (y,) = a.generation_batches, b.generation_batches
    assert torch.equal(x["completion_ids"], y["completion_ids"])
    torch.testing.assert_close(x["advantages"], y["advantages"], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- latent actions
def test_latent_dapo_equals_bnpo_with_one_step_per_generation_batch(latent_setup, tmp_path):
    """Control (the study's schedule): on-policy, so the ratio is 1 and neither clip acts; one micro-batch, so DAPO's
    generation-batch token count is BNPO's micro-batch token count. DAPO's clip-higher (0.28) changes nothing."""
    dapo, bnpo = (
        run_latent(latent_setup, tmp_path, loss, ONE_STEP) for loss in (DAPOLoss(epsilon_high=0.28), BNPOLoss())
    )
    assert_same_rollouts(dapo, bnpo)
    assert "old_per_token_logps" not in dapo.micro_batches[0]  # TRL: on-policy, no old log-probabilities
    assert all(torch.equal(dapo.params[n], bnpo.params[n]) for n in dapo.params)
    assert dapo.clip(0) == bnpo.clip(0) == dict.fromkeys(CLIP_KEYS, 0.0)


def test_latent_dapo_differs_from_bnpo_across_micro_batches(latent_setup, tmp_path):
    """Two micro-batches in one optimizer step, still on-policy: the clip never acts, but BNPO averages the two
    micro-batches' token means while DAPO averages over all tokens, so micro-batches of different lengths give a
    different update (DAPO with TRL's symmetric clip, as BNPO's, to isolate the normaliser)."""
    dapo, bnpo = (run_latent(latent_setup, tmp_path, loss, TWO_MICRO_BATCHES) for loss in (DAPOLoss(), BNPOLoss()))
    assert_same_rollouts(dapo, bnpo)
    first, second = (int(batch["completion_mask"].sum()) for batch in dapo.micro_batches)
    assert first != second, "the test needs micro-batches with different numbers of completion steps"
    assert "old_per_token_logps" not in dapo.micro_batches[0]
    assert dapo.clip(0) == bnpo.clip(0) == dict.fromkeys(CLIP_KEYS, 0.0)
    assert max_difference(dapo, bnpo) > 1e-4


def test_latent_dapo_differs_from_bnpo_off_policy(latent_setup, tmp_path):
    """Two passes over the generation batch: TRL asks for old log-probabilities (the rollout's), the second optimizer
    step is off-policy, the clip acts, and DAPO's clip-higher clips fewer steps than the symmetric clip."""
    dapo, dapo_symmetric, bnpo = (
        run_latent(latent_setup, tmp_path, loss, TWO_PASSES)
        for loss in (DAPOLoss(epsilon_high=0.28), DAPOLoss(), BNPOLoss())
    )
    assert_same_rollouts(dapo, bnpo)
    assert len(dapo.micro_batches) == 4 and dapo.micro_batches[0] is dapo.micro_batches[2]  # pass 2 reuses pass 1
    assert all("old_per_token_logps" in batch for batch in dapo.micro_batches)
    for run in (dapo, dapo_symmetric, bnpo):
        assert run.clip(0) == dict.fromkeys(CLIP_KEYS, 0.0)  # first pass: the policy has not moved yet
        assert run.clip(1)["clip_ratio/region_mean"] > 0.05  # second pass: clipping acted
    # Same first optimizer step (on-policy, same normaliser), so the same ratios in the second: 0.28 clips less.
    assert dapo.clip(1)["clip_ratio/high_mean"] < dapo_symmetric.clip(1)["clip_ratio/high_mean"]
    assert max_difference(dapo, dapo_symmetric) > 1e-4  # clip-higher changed the update
    assert max_difference(dapo, bnpo) > 1e-4


# ------------------------------------------------------------------------------------------------------ tokens
def test_token_dapo_vs_bnpo_control_and_off_policy(tiny_cache, tmp_path):
    """The token-level trainer behaves the same: identical updates on the study's schedule, different ones with two
    passes (TRL recomputes the old log-probabilities with a forward pass; the clip acts in the second pass)."""
    dapo, bnpo = (
        run_token(tiny_cache, tmp_path, loss, ONE_STEP) for loss in (DAPOLoss(epsilon_high=0.28), BNPOLoss())
    )
    assert_same_rollouts(dapo, bnpo)
    assert all(torch.equal(dapo.params[n], bnpo.params[n]) for n in dapo.params)

    dapo, bnpo = (
        run_token(tiny_cache, tmp_path, loss, TWO_PASSES) for loss in (DAPOLoss(epsilon_high=0.28), BNPOLoss())
    )
    assert_same_rollouts(dapo, bnpo)
    assert all("old_per_token_logps" in batch for batch in dapo.micro_batches)
    for run in (dapo, bnpo):
        assert run.clip(0) == dict.fromkeys(CLIP_KEYS, 0.0)
        assert run.clip(1)["clip_ratio/region_mean"] > 0.05
    assert max_difference(dapo, bnpo) > 1e-4
