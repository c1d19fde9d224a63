"""World-model output forms compared on the embedded task: stage 1 under each form, latent-space health after it.

The demo's pretrained tiny base (the same `pretrain_base` phase `make demo` runs) is wrapped with fresh latent modules
once per form, stage 1 (inverse dynamics warm-up) runs at the demo's size on the paired corpus, and the health
metrics (docs/metrics.md) are measured on held-out task dialogues: can the world model say the answers (with the IDM's
codes, with the best of all codes) and do the codes change what it says. Writes `world_outputs.json` and
`world_outputs.md` to `--output-dir` and prints the table (docs/model.md quotes it).

    python benchmarks/world_outputs.py --output-dir outputs/world_outputs
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FORMS = ("residual_minus_base", "merge_delta", "residual_norm", "residual", "base_plus_delta")
COLUMNS = (
    ("health/base_accuracy", "base alone"),
    ("health/world_accuracy_inverse", "answers, IDM codes"),
    ("health/world_accuracy_best", "answers, best of all codes"),
    ("health/controllability", "controllability"),
    ("health/codes_used_inverse", "IDM codes used"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/world_outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="stage-1 steps (default 150 as docs/model.md's table; --quick: 3)"
    )
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--quick", action="store_true", help="the seconds-long size of the test suite")
    parser.add_argument("--cache-dir", default=None, help="tiny-model cache (default $TRL_LATENT_CACHE)")
    args = parser.parse_args()

    import torch

    from trl_latent.experiments.pipeline import PipelineConfig, new_latent_model, prepare_task, pretrain_base
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
    rows = {}
    for form in args.forms:
        model = new_latent_model(base_path, config)
        sft_args = LatentSFTConfig(
            str(out / form),
            stage="inverse_warmup",
            world_output=form,
            max_steps=steps,
            per_device_train_batch_size=config.batch_size // 2,
            learning_rate=config.stage_learning_rate,
            lr_scheduler_type="cosine",
            seed=config.seed,
            health_samples=config.health_samples,
            **cpu_training_args(),
        )
        trainer = LatentSFTTrainer(
            model, sft_args, train_dataset=data["paired"], processing_class=processor, health_dataset=data["health"]
        )
        start = time.perf_counter()
        trainer.train()
        rows[form] = {**trainer.health, "seconds": time.perf_counter() - start}
        print(form, {k: round(v, 4) for k, v in rows[form].items()}, flush=True)

    header = "| form in stage 1 | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(COLUMNS)]
    for form, row in rows.items():
        cells = [
            f"{row[k]:.1%}" if "accuracy" in k else f"{row[k]:.0f}" if "codes_used" in k else f"{row[k]:.2f}"
            for k, _ in COLUMNS
        ]
        lines.append(f"| {form} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (out / "world_outputs.json").write_text(json.dumps({"steps": steps, "seed": args.seed, "forms": rows}, indent=2))
    (out / "world_outputs.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
