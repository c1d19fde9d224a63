"""Frozen-base states computed once per record and reused across steps and stages.

In stages 1-4 the base is frozen, so its final hidden states for a record never change: re-running the base on every
step (and in every epoch and stage) recomputes the same tensors. [`BaseStateCache`] keeps each record's states, keyed
by the record's token ids (and, for a vision-language base, the bytes of its image pixels) and by which run they come
from (with or without pixels, and the text run's positions), in a least-recently-used store with a byte budget.
[`cached_encode`] is `LatentActionModel.encode` through the cache: a batch whose records are all stored runs no base
at all; otherwise the base runs on the batch once and its records are stored.

The states of a record are the same tensor whatever batch it came in, up to the float rounding of a differently padded
batch (well below 1e-6 relative), so the losses with reused states equal those with recomputed ones
(`tests/training/test_state_cache.py`). A cache is tied to one base: its key includes a fingerprint of the base's
weights, so a cache handed from stage to stage (`LatentSFTTrainer(state_cache=...)`) never serves states of another
base.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

import torch

logger = logging.getLogger(__name__)

__all__ = ["BaseStateCache", "cached_encode"]


class BaseStateCache:
    """A least-recently-used store of per-record base states, bounded by `max_bytes`.

    Args:
        max_bytes (`int`, *optional*, defaults to `2**30`): the most bytes of states held; the least recently used
            records are dropped beyond it (a record larger than the budget is not stored).
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): where stored states live (host memory by
            default, so a GPU run spends no accelerator memory on them; they are copied back per batch).

    Attributes:
        hits, misses (`int`): records served from the store, and records whose batch ran the base.
        base_runs (`int`): base passes run through [`cached_encode`].
    """

    def __init__(self, max_bytes: int = 2**30, device="cpu"):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive (got {max_bytes}).")
        self.max_bytes = int(max_bytes)
        self.device = torch.device(device)
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.base_runs = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> torch.Tensor | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.numel() * old.element_size()
        self._entries[key] = value.detach().to(self.device, copy=True)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def base_fingerprint(model) -> str:
    """A cheap fingerprint of the base's weights (final norm, `lm_head`, the first and last layer's first parameter):
    differs between bases, and after the base trains."""
    backbone = model.backbone
    layers = backbone.text_model.layers
    parts = [backbone.final_norm.weight, backbone.lm_head.weight[:8]]
    for layer in (layers[0], layers[-1]):
        parts.append(next(layer.parameters()).flatten()[:4096])
    return _digest(*parts)[:16]


def _pixel_rows(model, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> list[slice]:
    """Each record's rows of a Qwen-VL batch's flattened `pixel_values`: its image tokens times the merge window."""
    backbone = model.backbone
    merge = getattr(model.base.config.vision_config, "spatial_merge_size", 2) ** 2
    counts = ((input_ids == backbone.image_token_id).sum(-1) * merge).tolist()
    if sum(counts) != pixel_values.shape[0]:
        return []  # videos or another layout: no per-record image key (the batch then is not cached)
    rows, start = [], 0
    for n in counts:
        rows.append(slice(start, start + n))
        start += n
    return rows


def _record_keys(model, batch: dict, run: str, fingerprint: str) -> list[str] | None:
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    pixels = batch.get("pixel_values") if run == "pixels" else None
    rows = _pixel_rows(model, ids, pixels) if pixels is not None else None
    if rows == []:
        return None
    keys = []
    for i in range(ids.shape[0]):
        parts = [ids[i][mask[i]]]
        if rows is not None:
            parts.append(pixels[rows[i]])
        keys.append(f"{fingerprint}:{run}:{_digest(*parts)}")
    return keys


def cached_encode(model, cache: BaseStateCache, batch: dict, *, with_text_states=False, pixels=True, **kwargs):
    """`model.encode` of a collated batch (no gradient through the base) with each run's per-record states taken from
    `cache` when every record of the batch is stored, else computed by one base pass and stored.

    Runs: `"pixels"` (e^{V,T}; for a text-only base the plain states) and the text run e^T (`"text-<positions>"`).
    Only the real tokens' states are stored (`attention_mask`); padded positions get zeros, which no loss reads.
    """
    fingerprint = base_fingerprint(model)  # a few KB hashed per batch: a base changed in place gets new keys
    mask = batch["attention_mask"].bool()
    runs = []
    if pixels:
        runs.append("pixels")
    if with_text_states or not pixels:
        runs.append(f"text-{kwargs.get('text_positions', 'text')}")
    given = {}
    keys = {}
    for run in runs:
        keys[run] = _record_keys(model, batch, run, fingerprint)
        stored = [cache.get(k) for k in keys[run]] if keys[run] is not None else [None]
        if all(s is not None for s in stored):
            full = torch.zeros(*mask.shape, stored[0].shape[-1], dtype=stored[0].dtype, device=mask.device)
            for i, s in enumerate(stored):
                full[i][mask[i]] = s.to(mask.device)
            given[run] = full
    out = model.encode(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("pixel_values") if pixels else None,
        batch.get("image_grid_thw") if pixels else None,
        batch.get("mm_token_type_ids"),
        with_pixels=pixels,
        with_text_states=with_text_states,
        grad_through_base=False,
        states=given.get("pixels"),
        text_states=next((v for k, v in given.items() if k != "pixels"), None),
        **kwargs,
    )
    n = mask.shape[0]
    for run in runs:
        if run in given:
            cache.hits += n
            continue
        cache.base_runs += 1
        cache.misses += n
        if keys[run] is None:
            continue
        states = out.states if run == "pixels" else out.text_states
        for i, key in enumerate(keys[run]):
            cache.put(key, states[i][mask[i]])
    return out
