"""Codebook usage metrics with exact numbers."""

import math

import pytest
import torch

from trl_latent.metrics.codebook import CodebookUsage, codebook_usage


def test_exact_usage_perplexity_and_dead_codes():
    codes = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    metrics = codebook_usage(codes, num_codes=8, return_usage=True)
    # Usage 2/8, 2/8, 4/8: entropy = 1.5 ln 2, perplexity = 2 ** 1.5.
    assert metrics["codebook/used"] == 3.0
    assert metrics["codebook/dead"] == 5.0
    assert metrics["codebook/perplexity"] == pytest.approx(2**1.5)
    assert metrics["codebook/usage"] == [2, 2, 4, 0, 0, 0, 0, 0]


def test_uniform_and_collapsed_and_mask():
    assert codebook_usage(torch.arange(16), 16)["codebook/perplexity"] == pytest.approx(16.0)
    assert codebook_usage(torch.full((3, 5, 2), 7), 128) == {
        "codebook/used": 1.0,
        "codebook/dead": 127.0,
        "codebook/perplexity": 1.0,
    }
    codes = torch.tensor([[3, 4, 0, 0]])
    mask = torch.tensor([[True, True, False, False]])  # padding filled with 0 must not count
    assert codebook_usage(codes, 8, mask=mask, return_usage=True)["codebook/usage"] == [0, 0, 0, 1, 1, 0, 0, 0]
    assert codebook_usage(codes, 8, mask=torch.zeros_like(mask))["codebook/perplexity"] == 0.0


def test_accumulator_and_bad_input():
    tracker = CodebookUsage(4)
    tracker.update(torch.tensor([0, 1]))
    tracker.update(torch.tensor([[1, 1]]))
    metrics = tracker.compute()
    p = torch.tensor([0.25, 0.75])
    assert metrics["codebook/used"] == 2.0
    assert metrics["codebook/perplexity"] == pytest.approx(math.exp(float(-(p * p.log()).sum())))
    tracker.reset()
    assert tracker.compute()["codebook/used"] == 0.0
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        codebook_usage(torch.tensor([4]), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        codebook_usage(torch.tensor([-100]), 4)
    with pytest.raises(TypeError, match="integer"):
        codebook_usage(torch.tensor([0.5]), 4)
    with pytest.raises(ValueError, match="mask has shape"):
        codebook_usage(torch.tensor([0, 1]), 4, mask=torch.tensor([True]))
