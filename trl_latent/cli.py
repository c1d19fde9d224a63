"""The `trl-latent` command line: a small dispatcher over subcommands.

```
trl-latent demo                      # the embedded end-to-end job: token vs latent RL
trl-latent token-baseline --size tiny --sft-steps 40 --grpo-steps 5
trl-latent write-synthetic data/shapes --seed 0
trl-latent plan Qwen/Qwen2.5-VL-7B-Instruct --stage 5 --zero zero3 --num-gpus 8 --gpu-memory 80
trl-latent study --quick --cells 'grpo-*-s0'   # latent vs token over losses, seeds and ablations (resumable)
```

A subcommand is a function `add(subparsers)` in `SUBCOMMANDS` that registers its parser and sets `func`, a callable
taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .planning import add_plan_command
from .study import add_study


def _offline() -> None:
    # The CLI never downloads: every model is built in-process (docs/design.md section 4).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ----------------------------------------------------------------------------------------------- token baseline
def _baseline_arguments(parser: argparse.ArgumentParser, output_dir: str, size: str, sft: int, grpo: int) -> None:
    parser.add_argument("--output-dir", default=output_dir, help=f"where metrics.json goes (default {output_dir})")
    parser.add_argument("--size", default=size, choices=["tiny", "small"], help=f"tiny model size (default {size})")
    parser.add_argument("--sft-steps", type=int, default=sft, help=f"SFT steps (default {sft})")
    parser.add_argument("--grpo-steps", type=int, default=grpo, help=f"GRPO steps (default {grpo})")
    parser.add_argument("--n-sft", type=int, default=8192, help="SFT dialogues (default 8192)")
    parser.add_argument("--seed", type=int, default=0, help="seed of model, data and trainers (default 0)")
    parser.add_argument("--n-eval", type=int, default=32, help="held-out prompts per evaluation set (default 32)")
    parser.add_argument("--cache-dir", default=None, help="tiny-model cache (default $TRL_LATENT_CACHE)")


def _run_baseline(args: argparse.Namespace) -> int:
    from .training.baseline import format_baseline_metrics, run_token_baseline

    metrics = run_token_baseline(
        args.output_dir,
        size=args.size,
        sft_steps=args.sft_steps,
        grpo_steps=args.grpo_steps,
        n_sft=args.n_sft,
        seed=args.seed,
        n_eval=args.n_eval,
        cache_dir=args.cache_dir,
    )
    print(format_baseline_metrics(metrics))
    print(f"metrics written to {os.path.join(args.output_dir, 'metrics.json')}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .console import quiet_known_warnings

    quiet_known_warnings()  # before the heavy imports: some of these messages are logged at import time
    from .pipeline import PipelineConfig, format_legend, format_results, run_pipeline

    print(
        "trl-latent demo: token-level vs latent-action RL on the embedded shapes role-play task (tiny Qwen2.5-VL, "
        f"CPU, offline). Output: {args.output_dir}",
        flush=True,
    )
    overrides = {
        key: value
        for key, value in dict(
            seed=args.seed,
            loss=args.loss,
            rl_steps=args.rl_steps,
            n_eval=args.n_eval,
            cache_dir=args.cache_dir,
            reward=args.reward,
        ).items()
        if value is not None
    }
    overrides.update(_field_overrides(args.set))
    config = PipelineConfig.quick(**overrides) if args.quick else PipelineConfig(**overrides)
    results = run_pipeline(args.output_dir, config)
    print("\n== results: held-out greedy answers after each phase\n")
    print(format_results(results))
    print("\nColumns:\n" + format_legend())
    print(f"\nresults written to {os.path.join(args.output_dir, 'results.json')} and results.md, plots to *.png there")
    return 0


def _field_overrides(items: list[str]) -> dict:
    """`FIELD=VALUE` strings as PipelineConfig overrides; an unknown field or a missing `=` is a clear error."""
    from dataclasses import fields

    from .pipeline import PipelineConfig

    known = {f.name for f in fields(PipelineConfig)}
    overrides = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in known:
            raise SystemExit(
                f"trl-latent demo: --set takes FIELD=VALUE with a PipelineConfig field (got {item!r}); fields: "
                + ", ".join(sorted(known))
            )
        try:
            overrides[name] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[name] = raw
    return overrides


def add_demo(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the embedded end-to-end job: token vs latent RL, CPU, offline")
    parser.add_argument("--output-dir", default="outputs/demo", help="where results go (default outputs/demo)")
    parser.add_argument("--loss", default=None, choices=["grpo", "dr_grpo", "dapo", "bnpo"], help="RL objective")
    parser.add_argument("--rl-steps", type=int, default=None, help="RL steps of each arm")
    parser.add_argument(
        "--reward",
        default=None,
        choices=["task", "rubric"],
        help="RL reward: task success + rubric ratio (default) or the judge-like rubric ratio alone (the paper's)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--n-eval", type=int, default=None, help="held-out prompts per evaluation set")
    parser.add_argument("--cache-dir", default=None, help="tiny-model cache (default $TRL_LATENT_CACHE)")
    parser.add_argument("--quick", action="store_true", help="seconds-long plumbing check instead of the full job")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any PipelineConfig field, e.g. --set world_output_schedule=authors --set bc_target=argmax "
        "(values are read as JSON when they parse, else as strings; repeatable)",
    )
    parser.set_defaults(func=_demo)


def add_token_baseline(subparsers) -> None:
    parser = subparsers.add_parser("token-baseline", help="stock TRL SFT then GRPO on the synthetic task")
    _baseline_arguments(parser, "outputs/token_baseline", "tiny", 40, 10)
    parser.set_defaults(func=_run_baseline)


# ------------------------------------------------------------------------------------------------- synthetic
def _write_synthetic(args: argparse.Namespace) -> int:
    from .data.synthetic import write_synthetic_task

    manifest = write_synthetic_task(
        args.root,
        seed=args.seed,
        image_size=tuple(args.image_size) if len(args.image_size) == 2 else args.image_size[0],
        max_count=args.max_count,
    )
    print(json.dumps(manifest.to_dict(), indent=2))
    return 0


def add_write_synthetic(subparsers) -> None:
    parser = subparsers.add_parser("write-synthetic", help="write the shapes role-play task in the MMRole layout")
    parser.add_argument("root", help="folder to write (empty, new, or a previous synthetic task)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, nargs="+", default=[56], help="side, or width height")
    parser.add_argument("--max-count", type=int, default=1, help="most shapes per image, 1-4")
    parser.set_defaults(func=_write_synthetic)


from .commands import eval as _eval_command  # noqa: E402
from .commands import grpo as _grpo_command  # noqa: E402
from .commands import inspect as _inspect_command  # noqa: E402
from .commands import sft as _sft_command  # noqa: E402

SUBCOMMANDS = [
    add_demo,
    add_token_baseline,
    add_write_synthetic,
    _sft_command.add_parser,
    _grpo_command.add_parser,
    _eval_command.add_parser,
    _inspect_command.add_parser,
    add_plan_command,
    add_study,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-latent", description="Latent-action RL for vision-language models.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `trl-latent` and `python -m trl_latent.cli`."""
    _offline()
    parser = build_parser()
    args = parser.parse_args(argv)
    # The whole command line, recorded by commands that write results (`args.argv` is the stage commands' own).
    args.command_line = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if args.command == "write-synthetic" and len(args.image_size) not in (1, 2):
        parser.error("--image-size takes one value (side) or two (width height)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
