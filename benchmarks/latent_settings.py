"""The latent space's settings compared on the embedded task: world-output schedule, behaviour-cloning target and
stage size, on several seeds, by what stages 1-5 give before any RL.

For each seed the demo's base is pretrained once (the same `pretrain_base` phase `make demo` runs) and every setting
builds its latent space from it through stages 1-5 (`run_latent_arm` with `rl_steps=0`); stages a setting shares with
another (same fields up to that stage) are trained once, through the study's prefix cache. Reported per setting, mean
over seeds: the latent model's answers after stage 5 on the three evaluation splits (the paper's protocol: 3
generations, codes top-k 64 at temperature 0.1) and the latent-space health after stage 5 (reach with the best code,
content-position controllability, the policy's code entropy). Writes `latent_settings.json` and `latent_settings.md` to
`--output-dir` and prints the table (docs/findings.md quotes it).

    python benchmarks/latent_settings.py --seeds 0 1 --output-dir outputs/latent_settings
    # or one process per seed, then one table from both:
    python benchmarks/latent_settings.py --seeds 0 --output-dir outputs/ls_s0   # and --seeds 1 ... outputs/ls_s1
    python benchmarks/latent_settings.py --merge outputs/ls_s0 outputs/ls_s1 --output-dir outputs/latent_settings
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# name -> PipelineConfig fields, spelled out so a setting does not change with the embedded job's defaults (merge-delta
# and argmax cloning now; the library's are the authors' schedule and argmax cloning).
SETTINGS = {
    "merge_delta, argmax (embedded)": {"world_output_schedule": "merge_delta", "bc_target": "argmax"},
    "authors, argmax (library)": {"world_output_schedule": "minus_base_then_merge_delta", "bc_target": "argmax"},
    "merge_delta, soft": {"world_output_schedule": "merge_delta", "bc_target": "soft"},
    "authors, soft": {"world_output_schedule": "minus_base_then_merge_delta", "bc_target": "soft"},
    "merge_delta, soft, stage_steps 150": {
        "world_output_schedule": "merge_delta",
        "bc_target": "soft",
        "stage_steps": 150,
    },
    "merge_delta, argmax, stage_steps 150": {
        "world_output_schedule": "merge_delta",
        "bc_target": "argmax",
        "stage_steps": 150,
    },
}
SPLITS = ("id", "ood", "held_out")
HEALTH = (
    ("health/world_accuracy_best", "reach (best code)", "{:.3f}"),
    ("health/world_accuracy_policy", "policy codes", "{:.3f}"),
    ("health/content_controllability", "content controllability", "{:.2f}"),
    ("health/policy_entropy", "policy entropy", "{:.2f}"),
)


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def table(rows: dict) -> str:
    """Markdown: one row per setting, means over seeds."""
    head = ["setting"] + [f"{s} all" for s in SPLITS] + [f"{s} reward" for s in SPLITS] + [n for _, n, _ in HEALTH]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, runs in rows.items():
        cells = [f"{_mean([r['eval'][s]['all'] for r in runs]):.3f}" for s in SPLITS]
        cells += [f"{_mean([r['eval'][s]['reward'] for r in runs]):.3f}" for s in SPLITS]
        cells += [fmt.format(_mean([r["health"].get(key) for r in runs])) for key, _, fmt in HEALTH]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge(dirs, out: Path) -> None:
    """One JSON and one table from the runs of several output dirs (e.g. one process per seed)."""
    rows: dict[str, list] = {}
    for folder in dirs:
        saved = json.loads((Path(folder) / "latent_settings.json").read_text())
        for name, runs in saved["runs"].items():
            rows.setdefault(name, []).extend(runs)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({run["seed"] for runs in rows.values() for run in runs})
    (out / "latent_settings.json").write_text(
        json.dumps({"seeds": seeds, "settings": SETTINGS, "runs": rows}, indent=2, default=str)
    )
    text = table({name: runs for name, runs in rows.items() if runs})
    (out / "latent_settings.md").write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/latent_settings")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="the seconds-long size of the test suite")
    parser.add_argument("--cache-dir", default=None, help="tiny-model cache (default $TRL_LATENT_CACHE)")
    parser.add_argument("--merge", nargs="+", default=None, help="output dirs of earlier runs: one table from them")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, Path(args.output_dir))
        return

    import torch

    from trl_latent.experiments.shapes.pipeline import PipelineConfig, prepare_task, pretrain_base, run_latent_arm
    from trl_latent.experiments.shapes.prefix_cache import PrefixCache

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = PrefixCache(out / "prefix", tag="latent-settings")
    rows: dict[str, list] = {name: [] for name in args.settings}
    for seed in args.seeds:
        base_config = (PipelineConfig.quick if args.quick else PipelineConfig)(
            seed=seed, cache_dir=args.cache_dir, rl_steps=0
        )
        torch.set_num_threads(base_config.threads)
        data, eval_sets, processor = prepare_task(base_config, out / f"data-s{seed}")
        base_path, _ = pretrain_base(processor, data, eval_sets, base_config, out / f"s{seed}", cache)
        for name in args.settings:
            config = replace(base_config, **SETTINGS[name])
            start = time.perf_counter()
            arm = run_latent_arm(base_path, processor, data, eval_sets, config, out / f"s{seed}" / "latent", cache)
            run = {
                "seed": seed,
                "seconds": time.perf_counter() - start,
                "eval": {s: arm["eval_sft"][s] for s in SPLITS},
                "health": arm["stages"]["world_sft"]["health"],
                "health_after": {stage: entry["health"] for stage, entry in arm["stages"].items()},
            }
            rows[name].append(run)
            print(name, seed, {s: round(run["eval"][s]["all"], 3) for s in SPLITS}, flush=True)
            (out / "latent_settings.json").write_text(
                json.dumps({"seeds": args.seeds, "settings": SETTINGS, "runs": rows}, indent=2, default=str)
            )
    text = table({name: runs for name, runs in rows.items() if runs})
    (out / "latent_settings.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
