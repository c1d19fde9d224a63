"""Fixtures the test files of `trl_latent.experiments.text_roleplay` share: the real base's tokenizer."""

import pytest


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2["folder"])
