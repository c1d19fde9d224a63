"""Benchmark: latent decoding vs the base model's own `generate`, same prompts, same number of new tokens.

Latent decoding runs one base token forward plus the policy layers per step (two KV caches), so its cost over plain
greedy decoding is the policy's share. Reported as ratios (CPU absolute times are only indicative); also the share of
latent-decoding time spent in the policy layers.

    python benchmarks/latent_decoding.py --out outputs/bench_decoding.json

Sizes: `tiny` (the unit-test model) and `cpu-3b-depth`: the real Qwen2.5-VL-3B depth ratio (36 base layers, 8
policy layers) at a CPU-friendly width (hidden 256), random weights.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import bench_base, write_results
from PIL import Image

from trl_latent.modeling import LatentActionModel


def _batch(processor, batch_size: int):
    texts, images = [], []
    for i in range(batch_size):
        msgs = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What do you see?" * (1 + i)}]}
        ]
        texts.append(processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        images.append(Image.new("RGB", (56, 56), "red"))
    return dict(processor(text=texts, images=images, return_tensors="pt", padding=True))


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(size: str, new_tokens: int, batch_size: int, repeats: int, cache_dir=None) -> dict:
    base, processor, latent_kwargs = bench_base(size, cache_dir)
    model = LatentActionModel.from_base(base, **latent_kwargs).eval()
    batch = _batch(processor, batch_size)
    never = [10**9]  # no EOS: both decoders produce exactly `new_tokens` tokens

    def token_generate():
        with torch.no_grad():
            base.generate(
                **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None
            )

    def latent_generate():
        model.generate(**batch, max_new_tokens=new_tokens, eos_token_id=never, code_top_k=32)

    token_s = _time(token_generate, repeats)
    latent_s = _time(latent_generate, repeats)
    # Share of latent decoding spent in the policy layers, from forward hooks.
    spent = {"policy": 0.0}
    starts = []

    def pre_hook(*_):
        starts.append(time.perf_counter())

    def post_hook(*_):
        spent["policy"] += time.perf_counter() - starts.pop()

    handles = [model.policy.register_forward_pre_hook(pre_hook), model.policy.register_forward_hook(post_hook)]
    total_start = time.perf_counter()
    latent_generate()
    total = time.perf_counter() - total_start
    for handle in handles:
        handle.remove()
    return {
        "size": size,
        "base_layers": base.config.text_config.num_hidden_layers,
        "policy_layers": model.config.policy_layers,
        "hidden": base.config.text_config.hidden_size,
        "batch": batch_size,
        "new_tokens": new_tokens,
        "token_generate_s": token_s,
        "latent_generate_s": latent_s,
        "latent_over_token": latent_s / token_s,
        "policy_share": spent["policy"] / total,
    }


def run(sizes, new_tokens: int, batch_size: int, repeats: int, cache_dir=None) -> list[dict]:
    return [measure(size, new_tokens, batch_size, repeats, cache_dir) for size in sizes]


def table(rows) -> str:
    lines = [
        "| size | base layers | policy layers | token generate (s) | latent generate (s) | latent / token | policy share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['base_layers']} | {r['policy_layers']} | {r['token_generate_s']:.3f} | "
            f"{r['latent_generate_s']:.3f} | {r['latent_over_token']:.2f}x | {r['policy_share']:.0%} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "cpu-3b-depth"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="outputs/bench_decoding.json")
    args = parser.parse_args(argv)
    rows = run(args.sizes, args.new_tokens, args.batch_size, args.repeats)
    write_results(args.out, rows, table(rows))
    return rows


if __name__ == "__main__":
    main()
