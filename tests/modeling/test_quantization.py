"""`modeling.quantization`: a 4-bit base, from the memory table at real size to the footprint measured at tiny
size."""

import torch
from transformers import AutoProcessor

from tests.fixtures.latent_models import SMALL
from tests.fixtures.latent_models import question_batch as _batch
from tests.fixtures.models import tiny_vlm_path
from trl_latent.modeling import LatentActionModel
from trl_latent.modeling.quantization import base_memory_bytes, quantised_memory_table


def test_quantised_memory_table_is_smaller_and_ordered():
    rows = {r["model"]: r for r in quantised_memory_table()}
    for row in rows.values():
        assert row["nf4_gib"] < row["int8_gib"] < row["bf16_gib"]
    # A 7B base in 4 bits leaves room on a 24 GB card for the policy (design goal of the quantised base).
    assert rows["Qwen2.5-VL-7B"]["nf4_gib"] < 6.5
    assert 15 < rows["Qwen2.5-VL-7B"]["bf16_gib"] < 16


def test_quantised_base_measured_at_tiny_size(tiny_cache):
    from transformers import BitsAndBytesConfig

    # bitsandbytes' CPU 4-bit kernels need input widths of at least one 64-wide block: use the "small" tiny model.
    vlm_path = tiny_vlm_path("small", cache_dir=tiny_cache)
    processor = AutoProcessor.from_pretrained(vlm_path)
    full = LatentActionModel.from_base(vlm_path, **SMALL)
    q4 = LatentActionModel.from_base(
        vlm_path,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
        **SMALL,
    )
    measured_full, measured_q4 = full.base.get_memory_footprint(), q4.base.get_memory_footprint()
    print(f"\ntiny base footprint: fp32 {measured_full} B, 4-bit {measured_q4} B")
    assert measured_q4 < 0.6 * measured_full
    # New modules stay in full precision; decoding runs on the quantised base.
    assert all(p.dtype == torch.float32 for p in q4.policy.parameters())
    out = q4.generate(**_batch(processor), max_new_tokens=3, do_sample_codes=False)
    assert out.completion_ids.shape == (2, 3)
    assert base_memory_bytes(full.base, 4) < base_memory_bytes(full.base, 16)
