"""Benchmark: latent decoding vs the base model's own `generate`, same prompts, same number of new tokens.

Latent decoding runs one base token forward plus the policy layers and the merge blocks per step (two KV caches), so
its cost over plain greedy decoding is the policy's and the merge's share. Measured in one run, each the best of
`--repeats` after a warm-up:

- `token`: the base's HF `generate` (dynamic cache), the decoding stock TRL's `GRPOTrainer` runs;
- `token static`: the same with HF's static cache (`cache_implementation="static"`), where the base supports it;
- `latent`: latent decoding with the dynamic cache;
- `latent static` and `latent static compiled`: latent decoding with the static cache (and a compiled step), when
  this checkout's `latent_generate` accepts `cache_implementation` / `compile_step`.

Reported as ratios to `token` (CPU absolute times are only indicative): of the whole call, and per decoding step
(the call minus a call for one new token, over the remaining steps: prefill left out), beside the **arithmetic ratio**: latent /
token FLOPs per decoding step from module shapes (`common.decoding_step_flops`), the ratio decoding would reach if
time followed arithmetic. Also the share of latent-decoding time spent in the policy layers.

    python benchmarks/latent_decoding.py --out outputs/bench_decoding.json
    python benchmarks/latent_decoding.py --sizes cpu-3b-width --new-tokens 16 --batch-size 4

Sizes (benchmarks/common.py): `tiny`, `cpu-3b-depth` (the Qwen2.5-VL-3B depth ratio at hidden 256),
`cpu-3b-width` (the Qwen2.5-VL-3B width, 4 base layers and 1 policy layer), and on a CUDA GPU `3b` / `7b` (the
released shapes, random weights).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import arithmetic_ratio, bench_base, static_cache_api, write_results
from PIL import Image

from trl_latent.modeling import LatentActionModel

VARIANTS = ("token", "token static", "latent", "latent static", "latent static compiled")


def _batch(processor, batch_size: int, prompt_repeat: int = 1, device="cpu"):
    texts, images = [], []
    for i in range(batch_size):
        text = "What do you see?" * (prompt_repeat + i)
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        texts.append(processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        images.append(Image.new("RGB", (56, 56), "red"))
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in batch.items()}


def _time(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up (and compilation, where there is any)
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    size: str,
    new_tokens: int,
    batch_size: int,
    repeats: int,
    cache_dir=None,
    prompt_repeat: int = 1,
    variants=None,
) -> dict:
    """One size: every decoding variant (`VARIANTS`, or those named in `variants`; `token` and `latent` always)."""
    variants = None if variants is None else {"token", "latent", *variants}
    base, processor, latent_kwargs = bench_base(size, cache_dir)
    device = base.device
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.device(device):  # the new modules are built where the base is, in its dtype
        model = LatentActionModel.from_base(base, **latent_kwargs).to(device=device, dtype=base.dtype).eval()
    batch = _batch(processor, batch_size, prompt_repeat, device)
    prompt_len = batch["input_ids"].shape[1]
    never = [10**9]  # no EOS: every decoder produces exactly `new_tokens` tokens
    api = static_cache_api()

    def token_generate(n=new_tokens, **extra):
        def run():
            with torch.no_grad():
                base.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, **extra)

        return run

    def latent_generate(n=new_tokens, **extra):
        def run():
            with torch.no_grad():
                model.generate(**batch, max_new_tokens=n, eos_token_id=never, code_top_k=32, **extra)

        return run

    options = {"token": (token_generate, {}), "token static": (token_generate, {"cache_implementation": "static"})}
    options["latent"] = (latent_generate, {})
    if api["static"]:
        options["latent static"] = (latent_generate, {"cache_implementation": "static"})
    if api["compile"]:
        options["latent static compiled"] = (latent_generate, {"cache_implementation": "static", "compile_step": True})
    options = {name: option for name, option in options.items() if variants is None or name in variants}
    runs = {name: make(**extra) for name, (make, extra) in options.items()}
    # Per decoding step: the whole call minus a call for one new token (the prompt pass and the first choice).
    times, prefill, skipped = {}, {}, {}
    for name, (make, extra) in options.items():
        try:
            times[name] = _time(runs[name], repeats, sync)
            prefill[name] = _time(make(1, **extra), repeats, sync) if new_tokens > 1 else 0.0
        except Exception as error:  # a cache this base or this torch does not support: reported, not fatal
            times.pop(name, None)
            skipped[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    per_step = {name: (times[name] - prefill[name]) / max(new_tokens - 1, 1) for name in times}
    for name in VARIANTS:
        if name not in runs:
            chosen = variants is None or name in variants
            skipped[name] = "not in this checkout's latent_generate" if chosen else "not asked for (--variants)"

    # Share of latent decoding spent in the policy layers, from forward hooks.
    spent = {"policy": 0.0}
    starts = []

    def pre_hook(*_):
        sync()
        starts.append(time.perf_counter())

    def post_hook(*_):
        sync()
        spent["policy"] += time.perf_counter() - starts.pop()

    handles = [model.policy.register_forward_pre_hook(pre_hook), model.policy.register_forward_hook(post_hook)]
    total_start = time.perf_counter()
    runs["latent"]()
    total = time.perf_counter() - total_start
    for handle in handles:
        handle.remove()
    flops = arithmetic_ratio(model, context=prompt_len + new_tokens // 2)
    token_s, latent_s = times["token"], times["latent"]
    # Ratios per decoding step (what the arithmetic ratio predicts); whole-call ratios beside them.
    ratios = {f"{name} / token": t / per_step["token"] for name, t in per_step.items() if name != "token"}
    if "token static" in times and "latent static" in times:
        ratios["latent static / token static"] = per_step["latent static"] / per_step["token static"]
    step_ratio = per_step["latent"] / per_step["token"]
    return {
        "size": size,
        "device": device.type,
        "dtype": str(base.dtype).removeprefix("torch."),
        "base_layers": base.config.text_config.num_hidden_layers,
        "policy_layers": model.config.policy_layers,
        "hidden": base.config.text_config.hidden_size,
        "vocab": base.config.text_config.vocab_size,
        "batch": batch_size,
        "prompt_tokens": prompt_len,
        "new_tokens": new_tokens,
        "times_s": times,
        "one_token_s": prefill,
        "per_step_s": per_step,
        "skipped": skipped,
        "ratios": ratios,
        "token_generate_s": token_s,
        "latent_generate_s": latent_s,
        "latent_over_token": latent_s / token_s,
        "latent_over_token_per_step": step_ratio,
        "arithmetic_ratio": flops["ratio"],
        "token_step_flops": flops["token_flops"],
        "latent_step_flops": flops["latent_flops"],
        "within_10pct_of_arithmetic": abs(step_ratio / flops["ratio"] - 1) <= 0.10,
        "policy_share": spent["policy"] / total,
    }


def run(
    sizes, new_tokens: int, batch_size: int, repeats: int, cache_dir=None, prompt_repeat: int = 1, variants=None
) -> list[dict]:
    return [measure(size, new_tokens, batch_size, repeats, cache_dir, prompt_repeat, variants) for size in sizes]


def table(rows) -> str:
    lines = [
        "| size | base layers | policy layers | prompt + new tokens | token generate (s) | latent generate (s) | "
        "latent / token | latent / token per step | arithmetic ratio | token static / token per step | "
        "latent static / token per step | latent static compiled / token per step | policy share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value, fmt):
        return "n/a" if value is None else fmt.format(value)

    for r in rows:
        q = r["ratios"]
        lines.append(
            f"| {r['size']} | {r['base_layers']} | {r['policy_layers']} | {r['prompt_tokens']} + {r['new_tokens']} | "
            f"{r['token_generate_s']:.3f} | {r['latent_generate_s']:.3f} | {r['latent_over_token']:.2f}x | "
            f"{r['latent_over_token_per_step']:.2f}x | {r['arithmetic_ratio']:.2f}x | "
            f"{cell(q.get('token static / token'), '{:.2f}x')} | {cell(q.get('latent static / token'), '{:.2f}x')} | "
            f"{cell(q.get('latent static compiled / token'), '{:.2f}x')} | {r['policy_share']:.0%} |"
        )
    notes = sorted({f"{name}: {why}" for r in rows for name, why in r["skipped"].items()})
    if notes:
        lines += ["", "Not measured: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "cpu-3b-depth"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-repeat", type=int, default=1, help="repeats of the prompt text (longer prompts)")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=None, help="decoders to time (default: all available)"
    )
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default="outputs/bench_decoding.json")
    args = parser.parse_args(argv)
    rows = run(
        args.sizes, args.new_tokens, args.batch_size, args.repeats, args.cache_dir, args.prompt_repeat, args.variants
    )
    write_results(args.out, rows, table(rows))
    return rows


if __name__ == "__main__":
    main()
