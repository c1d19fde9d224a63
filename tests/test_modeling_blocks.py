"""`modeling.modules` (the codebook, Gumbel straight-through, the Gaussian NLL, entropies) and `modeling.backbone`
(which bases are supported and how they load)."""

import math

import pytest
import torch

from trl_latent.modeling.backbone import (
    CAUSAL_LM_MODEL_TYPES,
    VLM_MODEL_TYPES,
    base_model_class,
    check_supported,
)
from trl_latent.modeling.modules import Codebook, entropy_from_logits, gaussian_nll, gumbel_straight_through


def test_gumbel_straight_through_is_one_hot_forward_with_a_relaxed_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, requires_grad=True)
    sample = gumbel_straight_through(logits, temperature=2.0)
    assert torch.equal(sample.sum(-1), torch.ones(5)) and set(sample.unique().tolist()) <= {0.0, 1.0}
    (sample * torch.arange(7.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # the gradient of the relaxed sample flows


def test_codebook_indices_and_one_hots_give_the_same_vectors():
    codebook = Codebook(num_codes=6, dim=4)
    codes = torch.tensor([[0, 5, 2]])
    one_hot = torch.nn.functional.one_hot(codes, 6).float()
    assert torch.allclose(codebook(codes), codebook(one_hot)) and codebook(codes).shape == (1, 3, 4)


def test_gaussian_nll_and_entropy_match_their_formulas():
    mean, logvar, target = torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)
    assert torch.equal(gaussian_nll(mean, logvar, target), torch.full((2,), 3.0))  # sum of (0 - 1)^2 * 1 + 0
    assert torch.allclose(gaussian_nll(mean, torch.full((2, 3), 2.0), mean), torch.full((2,), 6.0))
    assert entropy_from_logits(torch.zeros(8)).item() == pytest.approx(math.log(8))
    assert entropy_from_logits(torch.tensor([100.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_supported_bases_and_their_loader_classes():
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    assert all(base_model_class(t) is AutoModelForImageTextToText for t in VLM_MODEL_TYPES)
    assert all(base_model_class(t) is AutoModelForCausalLM for t in CAUSAL_LM_MODEL_TYPES)
    with pytest.raises(NotImplementedError, match=r"type 'gemma3'.*text-only causal LMs \('qwen2', 'llama'\)"):
        check_supported("gemma3")
