"""Backbones the benchmarks share, so every script measures the same models, and the arithmetic they are checked
against (FLOPs per decoding step from module shapes)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from trl_latent.experiments.models import tiny_vlm_path

# CPU sizes (any machine) and the released Qwen2.5-VL shapes (`3b`, `7b`: random weights, a CUDA GPU).
SIZES = ("tiny", "cpu-3b-depth", "cpu-3b-width", "3b", "7b")
CPU_SIZES = SIZES[:3]
# `cpu-3b-width`: the real Qwen2.5-VL-3B width with few layers.
WIDTH_BASE_LAYERS, WIDTH_POLICY_LAYERS = 4, 1


def _real_text(config, shape: dict, layers: int, mrope_section) -> None:
    t = config.text_config
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        setattr(t, key, shape[key])
    t.num_hidden_layers = layers
    t.layer_types = ["full_attention"] * layers
    t.rope_parameters["mrope_section"] = list(mrope_section)
    config.vision_config.out_hidden_size = shape["hidden_size"]


def bench_base(size: str, cache_dir=None):
    """(base VLM, processor, latent-model options) for a benchmark size.

    `tiny`: the unit-test VLM, latent modules of 16 codes and 1 policy layer. `cpu-3b-depth`: the real
    Qwen2.5-VL-3B depth ratio (36 base layers, 8 policy layers, 128 codes) at a CPU-friendly hidden size of 256,
    random weights, the tiny processor. `cpu-3b-width`: the real Qwen2.5-VL-3B width (hidden 2048, 16 heads, 2 KV
    heads, MLP 11008, vocabulary 151936) with 4 base layers and 1 policy layer, the tiny vision tower, random weights,
    the tiny processor. `3b` / `7b`: the released Qwen2.5-VL-3B / -7B shapes (`real_shape_vlm`), random bf16 weights
    on the CUDA GPU, the tiny processor (its special-token ids are written into the config); 8 policy layers, 128
    codes. Nothing is downloaded.
    """
    path = tiny_vlm_path("tiny", cache_dir=cache_dir)
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    if size == "tiny":
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
        latent_kwargs = dict(codebook_size=16, inverse_layers=1, policy_layers=1)
    elif size in ("cpu-3b-depth", "cpu-3b-width"):
        config = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).config
        if size == "cpu-3b-depth":
            small = dict(hidden_size=256, intermediate_size=704, num_attention_heads=4, num_key_value_heads=2)
            _real_text(config, dict(small, vocab_size=config.text_config.vocab_size), 36, [8, 12, 12])
            latent_kwargs = dict(codebook_size=128, inverse_layers=1, policy_layers=8)
        else:
            from trl_latent.modeling.tiny import REAL_SHAPES

            _real_text(config, REAL_SHAPES["3b"]["text"], WIDTH_BASE_LAYERS, [16, 24, 24])
            config.text_config.tie_word_embeddings = config.tie_word_embeddings = True  # as the released 3B
            latent_kwargs = dict(codebook_size=128, inverse_layers=1, policy_layers=WIDTH_POLICY_LAYERS)
        torch.manual_seed(0)
        base = Qwen2_5_VLForConditionalGeneration(config)
    elif size in ("3b", "7b"):
        if not torch.cuda.is_available():
            raise ValueError(f"size {size!r} builds the real Qwen2.5-VL shapes on a CUDA GPU; none is available")
        from trl_latent.modeling.tiny import real_shape_vlm

        base = real_shape_vlm(size, device="cuda", dtype=torch.bfloat16)
        tokenizer = processor.tokenizer
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            token = {"image": "<|image_pad|>", "video": "<|video_pad|>"}.get(name.split("_")[0])
            token = token or ("<|vision_start|>" if "start" in name else "<|vision_end|>")
            setattr(base.config, name, tokenizer.convert_tokens_to_ids(token))
        text = base.config.text_config
        text.bos_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        text.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        base.generation_config.eos_token_id = text.eos_token_id
        latent_kwargs = dict(codebook_size=128, inverse_layers=1, policy_layers=8)
    else:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    base.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return base.eval(), processor, latent_kwargs


# ---------------------------------------------------------------------------------------------- arithmetic
def decoder_layer_flops(hidden: int, intermediate: int, heads: int, kv_heads: int, context: int) -> int:
    """FLOPs of one decoder layer for one new token attending to `context` positions: the projections (q, k, v, o:
    `2 (2 h^2 + 2 h kv)`), the SwiGLU (`2 * 3 h i`) and attention over the cache (`4 context h`: scores and values)."""
    kv = kv_heads * (hidden // heads)
    return 2 * (2 * hidden * hidden + 2 * hidden * kv) + 2 * 3 * hidden * intermediate + 4 * context * hidden


def decoding_step_flops(
    *,
    hidden: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    layers: int,
    vocab: int,
    policy_layers: int,
    codebook_size: int,
    merge_blocks: int = 2,
    merge_intermediate: int | None = None,
    context: int = 0,
) -> dict:
    """FLOPs per decoding step from module shapes (norms, rotary and sampling left out).

    Token step: the base's layers for one token + the vocabulary projection (`2 h V`). Latent step: the same base
    layers + the policy's layers and its code head (`2 h |C|`) + the merge blocks (each a SwiGLU on concat[x, c]:
    `2 (2 * 2h * i_m + i_m h)`) + the vocabulary projection. Returns both and `ratio` = latent / token."""
    layer = decoder_layer_flops(hidden, intermediate, heads, kv_heads, context)
    vocab_projection = 2 * hidden * vocab
    token = layers * layer + vocab_projection
    merge_intermediate = merge_intermediate or intermediate
    merge = merge_blocks * 2 * (2 * 2 * hidden * merge_intermediate + merge_intermediate * hidden)
    latent = token + policy_layers * layer + 2 * hidden * codebook_size + merge
    return {"token_flops": token, "latent_flops": latent, "ratio": latent / token}


def arithmetic_ratio(model, context: int) -> dict:
    """`decoding_step_flops` for a `LatentActionModel` (its base's text shapes and its own latent options)."""
    text = model.backbone.text_config
    c = model.config
    return decoding_step_flops(
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        heads=text.num_attention_heads,
        kv_heads=text.num_key_value_heads,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        policy_layers=c.policy_layers,
        codebook_size=c.codebook_size,
        merge_blocks=c.merge_blocks,
        merge_intermediate=c.merge_intermediate_size,
        context=context,
    )


# The targets (latent / stock TRL on the same backbone).
TARGETS = {
    "rollout_vs_arithmetic": 0.10,  # decoding ratio within 10% of the arithmetic ratio, at every size
    "rollout_cpu_3b_depth": 1.1,
    "rl_step": 0.6,
    "policy_update": 0.3,
    "peak_memory": 0.6,
}


def check_targets(decoding: list[dict], rl_steps: dict[str, dict]) -> list[dict]:
    """Each target against the measured ratios: rows of (target, size, measured, limit, met). `decoding`: rows of
    `latent_decoding.measure`; `rl_steps`: `rl_step.compare` results by size. Memory: CUDA max allocated on a GPU;
    on CPU the rise of the peak RSS over the process's start (the runtime's own memory left out)."""
    rows = []
    for r in decoding:
        for name in ("latent", "latent static", "latent static compiled"):
            ratio = r["ratios"].get(f"{name} / token")
            if ratio is None:
                continue
            off = ratio / r["arithmetic_ratio"] - 1
            limit = TARGETS["rollout_vs_arithmetic"]
            rows.append(
                dict(
                    target=f"{name} decoding within 10% of arithmetic {r['arithmetic_ratio']:.2f}",
                    size=r["size"],
                    measured=ratio,
                    limit=f"{r['arithmetic_ratio'] * (1 - limit):.2f}-{r['arithmetic_ratio'] * (1 + limit):.2f}",
                    met=abs(off) <= limit,
                )
            )
            if r["size"] == "cpu-3b-depth":
                limit = TARGETS["rollout_cpu_3b_depth"]
                rows.append(
                    dict(
                        target=f"{name} decoding <= {limit}",
                        size=r["size"],
                        measured=ratio,
                        limit=f"<= {limit}",
                        met=ratio <= limit,
                    )
                )
    for size, result in rl_steps.items():
        ratios = result["latent_over_token"]
        memory = "peak_memory_over_start_mb" if "peak_memory_over_start_mb" in ratios else "peak_memory_mb"
        for target, key in (("rl_step", "step_s"), ("policy_update", "update_s"), ("peak_memory", memory)):
            limit = TARGETS[target]
            rows.append(
                dict(
                    target=f"{target.replace('_', ' ')} <= {limit}",
                    size=size,
                    measured=ratios[key],
                    limit=f"<= {limit}",
                    met=ratios[key] <= limit,
                )
            )
    return rows


def targets_table(rows: list[dict]) -> str:
    lines = ["| target | size | measured (latent / token) | required | met |", "|---|---|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['size']} | {r['measured']:.2f} | {r['limit']} | {'met' if r['met'] else 'missed'} |"
        )
    return "\n".join(lines)


def static_cache_api() -> dict[str, bool]:
    """Which of the static-cache decoding options this checkout's latent decoding accepts."""
    from trl_latent.modeling.generation import latent_generate

    params = inspect.signature(latent_generate).parameters
    return {"static": "cache_implementation" in params, "compile": "compile_step" in params}


# ------------------------------------------------------------------------------------------------ memory (Linux)
def proc_status_mb(field: str = "VmRSS") -> float:
    """A memory field of `/proc/self/status` in MB: `VmRSS` (resident now) or `VmHWM` (peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Reset the kernel's peak RSS (`VmHWM`) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


PLAN_PARTS = ("weights", "gradients", "optimizer", "reference", "activations")


def plan_memory(folder, stage: str, strategy: str, **plan_kwargs):
    """`trl-latent plan` for the saved model in `folder` with no memory limit: the `Plan` and what it predicts per
    process in MB (each part and `total`) under `strategy`."""
    from trl_latent.planning import make_plan

    plan = make_plan(str(folder), stage, zero=strategy, gpu_memory_gib=10**6, suggest=False, **plan_kwargs)
    memory = plan.memory(strategy)
    return plan, {**{k: getattr(memory, k) / 2**20 for k in PLAN_PARTS}, "total": memory.total / 2**20}


def write_results(out, result, table: str) -> None:
    """Write a benchmark's `result` as JSON to `out` and its readable table beside it (`.md`), and print the table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
