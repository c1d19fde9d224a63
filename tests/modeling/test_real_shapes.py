"""`modeling.real_shapes`: the real Qwen2.5-VL-3B/7B shapes on the `meta` device, counted by hand."""

import pytest

from trl_latent.modeling.real_shapes import REAL_SHAPES, real_shape_vlm


def _expected_parameters(config) -> dict[str, int]:
    """Qwen2.5-VL parameter count by hand, from the config alone."""
    text, vision = config.text_config, config.vision_config
    d, inter, vocab = text.hidden_size, text.intermediate_size, text.vocab_size
    head_dim = d // text.num_attention_heads
    kv = text.num_key_value_heads * head_dim
    attention = (d * d + d) + 2 * (d * kv + kv) + d * d  # q, k, v with biases; o_proj without
    mlp = 3 * d * inter  # gate, up, down; no biases
    norms = 2 * d  # input and post-attention RMSNorm
    layers = text.num_hidden_layers * (attention + mlp + norms)
    embeddings = vocab * d
    lm_head = 0 if config.tie_word_embeddings else vocab * d
    final_norm = d

    v, v_inter = vision.hidden_size, vision.intermediate_size
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2 * v  # Conv3d, no bias
    block = 2 * v + (v * 3 * v + 3 * v) + (v * v + v) + 2 * (v * v_inter + v_inter) + (v_inter * v + v)
    merged = v * vision.spatial_merge_size**2
    merger = v + (merged * merged + merged) + (merged * vision.out_hidden_size + vision.out_hidden_size)
    vision_total = patch + vision.depth * block + merger
    text_total = embeddings + layers + final_norm + lm_head
    return {"text": text_total, "vision": vision_total, "total": text_total + vision_total}


@pytest.mark.parametrize(("size", "published"), [("3b", 3_754_622_976), ("7b", 8_292_166_656)])
def test_real_shapes_on_meta_match_hand_count(size, published):
    model = real_shape_vlm(size, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    counted = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    expected = _expected_parameters(model.config)
    vision_counted = sum(p.numel() for p in model.model.visual.parameters())
    print(f"Qwen2.5-VL-{size.upper()}: {counted:,} parameters (vision {vision_counted:,}); by hand {expected}")
    assert vision_counted == expected["vision"]
    assert counted == expected["total"] == published
    assert model.config.tie_word_embeddings is REAL_SHAPES[size]["tie_word_embeddings"]
