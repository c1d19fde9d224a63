"""Stopping a GRPO run whose reward has failed, instead of training on nothing.

When the LLM judge refuses every request (a revoked key, a judge server that died) or a reward function returns `None`
for every completion, each completion of a group gets the same reward (the judge's batch fallback, or TRL's "no
reward" NaN), every advantage is zero and the policy learns nothing, however long the run goes on. A transient
failure is harmless (the judge retries; a failed judgement gets the batch mean), so only a streak counts:

- a generation batch *fails* when a reward function that reports its judgements (`last_batch`, a
  [`~trl_latent.rewards.judge.BatchOutcome`], as [`~trl_latent.rewards.judge.JudgeReward`] keeps) failed every one of
  them, or when every reward function returned `None` for every completion (TRL's all-`None` rows, for the whole
  batch);
- after `max_failed_reward_batches` failed batches in a row (a batch with one good judgement resets the count) the
  trainer saves a checkpoint, stops, and `train()` raises [`RewardFailureError`], which names the failure reasons and
  counts, the checkpoint, and how to resume.

[`~trl_latent.training.policy_loss_mixin.PolicyLossMixin`] wires it into `LatentGRPOTrainer` (`LatentGRPOConfig.
max_failed_reward_batches`) and `TokenGRPOTrainer` (its `max_failed_reward_batches` argument). Only training batches
count, and the decision is taken on the rewards of all processes, so every process stops at the same step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["MAX_FAILED_REWARD_BATCHES", "RewardFailureCallback", "RewardFailureError", "RewardFailureMonitor"]

# Failed generation batches in a row that stop a run (one source: LatentGRPOConfig's field and TokenGRPOTrainer's
# argument default to it).
MAX_FAILED_REWARD_BATCHES = 3


class RewardFailureError(RuntimeError):
    """The reward failed for `max_failed_reward_batches` generation batches in a row: the run saved a checkpoint
    (`checkpoint`, at `step`) and stopped. The message names the reasons and counts, and how to resume."""

    def __init__(self, message: str, checkpoint: str | None = None, step: int | None = None):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step


@dataclass
class _Tally:
    """Failures of one reporting reward function over the failed batches: counts by reason, one example text each."""

    judgements: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, judgements: int, failures: int, reasons: dict, examples: dict) -> None:
        self.judgements += judgements
        self.failures += failures
        for reason, count in reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count
        for reason, text in examples.items():
            self.examples.setdefault(reason, text)


@dataclass
class _FailedBatch:
    completions: int
    all_none: bool
    tallies: dict[str, _Tally]  # reporting reward functions that failed every judgement of the batch


class RewardFailureMonitor:
    """Counts consecutive failed generation batches (see the module docstring); `stop_requested` once there are
    `max_failed_batches` of them (`0` never stops)."""

    def __init__(self, max_failed_batches: int = MAX_FAILED_REWARD_BATCHES):
        if max_failed_batches is None or max_failed_batches < 0:
            raise ValueError(
                f"max_failed_reward_batches must be >= 0 (0 never stops the run), got {max_failed_batches}."
            )
        self.max_failed_batches = max_failed_batches
        self.failed: list[_FailedBatch] = []
        self.stop_requested = False

    def reset(self) -> None:
        self.failed = []
        self.stop_requested = False

    def observe(self, completions: int, all_none: bool, reports: list[tuple], reward_names: list[str]) -> None:
        """One training generation batch: `completions` (all processes), whether every reward function returned
        `None` for every completion, and the reports of the reward functions that keep one, gathered from every
        process as `(name, judgements, failures, reasons, examples)` tuples."""
        merged: dict[str, _Tally] = {}
        for name, judgements, failures, reasons, examples in reports:
            merged.setdefault(name, _Tally()).add(judgements, failures, reasons, examples)
        failed_funcs = {name: t for name, t in merged.items() if t.judgements > 0 and t.failures == t.judgements}
        if not all_none and not failed_funcs:
            self.failed = []
            return
        self.failed.append(_FailedBatch(completions, all_none, failed_funcs))
        n, limit = len(self.failed), self.max_failed_batches
        what = (
            f"every reward function ({', '.join(reward_names)}) returned None for every completion"
            if all_none
            else f"{' and '.join(repr(name) for name in failed_funcs)} failed every judgement"
        )
        if limit and n >= limit:
            self.stop_requested = True
            logger.error("Reward failure: %s of %d generation batch(es) in a row; stopping the run.", what, n)
        else:
            logger.warning(
                "Reward failure: %s of this generation batch (%d in a row%s).",
                what,
                n,
                f"; the run saves a checkpoint and stops at {limit}" if limit else "",
            )

    def message(self, step: int, checkpoint: str | None) -> str:
        """The error of a stopped run: what failed in the last batches, with counts and reasons, and what to do."""
        n = len(self.failed)
        batches = "batch" if n == 1 else f"{n} batches"
        parts = []
        tallies: dict[str, _Tally] = {}
        for batch in self.failed:
            for name, tally in batch.tallies.items():
                tallies.setdefault(name, _Tally()).add(tally.judgements, tally.failures, tally.reasons, tally.examples)
        for name, tally in tallies.items():
            ordered = sorted(tally.reasons.items(), key=lambda item: -item[1])
            reasons = ", ".join(f"{reason} x{count}" for reason, count in ordered)
            examples = "; ".join(
                f"{reason}: {tally.examples[reason]}" for reason, _ in ordered if reason in tally.examples
            )
            judge = "the judge" if name == "judge_reward" else f"the judge {name!r}"
            parts.append(
                f"{judge} failed every judgement of the last {batches} ({tally.failures} of {tally.judgements}: "
                f"{reasons})" + (f" [{examples}]" if examples else "")
            )
        none_batches = [b for b in self.failed if b.all_none]
        if none_batches:
            completions = sum(b.completions for b in none_batches)
            parts.append(
                f"every reward function returned None for every completion of {len(none_batches)} of the last "
                f"{batches} ({completions} of {completions} completions without a reward)"
            )
        saved = (
            f"The checkpoint was saved to {checkpoint}"
            if checkpoint
            else "No checkpoint folder was found (check save_strategy and output_dir)"
        )
        fix = "fix the judge (server, judge_base_url, judge_model, API key)" if tallies else "fix the reward function"
        fix += " so that it returns a reward" if not tallies else ""
        resume = (
            f"resume with resume_from_checkpoint={checkpoint} (`--resume_from_checkpoint {checkpoint}`)"
            if checkpoint
            else "resume from the last checkpoint with resume_from_checkpoint"
        )
        return (
            f"Training stopped at step {step}: " + "; ".join(parts) + ". With no reward every advantage is zero and "
            f"the policy learns nothing. {saved}; {fix} and {resume}. max_failed_reward_batches (now "
            f"{self.max_failed_batches}) sets how many failed batches in a row stop a run (0: never)."
        )


class RewardFailureCallback(TrainerCallback):
    """Saves a checkpoint and stops training at the end of the step whose reward failed the `max_failed_batches`-th
    batch in a row; the trainer's `train()` then raises [`RewardFailureError`]."""

    def __init__(self, monitor: RewardFailureMonitor):
        self.monitor = monitor

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control
