"""Cutting a dataset into its splits by fraction ranges, the way the benchmarks' authors do.

The records are shuffled with `random.Random(seed)` (the authors' `random.seed(42); random.shuffle`) and cut at
fraction ranges, e.g. MMRole's `{"sft": (0, 0.5), "rl": (0.5, 0.9), "id_test": (0.9, 1)}`. A cut at fraction `f` of
`n` records falls at `floor(f * n)` computed exactly (with `Fraction`), so 36 records give 18 / 14 / 4.

```python
>>> from trl_latent.data.splits import fraction_bounds
>>> fraction_bounds(100, 0.0, 0.29)
(0, 29)
```
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction

__all__ = ["fraction_bounds", "split_by_fractions"]


def fraction_bounds(n: int, start: float, end: float) -> tuple[int, int]:
    """Indices `[floor(start * n), floor(end * n))` of the slice a fraction range selects, computed exactly.

    `Fraction(str(x))` reads the decimal the user wrote, so `0.29 * 100` gives 29, not the 28 that float rounding in
    `int(0.29 * 100)` gives. The authors' code uses `int(f * n)`, which agrees wherever the float product is exact.
    """
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"A split fraction range must satisfy 0 <= start <= end <= 1, got ({start}, {end}).")
    return int(Fraction(str(start)) * n), int(Fraction(str(end)) * n)


def split_by_fractions(items: Sequence, fractions: dict[str, tuple[float, float]], seed: int = 42) -> dict:
    """Shuffle `items` with `random.Random(seed)` (the same order as the authors' `random.seed(42); random.shuffle`)
    and cut one slice per named fraction range (see [`fraction_bounds`])."""
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    out = {}
    for name, (start, end) in fractions.items():
        i, j = fraction_bounds(len(shuffled), start, end)
        out[name] = shuffled[i:j]
    return out
