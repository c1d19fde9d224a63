"""A reward function with TRL's signature, used where a judge is expected: `trl-latent eval --reward my_rewards.f`
scores test answers with the same function `grpo --reward_funcs my_rewards.f` trains on.

>>> from trl_latent.rewards.function_judge import RewardFunctionJudge
>>> judge = RewardFunctionJudge(lambda completions, **kwargs: [float("cat" in c) for c in completions])
>>> [j.metric for j in judge.judge(["What is it?", "And this?"], ["A cat.", "A dog."])]
[1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .judge import Judgement

__all__ = ["RewardFunctionJudge"]


class RewardFunctionJudge:
    """Judge answers with a reward function `f(prompts, completions, **columns) -> list[float | None]`, called as TRL's
    `GRPOTrainer` calls it: for conversational prompts (lists of messages) each completion is passed as a one-message
    conversation `[{"role": "assistant", "content": text}]`, and the dataset's other columns as keyword arguments.

    Each reward becomes a [`Judgement`] on one dimension whose `metric` (and `reward`) is the reward itself; a `None`
    or non-finite reward is a failed judgement (counted by the evaluation, not scored)."""

    def __init__(self, reward_func: Callable, name: str | None = None):
        if not callable(reward_func):
            raise TypeError(f"reward_func must be callable, got {type(reward_func).__name__}.")
        self.reward_func = reward_func
        self.name = name or getattr(reward_func, "__name__", type(reward_func).__name__)
        self.counters = {"judgements": 0, "failed": 0}

    def __repr__(self) -> str:
        return f"RewardFunctionJudge({self.name})"

    def judge(self, prompts: Sequence, completions: Sequence[str], **columns) -> list[Judgement]:
        conversational = bool(prompts) and isinstance(prompts[0], list)
        given = [[{"role": "assistant", "content": c}] for c in completions] if conversational else list(completions)
        rewards = self.reward_func(prompts=list(prompts), completions=given, **columns)
        if len(rewards) != len(completions):
            raise ValueError(
                f"reward function {self.name} returned {len(rewards)} rewards for {len(completions)} completions."
            )
        out = []
        for value in rewards:
            if value is None or not math.isfinite(float(value)):
                out.append(
                    Judgement(error=f"{self.name} gave no reward ({value!r})", failure="record", reason="no reward")
                )
            else:
                out.append(Judgement(scores={"reward": (float(value), 1.0)}, num_dimensions=1))
        self.counters["judgements"] += len(out)
        self.counters["failed"] += sum(not j.ok for j in out)
        return out

    def metrics(self) -> dict[str, float]:
        """Cumulative counters under `judge/...` keys, as [`~trl_latent.rewards.judge.JudgeReward.metrics`]."""
        return {f"judge/{key}": float(value) for key, value in self.counters.items()}

    def reset_metrics(self) -> None:
        self.counters = dict.fromkeys(self.counters, 0)
