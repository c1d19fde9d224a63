"""GPU check: the decoding and RL-step benchmarks at the real Qwen2.5-VL-3B and -7B shapes, in one run.

On a machine with one CUDA GPU and no network: builds the released 3B and 7B shapes with random bf16 weights
(`trl_latent.modeling.real_shapes.real_shape_vlm`, the tiny processor; nothing is downloaded), then per size

1. latent decoding vs the base's HF `generate` (dynamic and static caches, and the latent static cache compiled when
   this checkout has it): prompts of a few hundred tokens with an image, 256 new tokens, 8 sequences;
2. one RL step of stock TRL `GRPOTrainer` vs `LatentGRPOTrainer` (a 2-step run each under bf16: a warm-up step and a
   measured one, `--repeats` times in turn), 1 prompt x 8 generations of 256 tokens, with the static-cache runs beside them; the latent run also
   checks `trl-latent plan`'s memory prediction against `torch.cuda.max_memory_allocated`.

Writes one JSON (`--out`) and one markdown table beside it (`.md`), with every target's median and spread over
`--repeats` repeats (default 3) and its verdict (met, missed, undecided). It has not run on a GPU yet; `--sizes 3b`
is the shorter first try.

Without CUDA (or with `--tiny`) it runs the same path at the tiny size on the CPU in well under a minute of compute:
the CI test of this script (tests/project/test_benchmarks.py).

    bash benchmarks/gpu_check.sh                      # one CUDA GPU: 3b and 7b
    bash benchmarks/gpu_check.sh --sizes 3b --out outputs/gpu_check_3b.json
    bash benchmarks/gpu_check.sh --tiny               # CPU fallback
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import latent_decoding  # noqa: E402
import rl_step  # noqa: E402
import torch  # noqa: E402
from common import check_targets, static_cache_api, targets_table, write_results  # noqa: E402

# (decoding: new tokens, batch, prompt repeats; RL: new tokens, generations, prompt repeats)
REALISTIC = dict(new_tokens=256, batch=8, prompt_repeat=60, generations=8)
TINY = dict(new_tokens=4, batch=2, prompt_repeat=1, generations=2)


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def run(sizes, tiny: bool, out, cache_dir=None, repeats: int = 3) -> dict:
    shape = TINY if tiny else REALISTIC
    start = time.perf_counter()
    decoding = latent_decoding.run(
        sizes,
        shape["new_tokens"],
        shape["batch"],
        repeats=repeats,
        cache_dir=cache_dir,
        prompt_repeat=shape["prompt_repeat"],
    )
    variants = ["token-static"]
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig

    if hasattr(LatentGRPOConfig, "latent_cache_implementation"):
        variants.append("latent-static")
        if hasattr(LatentGRPOConfig, "compile_latent_step") and not tiny:  # compiling on a CPU takes minutes
            variants.append("latent-static-compiled")
    rl = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            args = [
                *("--size", size, "--prompts", "1", "--generations", str(shape["generations"])),
                *("--new-tokens", str(shape["new_tokens"]), "--prompt-repeat", str(shape["prompt_repeat"])),
                *("--repeats", str(repeats), "--steps", "1", "--out", str(Path(tmp) / f"rl_{size}.json")),
                *("--variants", *variants),
            ]
            if cache_dir:
                args += ["--cache-dir", str(cache_dir)]
            rl[size] = rl_step.main(args)
    targets = check_targets(decoding, rl)
    result = {
        "device": _device(),
        "cuda": torch.cuda.is_available(),
        "tiny": tiny,
        "sizes": list(sizes),
        "repeats": repeats,
        "shape": shape,
        "static_cache_api": static_cache_api(),
        "wall_s": time.perf_counter() - start,
        "decoding": decoding,
        "rl_step": rl,
        "targets": targets,
    }
    write_results(out, result, table(result))
    return result


def table(result: dict) -> str:
    lines = [f"# GPU check: {result['device']}", ""]
    lines.append(f"Sizes {', '.join(result['sizes'])}; {json.dumps(result['shape'])}; {result['wall_s']:.0f} s.")
    lines += ["", "## Latent decoding"]
    for row in result["decoding"]:
        lines += ["", latent_decoding.table(row)]
    for size, rl in result["rl_step"].items():
        lines += ["", f"## One RL step: {size}", "", rl_step.table(rl)]
    lines += ["", "## Targets", "", targets_table(result["targets"])]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=None, help="default: 3b 7b on CUDA, tiny otherwise")
    parser.add_argument("--tiny", action="store_true", help="the CPU fallback at tiny size (automatic without CUDA)")
    parser.add_argument("--cache-dir", default=None, help="where the tiny processor is built (default: its cache)")
    parser.add_argument("--out", default="outputs/gpu_check.json")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (3 for a verdict)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    tiny = args.tiny or not torch.cuda.is_available()
    if tiny and not args.tiny:
        print("gpu_check: no CUDA GPU, running the CPU fallback at tiny size")
    sizes = args.sizes or (["tiny"] if tiny else ["3b", "7b"])
    return run(sizes, tiny, args.out, args.cache_dir, args.repeats)


if __name__ == "__main__":
    main()
