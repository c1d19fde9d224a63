"""Summary statistics of repeated measurements: the mean ± std the evaluation and the study's tables report.

The standard deviation is the **sample** standard deviation (divisor `n - 1`, Bessel's correction): the spread of the
N generation rounds of an evaluation, or of the seeds of a study cell, estimates the spread of the process that drew
them. One value gives a std of `0.0`. `None` and NaN values (a round with no successful judgement, a missing metric)
are left out; with no value left, both numbers are NaN.

```python
>>> from trl_latent.metrics.stats import mean_std
>>> mean_std([1.0, 2.0, 3.0, 4.0])
(2.5, 1.2909944487358056)
```
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

__all__ = ["mean_std"]


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and **sample** standard deviation (divisor `n - 1`; `0.0` for a single value) of the values that are not
    `None` or NaN; `(nan, nan)` when none is left."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not kept:
        return math.nan, math.nan
    return statistics.fmean(kept), statistics.stdev(kept) if len(kept) > 1 else 0.0
