"""Benchmark: latent decoding vs the base model's own `generate`, same prompts, same number of new tokens.

Latent decoding runs one base token forward plus the policy layers and the merge blocks per step (two KV caches), so
its cost over plain greedy decoding is the policy's and the merge's share. Measured in one run: every decoder is
warmed up once, then timed in `--repeats` interleaved repeats (each repeat times every decoder in turn, the order
reversed on every other repeat), and every ratio is reported as the median and the spread (min-max) over the repeats:

- `token`: the base's HF `generate` (dynamic cache), the decoding stock TRL's `GRPOTrainer` runs;
- `token static`: the same with HF's static cache (`cache_implementation="static"`), where the base supports it;
- `latent`: latent decoding with the dynamic cache;
- `latent static` and `latent static compiled`: latent decoding with the static cache (and a compiled step), when
  this checkout's `latent_generate` accepts `cache_implementation` / `compile_step`.

Reported as ratios to `token` of the same repeat (CPU absolute times are only indicative): of the whole call, and per decoding step
(the call minus a call for one new token, over the remaining steps: prefill left out), beside the **arithmetic ratio**: latent /
token FLOPs per decoding step from module shapes (`common.decoding_step_flops`), the ratio decoding would reach if
time followed arithmetic. Also the share of latent-decoding time spent in the policy layers.

    python benchmarks/latent_decoding.py                      # results/perf/latent_decoding-{tiny,cpu-3b-depth}.json
    python benchmarks/latent_decoding.py --sizes cpu-3b-width --new-tokens 16 --batch-size 4

The JSON (one per size, `results/perf/latent_decoding-<size>.json` unless `--out`) holds every repeat's raw times,
the machine facts and the exact command; the targets (`common.decoding_targets`) get their verdicts from
`trl_latent.experiments.verdicts.timing_verdict` (3 repeats at least).

Sizes (benchmarks/common.py): `tiny`, `cpu-3b-depth` (the Qwen2.5-VL-3B depth ratio at hidden 256),
`cpu-3b-width` (the Qwen2.5-VL-3B width, 4 base layers and 1 policy layer), and on a CUDA GPU `3b` / `7b` (the
released shapes, random weights).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import (
    SIZES,
    arithmetic_ratio,
    bench_base,
    command_line,
    decoding_targets,
    default_out,
    machine_facts,
    ratio_cell,
    repeat_order,
    spread,
    static_cache_api,
    targets_table,
    write_results,
)
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


def _time_once(fn, sync=lambda: None) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(
    size: str,
    new_tokens: int,
    batch_size: int,
    repeats: int,
    cache_dir=None,
    prompt_repeat: int = 1,
    variants=None,
) -> dict:
    """One size: every decoding variant (`VARIANTS`, or those named in `variants`; `token` and `latent` always),
    each warmed up once, then `repeats` interleaved repeats: in each, every variant's whole call and its one-token
    call are timed once, in turn (the order reversed on every other repeat), so load that drifts during the run hits
    every variant alike. Ratios are per repeat, to the same repeat's `token`."""
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
    # Per decoding step: the whole call minus a call for one new token (the prompt pass and the first choice).
    calls = {name: (make(**extra), make(1, **extra)) for name, (make, extra) in options.items()}
    skipped = {}
    for name, (whole, one) in list(calls.items()):
        try:  # warm-up (and compilation, where there is any)
            whole()
            one()
        except Exception as error:  # a cache this base or this torch does not support: reported, not fatal
            if name in ("token", "latent"):
                raise
            del calls[name]
            skipped[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    names = list(calls)
    measured = []
    for i in range(repeats):
        repeat = {}
        for name in repeat_order(names, i):
            whole, one = calls[name]
            repeat[name] = {"call_s": _time_once(whole, sync), "one_token_s": _time_once(one, sync)}
        measured.append({name: repeat[name] for name in names})
    for name in VARIANTS:
        if name not in options:
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
    calls["latent"][0]()
    total = time.perf_counter() - total_start
    for handle in handles:
        handle.remove()
    flops = arithmetic_ratio(model, context=prompt_len + new_tokens // 2)
    row = {
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
        "repeats": measured,
        "skipped": skipped,
        "arithmetic_ratio": flops["ratio"],
        "token_step_flops": flops["token_flops"],
        "latent_step_flops": flops["latent_flops"],
        "policy_share": spent["policy"] / total,
    }
    return {**row, **derived(row)}


def derived(row: dict) -> dict:
    """What the raw repeats give, per repeat: each variant's time per decoding step (the whole call minus the
    one-token call, over the remaining steps), the per-step ratios to `token` (and latent static to token static)
    and the whole-call ratios to `token`."""
    steps = max(row["new_tokens"] - 1, 1)
    per_step = [
        {name: (t["call_s"] - (t["one_token_s"] if row["new_tokens"] > 1 else 0.0)) / steps for name, t in r.items()}
        for r in row["repeats"]
    ]
    names = list(row["repeats"][0]) if row["repeats"] else []
    ratios = {f"{name} / token": [p[name] / p["token"] for p in per_step] for name in names if name != "token"}
    if "token static" in names and "latent static" in names:
        ratios["latent static / token static"] = [p["latent static"] / p["token static"] for p in per_step]
    call_ratios = {
        f"{name} / token": [r[name]["call_s"] / r["token"]["call_s"] for r in row["repeats"]]
        for name in names
        if name != "token"
    }
    return {"per_step_s": per_step, "ratios": ratios, "call_ratios": call_ratios}


def run(
    sizes, new_tokens: int, batch_size: int, repeats: int, cache_dir=None, prompt_repeat: int = 1, variants=None
) -> list[dict]:
    return [measure(size, new_tokens, batch_size, repeats, cache_dir, prompt_repeat, variants) for size in sizes]


def table(row: dict) -> str:
    """One size: every variant's median times and its ratios to `token` (median and spread over the repeats), computed
    from the raw repeats."""
    row = {**row, **derived(row)}
    n = len(row["repeats"])
    lines = [
        f"`{row['size']}` ({row['base_layers']} base layers, {row['policy_layers']} policy layer(s), hidden "
        f"{row['hidden']}), batch {row['batch']}, {row['prompt_tokens']} prompt + {row['new_tokens']} new tokens, "
        f"{row['device']} {row['dtype']}; {n} interleaved repeats after a warm-up: medians, and the spread (min-max) "
        f"of the ratios. Arithmetic ratio (latent / token FLOPs per decoding step) {row['arithmetic_ratio']:.2f}; "
        f"policy share of latent decoding {row['policy_share']:.0%}.",
        "",
        "| decoder | whole call (s) | per decoding step (ms) | whole call / token | per step / token |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in row["repeats"][0]:
        call = spread(r[name]["call_s"] for r in row["repeats"])["median"]
        step = spread(p[name] for p in row["per_step_s"])["median"]
        whole = ratio_cell(row["call_ratios"][f"{name} / token"]) if name != "token" else "1x"
        per = ratio_cell(row["ratios"][f"{name} / token"]) if name != "token" else "1x"
        lines.append(f"| {name} | {call:.3f} | {step * 1000:.1f} | {whole} | {per} |")
    if "latent static / token static" in row["ratios"]:
        lines += [
            "",
            f"latent static / token static per step: {ratio_cell(row['ratios']['latent static / token static'])}.",
        ]
    notes = sorted(f"{name}: {why}" for name, why in row["skipped"].items())
    if notes:
        lines += ["", "Not measured: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def targets(row: dict) -> str:
    return targets_table(decoding_targets({**row, **derived(row)}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "cpu-3b-depth"], choices=list(SIZES))
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved repeats of every decoder (3 for a verdict)"
    )
    parser.add_argument("--prompt-repeat", type=int, default=1, help="repeats of the prompt text (longer prompts)")
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=VARIANTS,
        default=None,
        help="decoders to time besides token and latent (default: all available; none named: those two alone)",
    )
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--out",
        default=None,
        help="JSON to write, one per size: a path with {size} in it, or a plain path with one size "
        "(default: results/perf/latent_decoding-{size}.json)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.new_tokens < 2:
        parser.error("--repeats must be at least 1 and --new-tokens at least 2 (a decoding step is timed)")
    if args.out and "{size}" not in args.out and len(args.sizes) > 1:
        parser.error("one JSON per size: give --out a path with {size} in it, or one size")
    command = command_line("latent_decoding.py", argv)
    rows = []
    for size in args.sizes:
        machine = machine_facts()
        row = measure(
            size, args.new_tokens, args.batch_size, args.repeats, args.cache_dir, args.prompt_repeat, args.variants
        )
        result = {"benchmark": "latent_decoding", "size": size, "command": command, "machine": machine, **row}
        out = args.out.format(size=size) if args.out else default_out("latent_decoding", size)
        write_results(out, result, table(result) + "\n\n" + targets(result))
        rows.append(result)
    return rows


if __name__ == "__main__":
    main()
