"""Reading the judge's answer: the score pairs `(A, B)` per rubric dimension, tolerant of the formats judges write.

The judge is asked for `N. <Dimension>: <comment> [Scores]: (A, B)` lines ([`~trl_latent.rewards.rubrics`]), and the
parser also reads `A=7, B=8`, `A: 7, B: 8`, bare `(7, 8)` pairs after a dimension name, and JSON objects mapping
dimension names to `[A, B]` or `{"A": ..., "B": ...}`. A pair outside the 1-10 scale the judge is asked for (0, 11,
-3, NaN) is rejected and counted (`judge/out_of_scale` in [`~trl_latent.rewards.judge.JudgeReward`]); its dimension
does not parse. Dimensions that do not parse are absent from the result.

```python
>>> from trl_latent.rewards.parsing import parse_scores
>>> from trl_latent.rewards.rubrics import MMROLE_RUBRIC
>>> parse_scores("1. Fluency: clear. [Scores]: (7, 8)", MMROLE_RUBRIC.dimensions)
{'fluency': (7.0, 8.0)}
```
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .rubrics import Dimension

__all__ = ["MAX_SCORE", "MIN_SCORE", "parse_scores"]

# Signs, NaN and infinities are read (and then rejected as outside the scale) rather than half-read: "-3" is not 3.
_NUM = r"([-+]?(?:\d+(?:\.\d+)?|nan\b|inf(?:inity)?\b))"
_PAIR_PATTERNS = (
    # [Scores]: (7, 8)   Scores: 7, 8   score: (7,8)
    re.compile(r"\[?\s*scores?\s*\]?\s*[:=]?\s*\(?\s*" + _NUM + r"\s*[,;/]\s*" + _NUM + r"\s*\)?", re.I),
    # A=7, B=8   A: 7 / B: 8   Response A: 7, Response B: 8   Model A = 7 ... Model B = 8
    re.compile(r"\bA\s*[=:]\s*" + _NUM + r"\s*(?:/\s*10)?[\s,;/]+(?:\w+\s+)?B\s*[=:]\s*" + _NUM, re.I),
    # (7, 8)
    re.compile(r"\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\)", re.I),
)
_TAGGED = re.compile(r"\[\s*scores?\s*\]\s*:?\s*\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\)", re.I)
MIN_SCORE, MAX_SCORE = 1.0, 10.0  # the scale the judge is asked for ("from 1 (poor) to 10")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _name_pattern(name: str) -> re.Pattern:
    words = _norm(name).split()
    return re.compile(r"\b" + r"[\s_\-]*".join(map(re.escape, words)) + r"\b", re.I)


def _valid(a: float, b: float) -> bool:
    # NaN compares false, so it is rejected too.
    return MIN_SCORE <= a <= MAX_SCORE and MIN_SCORE <= b <= MAX_SCORE


class _Rejected:
    """Counts score pairs a parse saw but rejected (outside the asked scale, NaN, infinite)."""

    def __init__(self):
        self.count = 0

    def keep(self, a: float, b: float) -> bool:
        if _valid(a, b):
            return True
        self.count += 1
        return False


def _parse_json(text: str, dimensions: Sequence[Dimension], rejected: _Rejected) -> dict[str, tuple[float, float]]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    if isinstance(data, dict) and isinstance(data.get("scores"), dict):
        data = data["scores"]
    if not isinstance(data, dict):
        return {}
    names = {}
    for d in dimensions:
        for variant in (d.key, d.title, *d.aliases):
            names[_norm(variant)] = d.key
    out = {}
    for raw_key, value in data.items():
        key = names.get(_norm(str(raw_key)))
        if key is None:
            continue
        pair = None
        if isinstance(value, (list, tuple)) and len(value) == 2:
            pair = value
        elif isinstance(value, dict):
            by = {_norm(str(k)).split()[-1] if _norm(str(k)) else "": v for k, v in value.items()}
            if "a" in by and "b" in by:
                pair = (by["a"], by["b"])
        try:
            a, b = float(pair[0]), float(pair[1])  # type: ignore[index]
        except (TypeError, ValueError):
            continue
        if rejected.keep(a, b):
            out[key] = (a, b)
    return out


def parse_scores(text: str, dimensions: Sequence[Dimension]) -> dict[str, tuple[float, float]]:
    """Score pairs `{dimension key: (A, B)}` found in a judge's answer; dimensions that do not parse are absent.

    Tried in order: a JSON object; then, for each dimension named in the text (preferring a mention at the start
    of a line), the first score pair in the text between that mention and the next dimension's; then, if no
    dimension is named at all, `[Scores]: (a, b)` pairs taken in rubric order. A pair outside the scale the judge is
    asked for (1-10), negative, NaN or infinite is rejected: its dimension counts as not parsed.
    """
    return _parse_scores(text, dimensions, _Rejected())


def _parse_scores(text: str, dimensions: Sequence[Dimension], rejected: _Rejected) -> dict[str, tuple[float, float]]:
    found = _parse_json(text, dimensions, rejected)
    if found:
        return found
    mentions = []
    for d in dimensions:
        best = None
        for variant in (d.title, *d.aliases):
            for match in _name_pattern(variant).finditer(text):
                line_start = text.rfind("\n", 0, match.start()) + 1
                prefix = text[line_start : match.start()]
                at_line_start = re.fullmatch(r"[\s#*>\-\d.)(\[]*", prefix) is not None
                rank = (0 if at_line_start else 1, match.start())
                if best is None or rank < best[0]:
                    best = (rank, match.start(), match.end())
        if best is not None:
            mentions.append((best[1], best[2], d.key))
    out: dict[str, tuple[float, float]] = {}
    if mentions:
        mentions.sort()
        for index, (_, end, key) in enumerate(mentions):
            stop = mentions[index + 1][0] if index + 1 < len(mentions) else len(text)
            segment = text[end:stop]
            for pattern in _PAIR_PATTERNS:
                match = pattern.search(segment)
                if match:
                    a, b = float(match.group(1)), float(match.group(2))
                    if rejected.keep(a, b):
                        out[key] = (a, b)
                    break
        return out
    pairs = [(float(a), float(b)) for a, b in _TAGGED.findall(text)]
    if len(pairs) <= len(dimensions):
        out = {d.key: pair for d, pair in zip(dimensions, pairs) if rejected.keep(*pair)}
    return out
