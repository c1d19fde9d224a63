"""Codebook health: how many latent actions (codes) are in use and how evenly.

`codebook/used` counts the codes that occur, `codebook/dead` the ones that never do, and `codebook/perplexity` is
`exp` of the entropy of the usage distribution: it equals the number of codes when all are used equally and 1 when a
single code takes every step (a collapsed codebook).

```python
>>> import torch
>>> from trl_latent.metrics.codebook import codebook_usage
>>> codebook_usage(torch.tensor([[0, 0, 1, 1]]), num_codes=4)
{'codebook/used': 2.0, 'codebook/dead': 2.0, 'codebook/perplexity': 2.0}
```
"""

from __future__ import annotations

import math

import torch


def code_counts(codes: torch.Tensor, num_codes: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How often each code occurs among the (unmasked) entries of `codes`: a `(num_codes,)` LongTensor."""
    if codes.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor of code indices, got dtype {codes.dtype}.")
    if mask is not None:
        if mask.shape != codes.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)} but codes have shape {tuple(codes.shape)}.")
        codes = codes[mask.bool()]
    codes = codes.reshape(-1).long()
    if codes.numel() and (codes.min() < 0 or codes.max() >= num_codes):
        raise ValueError(
            f"codes must lie in [0, {num_codes}), found values in [{int(codes.min())}, {int(codes.max())}]; mask out "
            f"padding positions instead of filling them with an out-of-range index."
        )
    return torch.bincount(codes.cpu(), minlength=num_codes)


def usage_from_counts(counts: torch.Tensor, return_usage: bool = False) -> dict:
    """The codebook metrics of a `(num_codes,)` count vector. With no codes at all, perplexity is reported as 0."""
    counts = counts.double()
    total = counts.sum()
    used = int((counts > 0).sum())
    if total > 0:
        p = counts[counts > 0] / total
        perplexity = math.exp(float(-(p * p.log()).sum()))
    else:
        perplexity = 0.0
    metrics = {
        "codebook/used": float(used),
        "codebook/dead": float(counts.numel() - used),
        "codebook/perplexity": perplexity,
    }
    if return_usage:
        metrics["codebook/usage"] = counts.long().tolist()
    return metrics


def codebook_usage(
    codes: torch.Tensor, num_codes: int, mask: torch.Tensor | None = None, return_usage: bool = False
) -> dict:
    """Codebook metrics of a batch of codes.

    Args:
        codes (`torch.LongTensor`):
            Code indices of any shape, e.g. `(batch, steps)`.
        num_codes (`int`):
            Size of the codebook |C|.
        mask (`torch.Tensor`, *optional*):
            Same shape as `codes`; only entries where it is true count (e.g. the completion mask).
        return_usage (`bool`, *optional*, defaults to `False`):
            Also return the per-code counts under `codebook/usage` (a list, for tables rather than scalar logs).
    """
    return usage_from_counts(code_counts(codes, num_codes, mask), return_usage)


class CodebookUsage:
    """Accumulates code counts over several batches (dead codes over one small batch say little)."""

    def __init__(self, num_codes: int):
        self.num_codes = num_codes
        self.counts = torch.zeros(num_codes, dtype=torch.long)

    def update(self, codes: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.counts += code_counts(codes, self.num_codes, mask)

    def compute(self, return_usage: bool = False) -> dict:
        return usage_from_counts(self.counts, return_usage)

    def reset(self) -> None:
        self.counts.zero_()


CODE_HISTOGRAM_TAG = "latent/code_usage"


def log_code_histogram(callbacks, counts: torch.Tensor, step: int, tag: str = CODE_HISTOGRAM_TAG) -> list[str]:
    """Send per-code usage `counts` (a `(num_codes,)` count vector) as a histogram over code ids to each Trainer logger
    among `callbacks` that draws one: TensorBoard (a callback with a `tb_writer`, `add_histogram`) and wandb (a
    callback whose `_wandb` has a run, `wandb.Histogram`). Returns the names of the callbacks it logged to."""
    import numpy as np

    counts = counts.detach().cpu().numpy()
    edges = np.arange(len(counts) + 1, dtype=np.float64) - 0.5  # one bin per code id
    logged = []
    for callback in callbacks:
        writer = getattr(callback, "tb_writer", None)
        if writer is not None:
            writer.add_histogram(tag, np.repeat(np.arange(len(counts)), counts), step, bins=edges)
            logged.append(type(callback).__name__)
        wandb = getattr(callback, "_wandb", None)
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.log({tag: wandb.Histogram(np_histogram=(counts, edges)), "train/global_step": step})
            logged.append(type(callback).__name__)
    return logged
