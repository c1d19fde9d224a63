"""Backbones the benchmarks share, so every script measures the same models."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from trl_latent.experiments.models import tiny_vlm_path

SIZES = ("tiny", "cpu-3b-depth")


def bench_base(size: str, cache_dir=None):
    """(base VLM, processor, latent-model options) for a benchmark size.

    `tiny`: the unit-test VLM, latent modules of 16 codes and 1 policy layer. `cpu-3b-depth`: the real
    Qwen2.5-VL-3B depth ratio (36 base layers, 8 policy layers, 128 codes) at a CPU-friendly hidden size of 256,
    random weights, the tiny processor.
    """
    path = tiny_vlm_path("tiny", cache_dir=cache_dir)
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    if size == "tiny":
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
        latent_kwargs = dict(codebook_size=16, inverse_layers=1, policy_layers=1)
    elif size == "cpu-3b-depth":
        config = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).config
        t = config.text_config
        t.hidden_size, t.intermediate_size, t.num_hidden_layers = 256, 704, 36
        t.num_attention_heads, t.num_key_value_heads = 4, 2
        t.rope_parameters["mrope_section"] = [8, 12, 12]
        t.layer_types = ["full_attention"] * 36
        config.vision_config.out_hidden_size = 256
        torch.manual_seed(0)
        base = Qwen2_5_VLForConditionalGeneration(config)
        latent_kwargs = dict(codebook_size=128, inverse_layers=1, policy_layers=8)
    else:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    base.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return base.eval(), processor, latent_kwargs


def write_results(out, result, table: str) -> None:
    """Write a benchmark's `result` as JSON to `out` and its readable table beside it (`.md`), and print the table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
