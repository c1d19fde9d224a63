"""`trl_latent.metrics.stats.mean_std`: mean and sample standard deviation (divisor n - 1), as the tables report."""

import math
import statistics

import pytest

from trl_latent.metrics.stats import mean_std


def test_one_value_has_zero_std():
    assert mean_std([0.7]) == (0.7, 0.0)


def test_two_values_use_the_sample_std():
    mean, std = mean_std([1.0, 3.0])
    assert mean == 2.0
    assert std == pytest.approx(math.sqrt(2.0))  # ((1 - 2)^2 + (3 - 2)^2) / (2 - 1) = 2; the population std is 1


def test_known_numbers_and_missing_values():
    mean, std = mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert mean == 5.0
    assert std == pytest.approx(math.sqrt(32 / 7)) == pytest.approx(statistics.stdev([2, 4, 4, 4, 5, 5, 7, 9]))
    assert mean_std([None, math.nan, 1.0, 3.0]) == mean_std([1.0, 3.0])  # None and NaN are left out
    assert all(math.isnan(x) for x in mean_std([])) and all(math.isnan(x) for x in mean_std([math.nan, None]))
