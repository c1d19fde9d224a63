"""The released Qwen2.5-VL-3B-Instruct and -7B-Instruct shapes, held offline: their configs (for `trl-latent plan`'s
parameter and memory counts) and models with those shapes on the `meta` device or with random weights (for GPU
benchmarks; never for quality). Nothing is downloaded.
"""

from __future__ import annotations

import torch

_VISION_QWEN25 = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
    hidden_act="silu",
)
# Values from the released `config.json` of Qwen/Qwen2.5-VL-{3B,7B}-Instruct.
REAL_SHAPES = {
    "3b": dict(
        text=dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        out_hidden_size=2048,
        tie_word_embeddings=True,
    ),
    "7b": dict(
        text=dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
        out_hidden_size=3584,
        tie_word_embeddings=False,
    ),
}


def real_shape_config(size: str):
    """The `Qwen2_5_VLConfig` of Qwen2.5-VL-3B-Instruct (`"3b"`) or -7B-Instruct (`"7b"`)."""
    from transformers import Qwen2_5_VLConfig

    key = size.lower()
    if key not in REAL_SHAPES:
        raise ValueError(f"Unknown Qwen2.5-VL size {size!r}; choose one of {sorted(REAL_SHAPES)}.")
    shape = REAL_SHAPES[key]
    text = dict(
        shape["text"],
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        bos_token_id=151643,
        eos_token_id=151645,
    )
    vision = dict(_VISION_QWEN25, out_hidden_size=shape["out_hidden_size"])
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=shape["tie_word_embeddings"],
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
    )


def real_shape_vlm(size: str, device: str | torch.device = "meta", dtype=torch.bfloat16, seed: int = 0):
    """A Qwen2.5-VL with the real 3B/7B shapes: on `meta` (no allocation, for counting) or with random weights on
    `device` (for GPU benchmarks; never for quality)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = real_shape_config(size)
    config.text_config.dtype = dtype
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model
