"""When DAPO and BNPO give different updates: the RL schedule, end to end on one generation batch.

A study ran one optimisation step per generation batch (`steps_per_generation=1`, `num_iterations=1`,
`gradient_accumulation_steps=1`) and got identical DAPO and BNPO runs. That is what the math says:

- TRL computes old log-probabilities only when `gradient_accumulation_steps % (steps_per_generation *
  num_iterations) != 0`, i.e. when the policy takes an optimizer step between generating a batch and using part of
  it; otherwise the update is on-policy, the importance ratio is exactly 1, the clip (and DAPO's clip-higher) never
  acts, and the gradient of the clipped surrogate is `-A * grad log pi` for every epsilon;
- with one micro-batch per generation batch, DAPO's normaliser (the tokens of the generation batch, rescaled to one
  accumulation window) is the micro-batch's token count, BNPO's.

Here, on the tiny VLM (latent actions) and the tiny LM (tokens), with identical seeds and therefore identical
rollouts: the control schedule gives bit-identical parameters; `steps_per_generation=2, gradient_accumulation_steps=2`
makes the normalisers differ (micro-batches of different token counts); `num_iterations=2` on top makes the second
pass off-policy, the clip act (`clip_ratio/*` > 0) and clip-higher change the update.
"""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from trl_latent.experiments.shapes.models import tiny_lm, tiny_vlm, tiny_vlm_path
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset
from trl_latent.modeling import LatentActionModel
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer
from trl_latent.training.losses import BNPOLoss, DAPOLoss
from trl_latent.training.token_grpo_config import TokenGRPOConfig
from trl_latent.training.token_grpo_trainer import TokenGRPOTrainer

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
    with torch.no_grad():  # codes that matter to the untrained world model (tests/test_latent_grpo.py)
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
