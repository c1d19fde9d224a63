"""Memory of a frozen base under bitsandbytes quantisation, computed from a config on the `meta` device.

bitsandbytes replaces the `nn.Linear` layers of the base (all but `lm_head`, which transformers keeps in full
precision) with 8-bit or 4-bit layers; embeddings, norms and the vision patch embedding stay in the compute dtype.
"""

from __future__ import annotations

import torch
from torch import nn

# Bytes per quantised weight, including the per-block statistics bitsandbytes stores:
# 8-bit LLM.int8: 1 byte + one fp32 scale per output row (negligible); 4-bit NF4/FP4: 0.5 byte + one fp32 absmax per
# 64-weight block (0.0625 byte), or 8-bit absmax plus a small second-level table with double quantisation.
BYTES_PER_WEIGHT = {16: 2.0, 8: 1.0, 4: 0.5 + 4 / 64}
BYTES_PER_WEIGHT_4BIT_DOUBLE_QUANT = 0.5 + 1 / 64 + 4 / (64 * 256)


def base_memory_bytes(base: nn.Module, bits: int = 16, double_quant: bool = False) -> float:
    """Weight memory of a base model (built on `meta` or real) if its linear layers are stored in `bits` bits and
    everything else in 16 bits. `bits=16` is the plain bf16 footprint."""
    if bits not in BYTES_PER_WEIGHT:
        raise ValueError(f"bits must be one of {sorted(BYTES_PER_WEIGHT)} (got {bits}).")
    quantised = other = 0
    linear_params = set()
    for name, module in base.named_modules():
        if isinstance(module, nn.Linear) and not name.endswith("lm_head"):
            linear_params.add(id(module.weight))
    seen = set()
    for p in base.parameters():
        if id(p) in seen:  # tied weights count once
            continue
        seen.add(id(p))
        if id(p) in linear_params:
            quantised += p.numel()
        else:
            other += p.numel()
    per_weight = BYTES_PER_WEIGHT[bits]
    if bits == 4 and double_quant:
        per_weight = BYTES_PER_WEIGHT_4BIT_DOUBLE_QUANT
    return quantised * per_weight + other * 2.0


def quantised_memory_table(sizes=("3b", "7b")) -> list[dict]:
    """Base weight memory (GiB) of the real Qwen2.5-VL shapes in bf16, 8-bit and 4-bit (computed on `meta`)."""
    from .real_shapes import real_shape_vlm

    rows = []
    for size in sizes:
        base = real_shape_vlm(size, device="meta", dtype=torch.bfloat16)
        gib = 1024**3
        rows.append(
            {
                "model": f"Qwen2.5-VL-{size.upper()}",
                "bf16_gib": base_memory_bytes(base, 16) / gib,
                "int8_gib": base_memory_bytes(base, 8) / gib,
                "nf4_gib": base_memory_bytes(base, 4) / gib,
                "nf4_double_quant_gib": base_memory_bytes(base, 4, double_quant=True) / gib,
            }
        )
    return rows
