"""Fixtures the test files of `trl_latent.modeling` share: the tiny VLM's folder, its processor, and a fresh latent model
on it (`SMALL`, seed 0, in eval mode)."""

import pytest
import torch
from transformers import AutoProcessor

from tests.fixtures.latent_models import SMALL
from tests.fixtures.models import tiny_vlm_path
from trl_latent.modeling.model import LatentActionModel


@pytest.fixture(scope="module")
def vlm_path(tiny_cache):
    return tiny_vlm_path("tiny", cache_dir=tiny_cache)


@pytest.fixture(scope="module")
def processor(vlm_path):
    return AutoProcessor.from_pretrained(vlm_path)


@pytest.fixture
def model(vlm_path):
    torch.manual_seed(0)
    return LatentActionModel.from_base(vlm_path, **SMALL).eval()
