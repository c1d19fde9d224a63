"""Verdicts that respect the noise: paired differences by seed and repeated timings."""

import math

import pytest

from trl_latent.experiments.verdicts import paired_verdict, range_verdict, timing_verdict


@pytest.mark.parametrize(
    ("differences", "threshold", "higher", "verdict"),
    [
        ([0.10, 0.12, 0.08], 0.0, True, "met"),  # every seed ahead, mean 0.10 vs two standard errors 0.023
        ([0.001, 0.008, 0.004], 0.0, True, "met"),  # small but steady: the noise is smaller still
        ([0.008, -0.02, 0.03], 0.0, True, "within noise"),  # signs disagree
        ([0.001, 0.002, 0.05], 0.0, True, "within noise"),  # one sign, but the mean does not clear 2 SE
        ([0.0, 0.0, 0.0], 0.0, True, "within noise"),  # a tie is not a win
        ([-0.10, -0.12, -0.08], 0.0, True, "missed"),
        ([0.06, 0.07, 0.08], 0.05, True, "met"),  # a gain of at least 0.05
        ([0.03, 0.04, 0.02], 0.05, True, "missed"),
        ([0.4, 0.45, 0.42], 0.6, False, "met"),  # at most 0.6
        ([0.7, 0.72, 0.69], 0.6, False, "missed"),
    ],
)
def test_paired_verdict(differences, threshold, higher, verdict):
    assert paired_verdict(differences, threshold=threshold, higher_is_better=higher).verdict == verdict


def test_paired_verdict_numbers_and_missing_values():
    v = paired_verdict([0.1, 0.2, 0.3])
    assert (v.n, round(v.mean, 12), round(v.std, 12)) == (3, 0.2, 0.1)
    assert math.isclose(v.standard_error, 0.1 / math.sqrt(3))
    assert v.describe() == "+0.200 ± 0.100 (3 seeds)"
    assert paired_verdict([0.5]).verdict == "n/a (one seed)"
    assert paired_verdict([None, float("nan")]).verdict == "n/a (no values)"
    assert paired_verdict([0.1, None, 0.12, 0.11]).n == 3


def test_range_verdict():
    assert range_verdict([0.40, 0.45, 0.42], 0.2, 0.7).verdict == "met"
    assert range_verdict([0.10, 0.12, 0.08], 0.2, 0.7).verdict == "missed"
    assert range_verdict([0.65, 0.75, 0.69], 0.2, 0.7).verdict == "within noise"  # straddles the top
    assert range_verdict([0.4], 0.2, 0.7).verdict == "n/a (one seed)"


def test_timing_verdict():
    assert timing_verdict([0.91, 0.95, 0.98], target=1.0).verdict == "met"
    assert timing_verdict([1.05, 1.2, 1.1], target=1.0).verdict == "missed"
    v = timing_verdict([0.91, 0.95, 1.12], target=1.0)
    assert v.verdict == "undecided" and (v.median, v.low, v.high) == (0.95, 0.91, 1.12)
    assert v.describe(2) == "median 0.95 (spread 0.91-1.12, 3 repeats)"
    assert timing_verdict([0.5, 0.6], target=1.0).verdict == "n/a (2 repeats, 3 needed)"
    assert timing_verdict([1.2, 1.3, 1.25], target=1.15, lower_is_better=False).verdict == "met"
