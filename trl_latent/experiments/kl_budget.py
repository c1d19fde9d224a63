"""Matched RL arms: each arm's learning rate set by a KL budget, not by a reward sweep.

Two RL arms are comparable only if each actually moves its policy by a similar amount. A token arm whose weights move
by 0.1% (its KL to the reference near 0) is frozen, not a baseline. So each arm's learning rate is chosen by the same
rule: a geometric search over rates for one whose mean KL to the reference at the end of a short probe run falls inside
the budget (for example 0.01-0.05). The probe is the arm's own RL run, shortened; the reward is never read.

```python
>>> probe = lambda lr: KLProbe(lr, kl=400.0 * lr, weight_change=lr)   # a planted arm: KL grows with the rate
>>> choice = choose_learning_rate(probe, budget=(0.01, 0.05), start=1e-5, factor=3.0)
>>> choice.describe()
'learning rate 3.0e-05 (inside the KL budget 0.01-0.05; 1.0e-05 -> KL 0.0040, 3.0e-05 -> KL 0.0120)'

```

The search is geometric: from `start`, multiply by `factor` while the KL is under the budget, divide while it is over,
and bisect (in log space) between the last rate under and the first over when a step jumps across the budget; it
stops at the first rate inside, or after `max_probes` probes with the rate closest to the budget (`within=False`).
A probe whose run did not move the policy at all (KL exactly 0: no reward signal, e.g. every group's rewards equal)
stops the search at once (`within=False`, `stalled=True`): no learning rate moves a policy that gets no gradient.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

# The two arms every study compares at a matched KL, in the order its tables show them.
ARMS = ("token", "latent")


@dataclass(frozen=True)
class KLProbe:
    """One probe run: its learning rate, the mean KL to the reference over the run's last logged steps, and the
    relative change of the trained weights (||theta - theta_0|| / ||theta_0||)."""

    learning_rate: float
    kl: float
    weight_change: float = math.nan


@dataclass(frozen=True)
class LearningRateChoice:
    learning_rate: float
    within: bool  # whether the chosen rate's KL is inside the budget
    budget: tuple[float, float]
    probes: list[KLProbe] = field(default_factory=list)
    stalled: bool = False  # a probe did not move the policy at all: no rate can reach the budget

    def describe(self) -> str:
        rows = ", ".join(f"{p.learning_rate:.1e} -> KL {p.kl:.4f}" for p in self.probes)
        if self.stalled:
            return f"learning rate {self.learning_rate:.1e} (the run did not move the policy: KL 0, no reward signal; {rows})"
        where = "inside" if self.within else "closest to"
        return (
            f"learning rate {self.learning_rate:.1e} ({where} the KL budget {self.budget[0]}-{self.budget[1]}; {rows})"
        )


def final_kl(log_history: Iterable[Mapping], key: str = "kl", tail: int = 3) -> float:
    """The mean of `key` over the last `tail` log entries that have it (a Trainer's `state.log_history`)."""
    values = [float(entry[key]) for entry in log_history if key in entry and math.isfinite(float(entry[key]))]
    if not values:
        raise ValueError(f"No {key!r} in the log history: set beta > 0 so the trainer computes a KL to its reference.")
    return statistics.fmean(values[-tail:])


def snapshot(parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    """A copy of the trainable parameters, to measure how far training moved them."""
    return {name: p.detach().float().clone() for name, p in parameters if p.requires_grad}


def relative_weight_change(
    before: Mapping[str, torch.Tensor], parameters: Iterable[tuple[str, torch.Tensor]]
) -> float:
    """||theta - theta_0|| / ||theta_0|| over the parameters of `before` (the trained ones)."""
    after = dict(parameters)
    moved = sum(float((after[name].detach().float() - start).pow(2).sum()) for name, start in before.items())
    norm = sum(float(start.pow(2).sum()) for start in before.values())
    return math.sqrt(moved / norm) if norm else math.nan


def choose_learning_rate(
    probe: Callable[[float], KLProbe],
    budget: tuple[float, float] = (0.01, 0.05),
    start: float = 1e-5,
    factor: float = 3.0,
    max_probes: int = 6,
) -> LearningRateChoice:
    """The learning rate whose probe run ends with its mean KL inside `budget` (see the module docstring)."""
    low, high = budget
    if not 0 <= low < high:
        raise ValueError(f"The KL budget must be 0 <= low < high, got {budget}.")
    if start <= 0 or factor <= 1 or max_probes < 1:
        raise ValueError(f"Need start > 0, factor > 1 and max_probes >= 1 (got {start}, {factor}, {max_probes}).")
    probes: list[KLProbe] = []
    under, over = None, None  # the largest rate under the budget, the smallest over it
    rate = start
    for _ in range(max_probes):
        result = probe(rate)
        probes.append(result)
        if low <= result.kl <= high:
            return LearningRateChoice(rate, True, budget, probes)
        if result.kl == 0.0:
            return LearningRateChoice(rate, False, budget, probes, stalled=True)
        if result.kl < low:
            under = rate if under is None else max(under, rate)
        else:
            over = rate if over is None else min(over, rate)
        if under is not None and over is not None:
            rate = math.sqrt(under * over)
        elif over is None:
            rate *= factor
        else:
            rate /= factor
    target = math.sqrt(low * high)
    best = min(probes, key=lambda p: abs(math.log(max(p.kl, 1e-12)) - math.log(target)))
    return LearningRateChoice(best.learning_rate, False, budget, probes)
