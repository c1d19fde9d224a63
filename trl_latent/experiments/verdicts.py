"""Verdicts that respect the noise: one place that decides whether a measured difference met its target.

A study claim compares two arms over the same seeds, so the differences are paired by seed. A target is "met" only
when the paired difference clears its noise the right way, "missed" when it clears it the wrong way, and "within
noise" otherwise:

- every seed agrees in sign (all differences beyond the threshold, or all short of it), and
- the mean difference is at least two standard errors (sample std / sqrt(n)) away from the threshold.

With one seed there is no noise estimate, so no verdict: "n/a (one seed)". Timing targets are read from repeated
measurements of a ratio: the median and the spread (min to max) of at least three repeats; "met" when the whole
spread is on the right side of the target, "missed" when it is on the wrong side, "undecided" when it straddles it.

```python
>>> paired_verdict([0.10, 0.12, 0.08]).verdict          # latent - token per seed: a clear win
'met'
>>> paired_verdict([0.008, -0.02, 0.03]).verdict        # signs disagree
'within noise'
>>> paired_verdict([0.30, 0.35, 0.28], threshold=0.5).verdict  # at least 0.5 asked, far below it on every seed
'missed'
>>> timing_verdict([0.91, 0.95, 1.12], target=1.0).verdict     # ratios: the spread straddles the target
'undecided'

```
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MET, WITHIN_NOISE, MISSED, UNDECIDED, NOT_AVAILABLE = "met", "within noise", "missed", "undecided", "n/a"
# How many standard errors a mean paired difference must clear.
STANDARD_ERRORS = 2.0
# The fewest repeats a timing verdict takes.
MIN_REPEATS = 3


@dataclass(frozen=True)
class Verdict:
    """A verdict with the numbers behind it.

    `mean` and `std` (sample std, n - 1) are over the per-seed values (for [`paired_verdict`]) or `median`, `low`,
    `high` over the repeats (for [`timing_verdict`]); `n` counts them; `verdict` is one of "met", "within noise",
    "missed", "undecided" or "n/a ..." with the reason.
    """

    verdict: str
    n: int
    mean: float = math.nan
    std: float = math.nan
    median: float = math.nan
    low: float = math.nan
    high: float = math.nan
    threshold: float = 0.0

    @property
    def standard_error(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan

    def describe(self, digits: int = 3, signed: bool = True) -> str:
        """The numbers as one phrase: `+0.100 ± 0.020 (3 seeds)` (`signed=False` for ratios: `1.200 ± ...`), or
        `median 0.950 (spread 0.910-1.120, 3 repeats)` for a timing verdict."""
        if not math.isnan(self.median):
            return f"median {self.median:.{digits}f} (spread {self.low:.{digits}f}-{self.high:.{digits}f}, {self.n} repeats)"
        if self.n == 0:
            return "no values"
        std = "" if self.n < 2 else f" ± {self.std:.{digits}f}"
        mean = f"{self.mean:+.{digits}f}" if signed else f"{self.mean:.{digits}f}"
        return f"{mean}{std} ({self.n} seed{'s' if self.n != 1 else ''})"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def paired_verdict(differences: Sequence[float], threshold: float = 0.0, higher_is_better: bool = True) -> Verdict:
    """The verdict on per-seed paired differences (arm A minus arm B on the same seed, or a gain per seed) against
    `threshold` (0: A at least as good as B; 0.05: a gain of at least 0.05). `higher_is_better=False` for metrics
    where lower wins (self-BLEU, NLL rise): the target is then `difference <= threshold`.

    "met": every seed on the right side of the threshold and the mean at least two standard errors beyond it;
    "missed": every seed on the wrong side and the mean two standard errors short; "within noise" otherwise;
    "n/a" without values or with one seed.
    """
    values = _finite(differences)
    n = len(values)
    if n == 0:
        return Verdict(f"{NOT_AVAILABLE} (no values)", 0, threshold=threshold)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else math.nan
    if n == 1:
        return Verdict(f"{NOT_AVAILABLE} (one seed)", 1, mean, std, threshold=threshold)
    sign = 1.0 if higher_is_better else -1.0
    margins = [sign * (v - threshold) for v in values]
    clearance = sign * (mean - threshold)
    noise = STANDARD_ERRORS * std / math.sqrt(n)
    if all(m > 0 for m in margins) and clearance >= noise:
        verdict = MET
    elif all(m < 0 for m in margins) and -clearance >= noise:
        verdict = MISSED
    else:
        verdict = WITHIN_NOISE
    return Verdict(verdict, n, mean, std, threshold=threshold)


def range_verdict(values: Sequence[float], low: float, high: float) -> Verdict:
    """Whether per-seed values lie in [low, high]: "met" when the mean is inside with two standard errors to spare on
    both sides and every seed inside, "missed" when every seed is outside on the same side by two standard errors,
    "within noise" otherwise."""
    below = paired_verdict(values, threshold=low)
    above = paired_verdict(values, threshold=high, higher_is_better=False)
    if below.n < 2:
        return Verdict(below.verdict, below.n, below.mean, below.std)
    if below.verdict == MET and above.verdict == MET:
        verdict = MET
    elif MISSED in (below.verdict, above.verdict):
        verdict = MISSED
    else:
        verdict = WITHIN_NOISE
    return Verdict(verdict, below.n, below.mean, below.std)


def timing_verdict(ratios: Sequence[float], target: float, lower_is_better: bool = True) -> Verdict:
    """The verdict on repeated measurements of a cost ratio (latent / stock) against `target` ("at most 1.1x": pass
    `target=1.1`). "met" when every repeat is at or under the target, "missed" when every repeat is over it,
    "undecided" when the spread straddles it; "n/a" with fewer than three repeats."""
    values = _finite(ratios)
    n = len(values)
    if n < MIN_REPEATS:
        median = statistics.median(values) if values else math.nan
        low, high = (min(values), max(values)) if values else (math.nan, math.nan)
        return Verdict(
            f"{NOT_AVAILABLE} ({n} repeat{'s' if n != 1 else ''}, {MIN_REPEATS} needed)",
            n,
            median=median,
            low=low,
            high=high,
            threshold=target,
        )
    low, high, median = min(values), max(values), statistics.median(values)
    good = (lambda v: v <= target) if lower_is_better else (lambda v: v >= target)
    if all(good(v) for v in values):
        verdict = MET
    elif not any(good(v) for v in values):
        verdict = MISSED
    else:
        verdict = UNDECIDED
    return Verdict(verdict, n, median=median, low=low, high=high, threshold=target)
