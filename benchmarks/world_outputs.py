"""World-model output forms compared on the embedded task: stage 1 under each form, latent-space health after it.

The demo's pretrained tiny base (the same `pretrain_base` phase `make demo` runs) is wrapped with fresh latent modules
once per form, stage 1 (inverse dynamics warm-up) runs at the demo's size on the paired corpus, and the health
metrics (docs/metrics.md) are measured on held-out task dialogues: can the world model say the answers (with the IDM's
codes, with the best of all codes) and do the codes change what it says. `--repeats N` (default 3) runs every form N
times on the same pretrained base, repeat i with fresh latent modules and stage 1 seeded `--seed + i`, the forms
interleaved within each repeat; the table gives each metric's median and spread (min-max) over the repeats. Writes
the JSON (every repeat's raw metrics, the machine facts, the exact command) to `--out` (default
`results/perf/world_outputs-<quick|full>.json`) and its table beside it, and prints the table (docs/model.md quotes
it). `--output-dir` holds the working files (data, the base, the stage-1 runs).

    python benchmarks/world_outputs.py --output-dir outputs/world_outputs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

FORMS = ("residual_minus_base", "merge_delta", "residual_norm", "residual", "base_plus_delta")
COLUMNS = (
    ("health/base_accuracy", "base alone"),
    ("health/world_accuracy_inverse", "answers, IDM codes"),
    ("health/world_accuracy_best", "answers, best of all codes"),
    ("health/controllability", "controllability"),
    ("health/codes_used_inverse", "IDM codes used"),
)


def _cell(key: str, values) -> str:
    from common import spread

    s = spread(values)
    if "accuracy" in key:
        fmt = "{:.1%}"
    elif "codes_used" in key:
        fmt = "{:.0f}"
    else:
        fmt = "{:.2f}"
    median = fmt.format(s["median"])
    return median if s["n"] == 1 else f"{median} ({fmt.format(s['low'])}-{fmt.format(s['high'])})"


def table(result: dict) -> str:
    """Each form's metrics after stage 1: the median over the repeats, with the spread (min-max) beside it."""
    header = "| form in stage 1 | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(COLUMNS)]
    for form in result["repeats"][0]:
        cells = [_cell(k, [r[form][k] for r in result["repeats"]]) for k, _ in COLUMNS]
        lines.append(f"| {form} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(result: dict) -> str:
    """No targets against stock TRL: the forms are compared with each other."""
    return ""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/world_outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="stage-1 steps (default 150 as docs/model.md's table; --quick: 3)"
    )
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--quick", action="store_true", help="the seconds-long size of the test suite")
    parser.add_argument("--cache-dir", default=None, help="tiny-model cache (default $TRL_LATENT_CACHE)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of every form, seeded --seed + i (3 for a spread)"
    )
    parser.add_argument("--out", default=None, help="JSON (default: results/perf/world_outputs-<quick|full>.json)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    from common import command_line, default_out, machine_facts, write_results

    command, machine = command_line("world_outputs.py", argv), machine_facts()

    import torch

    from trl_latent.experiments.shapes.pipeline import PipelineConfig, new_latent_model, prepare_task, pretrain_base
    from trl_latent.experiments.trainer_args import cpu_training_args
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    config = (PipelineConfig.quick if args.quick else PipelineConfig)(seed=args.seed, cache_dir=args.cache_dir)
    torch.set_num_threads(config.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, eval_sets, processor = prepare_task(config, out / "data")
    base_path, _ = pretrain_base(processor, data, eval_sets, config, out, evaluate=lambda *_: {})
    steps = args.steps or (config.stage_steps if args.quick else 150)
    repeats = []
    for repeat in range(args.repeats):
        seeded = replace(config, seed=args.seed + repeat)  # the latent modules' init and stage 1's data order
        rows = {}
        for form in args.forms:
            model = new_latent_model(base_path, seeded)
            sft_args = LatentSFTConfig(
                str(out / f"{form}-{repeat}"),
                stage="inverse_warmup",
                world_output=form,
                max_steps=steps,
                per_device_train_batch_size=config.batch_size // 2,
                learning_rate=config.stage_learning_rate,
                lr_scheduler_type="cosine",
                seed=seeded.seed,
                health_samples=config.health_samples,
                **cpu_training_args(),
            )
            trainer = LatentSFTTrainer(
                model,
                sft_args,
                train_dataset=data["paired"],
                processing_class=processor,
                health_dataset=data["health"],
            )
            start = time.perf_counter()
            trainer.train()
            rows[form] = {**trainer.health, "seconds": time.perf_counter() - start}
            print(repeat, form, {k: round(v, 4) for k, v in rows[form].items()}, flush=True)
        repeats.append(rows)

    size = "quick" if args.quick else "full"
    result = {
        "benchmark": "world_outputs",
        "size": size,
        "command": command,
        "machine": machine,
        "steps": steps,
        "seed": args.seed,
        "seeds": [args.seed + i for i in range(args.repeats)],
        "repeats": repeats,
    }
    write_results(args.out or default_out("world_outputs", size), result, table(result))


if __name__ == "__main__":
    main()
