"""The embedded experiment's commands: `trl-latent demo` (one token vs latent comparison), `trl-latent study` (the
grid over objectives, seeds and ablations) and `trl-latent write-synthetic` (the shapes task on disk, MMRole layout).

They are registered by `trl_latent.cli` beside the library's stage commands (`trl_latent.commands`); the library never
imports this package.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from ..training.losses import LOSS_CLASSES, LOSS_NAMES
from .shapes.reward import REWARDS
from .shapes.study import (
    ABLATIONS,
    DEFAULT_SEEDS,
    RESULTS_CELLS_DIR,
    NoCellsError,
    finished,
    grid,
    run_study,
    select,
    write_report,
)


def _demo(args: argparse.Namespace) -> int:
    from .console import quiet_known_warnings

    quiet_known_warnings()  # before the heavy imports: some of these messages are logged at import time
    from .shapes.pipeline import PipelineConfig, format_legend, format_results, run_pipeline

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

    from .shapes.pipeline import PipelineConfig

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
    parser = subparsers.add_parser(
        "demo",
        help="the embedded end-to-end job: token vs latent RL, CPU, offline",
        description="The embedded end-to-end job on the shapes role-play task (a tiny Qwen2.5-VL built in-process, CPU, "
        "offline): token SFT then RL over tokens, against latent stages 1-5 then RL over latent actions, each model "
        "evaluated on held-out prompts; results.json and tables under --output-dir.",
    )
    parser.add_argument("--output-dir", default="outputs/demo", help="where results go (default outputs/demo)")
    parser.add_argument("--loss", default=None, choices=list(LOSS_CLASSES), help="RL objective")
    parser.add_argument("--rl-steps", type=int, default=None, help="RL steps of each arm")
    parser.add_argument(
        "--reward",
        default=None,
        choices=list(REWARDS),
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


def _write_synthetic(args: argparse.Namespace) -> int:
    from .shapes.task_data import write_synthetic_task

    if len(args.image_size) not in (1, 2):
        raise SystemExit("trl-latent write-synthetic: --image-size takes one value (side) or two (width height)")

    manifest = write_synthetic_task(
        args.root,
        seed=args.seed,
        image_size=tuple(args.image_size) if len(args.image_size) == 2 else args.image_size[0],
        max_count=args.max_count,
    )
    print(json.dumps(manifest.to_dict(), indent=2))
    return 0


def add_write_synthetic(subparsers) -> None:
    parser = subparsers.add_parser(
        "write-synthetic",
        help="write the shapes role-play task in the MMRole layout",
        description="Write the embedded shapes role-play task to a folder in the MMRole release's layout (dialogues, "
        "profiles, images, pretraining corpora), for the stage commands and the recipes.",
    )
    parser.add_argument("root", help="folder to write (empty, new, or a previous synthetic task)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, nargs="+", default=[56], help="side, or width height")
    parser.add_argument("--max-count", type=int, default=1, help="most shapes per image, 1-4")
    parser.set_defaults(func=_write_synthetic)


def add_study(subparsers) -> None:
    """Register `trl-latent study`."""
    parser = subparsers.add_parser(
        "study",
        help="latent vs token RL over losses, seeds and ablations: resumable grid, tables and plots",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--study-dir", default="outputs/study", help="prefix cache and work files (default %(default)s)"
    )
    parser.add_argument(
        "--cells-dir",
        default=str(RESULTS_CELLS_DIR),
        help="the finished cells' JSONs, the data behind the report (default %(default)s, committed)",
    )
    parser.add_argument("--losses", nargs="+", default=list(LOSS_NAMES), choices=LOSS_NAMES, help="RL objectives")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="seeds (default 0 1 2)")
    parser.add_argument(
        "--ablations", nargs="*", default=list(ABLATIONS), choices=list(ABLATIONS), help="latent ablations"
    )
    parser.add_argument("--ablation-loss", default="grpo", choices=LOSS_NAMES, help="loss of the ablation cells")
    parser.add_argument("--cells", nargs="+", default=None, help="run only these cells (names or globs)")
    parser.add_argument("--list", action="store_true", help="list the cells (and which are finished), run nothing")
    parser.add_argument("--quick", action="store_true", help="PipelineConfig.quick() size: a CI smoke run")
    parser.add_argument("--rl-steps", type=int, default=None, help="RL steps per cell (default: the size's)")
    parser.add_argument("--no-embedder", action="store_true", help="skip MiniLM embedding diversity")
    parser.add_argument("--report", action="store_true", help="only write the report from the finished cells")
    parser.add_argument("--no-report", action="store_true", help="run cells without writing the report after")
    parser.add_argument("--report-md", default=None, help="report path (default results.md beside --cells-dir)")
    parser.add_argument("--cache-dir", default=None, help="tiny-model cache (default $TRL_LATENT_CACHE)")
    parser.set_defaults(func=_study)


def _study(args) -> int:
    from .console import heading, quiet_known_warnings

    quiet_known_warnings()  # before the heavy imports: some of these messages are logged at import time
    from .shapes.pipeline import PipelineConfig

    overrides = {k: v for k, v in dict(rl_steps=args.rl_steps, cache_dir=args.cache_dir).items() if v is not None}
    base_config = PipelineConfig.quick(**overrides) if args.quick else PipelineConfig(**overrides)
    study_dir, cells_dir = Path(args.study_dir), Path(args.cells_dir)
    cells = select(grid(args.losses, args.seeds, args.ablations, args.ablation_loss), args.cells)
    command = shlex.join(["trl-latent", *getattr(args, "command_line", ["study"])])
    if args.list:
        for cell in cells:
            print(f"{cell.name:32s} {'finished' if finished(cells_dir, cell, base_config) else 'to run'}")
        return 0
    if not args.report:
        done = run_study(
            study_dir, base_config, cells, embedder=not args.no_embedder, command=command, cells_dir=cells_dir
        )
        heading(f"study: {len(done['run'])} cells run, {len(done['skipped'])} already finished (skipped)")
    if args.report or not args.no_report:
        try:
            path = write_report(cells_dir, args.report_md, command)
        except NoCellsError as err:
            print(f"trl-latent study: {err}", file=sys.stderr)
            return 2
        print(f"report written to {path}")
    return 0


def add_text_study(subparsers) -> None:
    """Register `trl-latent text-study` (the text role-play study on SmolLM2-135M-Instruct)."""
    from .text_roleplay import study

    parser = subparsers.add_parser(
        "text-study",
        help="token vs latent-action RL on the text role-play task (SmolLM2-135M-Instruct): resumable cells, report",
        description=study.__doc__.split("\n\n")[0],
    )
    study.add_arguments(parser)
    parser.set_defaults(
        func=lambda args: study.execute(args, shlex.join(["trl-latent", *getattr(args, "command_line", [])]))
    )


SUBCOMMANDS = [add_demo, add_study, add_text_study, add_write_synthetic]
