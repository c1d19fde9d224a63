"""`data.splits`: the authors' seeded shuffle and exact fractional cuts, shared by both task loaders."""

import random

import pytest

from trl_latent.data.splits import fraction_bounds, split_by_fractions


def test_fraction_bounds_are_exact_where_float_products_are_not():
    assert int(0.29 * 100) == 28  # what naive float arithmetic gives
    assert fraction_bounds(100, 0.0, 0.29) == (0, 29)
    assert fraction_bounds(36, 0.5, 0.9) == (18, 32)
    with pytest.raises(ValueError, match="0 <= start <= end <= 1"):
        fraction_bounds(10, 0.6, 0.5)


def test_split_by_fractions_shuffles_as_the_authors_do_and_cuts_without_overlap():
    items = list(range(36))
    splits = split_by_fractions(items, {"sft": (0.0, 0.5), "rl": (0.5, 0.9), "test": (0.9, 1.0)})
    expected = list(items)
    random.Random(42).shuffle(expected)  # the authors' random.seed(42); random.shuffle
    assert splits["sft"] + splits["rl"] + splits["test"] == expected
    assert [len(v) for v in splits.values()] == [18, 14, 4]
    assert split_by_fractions(items, {"all": (0.0, 1.0)}, seed=1)["all"] != expected
