"""The study: latent vs token RL on the embedded task over the four objectives, several seeds and the paper's
ablations, as a grid of cells that survives interruption and can be spread over processes or machines.

```
trl-latent study --list                       # the cells of the default grid
trl-latent study --quick                      # every cell at the test suite's size, then the report
trl-latent study --cells 'grpo-*-s0'          # a subset (names or globs); finished cells are skipped
trl-latent study --report --report-md docs/results.md   # tables and plots from the cell JSONs only
```

A cell is one RL run: `<loss>-<method>-s<seed>` for the token and latent arms under each loss, and
`<loss>-latent-<ablation>-s<seed>` for the latent model built with `use_cycle_loss=False` (`no_cycle_loss`),
`use_projector=False` (`no_projector`) or `use_text_only=False` (`no_text_only`) under the default loss. Cells that
share a prefix share it on disk (`<study-dir>/prefix/`, a [`~trl_latent.experiments.shapes.prefix_cache.PrefixCache`]): the pretrained
base of a seed, the token SFT model of a seed, each latent stage of a seed and ablation, keyed by every config field
that can change them, the code fingerprint and the library versions. Each cell writes `<study-dir>/cells/<name>.json`
atomically as soon as it ends; a rerun skips cells whose JSON exists (and refuses one run with another config).

Per cell: the reward curve over RL steps; held-out accuracy and reward before and after RL on three splits, ID
characters, OOD characters and ID characters on the colour/shape combinations only the general text shows
(`held_out`), each the mean over 3 sampled generations per prompt with its std (`evaluate.py`); rollout diversity
(distinct-n, self-BLEU, MiniLM embedding diversity); the codes the policy samples on the held-out prompts (histogram,
codes used, entropy); the latent arm's `health` entries; RL wall time per step.

The more-data baseline (token SFT with the text-only corpus of the latent stages mixed in,
`pipeline.run_text_mix_baseline`) is evaluated without RL inside each token cell (`baseline`): it is built once per
seed in the prefix cache and shared by the four losses' token cells, so it costs one SFT per seed, not a grid of RL
cells. It answers "is a latent win just more data?" against the models before RL: token SFT (same steps, without the
text) and the latent model after stages 1-5 (which saw the same text corpus).

Cells record `STUDY_VERSION`; a study dir holding cells of another version (another protocol: splits, RL schedule,
evaluation) is refused rather than mixed into one report.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import math
import platform
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...training.losses import LOSS_NAMES
from ...training.stages import ABLATIONS
from .prefix_cache import write_json_atomic

DEFAULT_SEEDS = (0, 1, 2)
# Files of the package that cannot change a trained model or its evaluation: edits to them keep the prefix cache.
# (This file is fingerprinted: the study's evaluation lives here.)
_NOT_IN_FINGERPRINT = {"reports.py", "progress.py", "console.py", "cli.py"}
EVALUATION_PROTOCOL = (
    "evaluate_model (3 generations, top-k 64, temperature 0.1) + MiniLM embedding diversity + sampled code usage, v2"
)
# The protocol of a cell's JSON: bumped whenever cells of two versions must not share a report. 2: splits id, ood,
# held_out; RL 2 micro-batches x 2 passes per generation batch (DAPO clip-higher); 3 sampled generations per
# prompt; the more-data baseline in token cells. Cells without it ran under version 1.
STUDY_VERSION = 2


REPRODUCE = (
    "trl-latent study --list                                   # the 33 cells and which are finished",
    "trl-latent study                                          # every unfinished cell, then this report",
    "trl-latent study --cells 'grpo-*' --no-report             # one process per subset (same --study-dir)",
    "trl-latent study --cells '*-s1' --no-report               # ... e.g. one per seed, on another machine",
    "trl-latent study --report --report-md docs/results.md     # tables and plots from the committed cell JSONs",
)


CELL_FIELDS = (
    "Each cell's JSON (`<cells-dir>/<name>.json`, committed under `results/shapes_study/cells/`) holds: `study_version`; `reward_curve` (rollout reward per RL",
    "step); `rl` (steps, seconds, `seconds_per_step`, reward first/last quarter, per-step `curves` of the loss, KL and,",
    "for latent cells, `latent/code_entropy` and `latent/codes_used`); `eval` and `eval_start` (held-out metrics after",
    "and before RL per split: `id` (ID characters), `ood` (OOD characters), `held_out` (ID characters on the held-out",
    "colour/shape combinations): accuracies and `reward`, each the mean over the sampled generations with its",
    "`<key>_std`, `diversity/distinct_1`, `diversity/distinct_2`, `diversity/self_bleu`, `diversity/embedding`);",
    "`codes` and `codes_start` (latent cells: per-code `histogram` of the codes sampled on the held-out prompts, `used`,",
    "`entropy` in nats, `perplexity`); `health` (the latent arm's `health` entries, by path, e.g.",
    "`stages.world_sft.health` with `health/content_controllability`); `base` (the pretrained base: `pretrain` with",
    "`answer_token_accuracy`, `eval_base`); `baseline` (token cells: the more-data baseline, token SFT with the",
    "text-only corpus mixed in and no RL: `sft` with `answer_token_accuracy`, `eval_sft`); `arm` (everything the",
    "pipeline returned); `config`, `fingerprint`, `environment`, `command`, `seconds`, `finished_at`.",
)


@dataclass(frozen=True)
class Cell:
    """One RL run of the grid."""

    loss: str
    method: str  # "token" or "latent"
    seed: int
    ablation: str = "full"

    @property
    def name(self) -> str:
        middle = self.method if self.ablation == "full" else f"{self.method}-{self.ablation}"
        return f"{self.loss}-{middle}-s{self.seed}"

    def config(self, base):
        """The `PipelineConfig` of this cell: `base` with the cell's seed, loss and ablation switch."""
        overrides: dict[str, Any] = {"seed": self.seed, "loss": self.loss}
        if self.ablation != "full":
            overrides[ABLATIONS[self.ablation]] = False
        return replace(base, **overrides)


def grid(
    losses=LOSS_NAMES, seeds=DEFAULT_SEEDS, ablations=tuple(ABLATIONS), ablation_loss: str = "grpo"
) -> list[Cell]:
    """Token and latent cells for each loss and seed, then the latent ablations under `ablation_loss`."""
    unknown = [loss for loss in losses if loss not in LOSS_NAMES] + [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ValueError(f"Unknown loss or ablation {unknown}; losses: {LOSS_NAMES}, ablations: {tuple(ABLATIONS)}.")
    cells = [Cell(loss, method, seed) for loss in losses for seed in seeds for method in ("token", "latent")]
    cells += [Cell(ablation_loss, "latent", seed, ablation) for ablation in ablations for seed in seeds]
    return cells


def select(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    """The cells whose name matches any of `patterns` (names or shell globs, also comma-separated)."""
    if not patterns:
        return list(cells)
    patterns = [p.strip() for pattern in patterns for p in pattern.split(",") if p.strip()]
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(c.name, p) for c in cells)]
    if missing:
        raise ValueError(
            f"--cells {missing} match no cell of this grid; `trl-latent study --list` shows the names "
            f"(e.g. {cells[0].name!r}, globs like 'grpo-*-s0')."
        )
    return [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


# ------------------------------------------------------------------------------------------------ provenance
def source_fingerprint() -> str:
    """Digest of the package's source files that can change a trained model or its evaluation."""
    root = Path(__file__).resolve().parents[2]  # trl_latent/
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.name in _NOT_IN_FINGERPRINT:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def environment() -> dict[str, Any]:
    """Machine and library versions, recorded with every cell."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("trl-latent", "torch", "transformers", "trl", "accelerate", "sentence-transformers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "cache_dir"}


# ------------------------------------------------------------------------------------------------ evaluation
def sampled_code_usage(model, processor, eval_sets: dict, config, batch_size: int = 32) -> dict[str, Any]:
    """The codes a latent model's policy samples on the held-out prompts in the RL rollout setting (top-k 32,
    temperature 1, greedy tokens): per-code counts over all splits, codes used, usage entropy (nats) and perplexity."""
    import torch

    from ...evaluation import ROLLOUT_TEMPERATURE, LatentGenerationBackend
    from ...metrics.codebook import code_counts
    from ...modeling.generation import ROLLOUT_CODE_TEMPERATURE, ROLLOUT_CODE_TOP_K

    num_codes = model.config.codebook_size
    tokenizer = getattr(processor, "tokenizer", processor)
    backend = LatentGenerationBackend(
        model, processor, config.max_completion_length, ROLLOUT_TEMPERATURE, ROLLOUT_CODE_TOP_K
    )
    counts = torch.zeros(num_codes, dtype=torch.long)
    generator = torch.Generator(device=model.device).manual_seed(config.seed)  # leaves the global RNG alone
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for dataset in eval_sets.values():
            for start in range(0, len(dataset), batch_size):
                rows = dataset[start : start + batch_size]
                out = model.generate(
                    **backend._inputs(rows["prompt"], rows["image"]),
                    max_new_tokens=config.max_completion_length,
                    do_sample_codes=True,
                    code_temperature=ROLLOUT_CODE_TEMPERATURE,
                    code_top_k=ROLLOUT_CODE_TOP_K,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    generator=generator,
                )
                counts += code_counts(out.codes, num_codes, out.completion_mask)
    model.train(was_training)
    total = int(counts.sum())
    shares = [c / total for c in counts.tolist() if c] if total else []
    entropy = -sum(p * math.log(p) for p in shares)
    return {
        "num_codes": num_codes,
        "histogram": counts.tolist(),
        "steps": total,
        "used": len(shares),
        "entropy": entropy,
        "perplexity": math.exp(entropy) if total else 0.0,
    }


class StudyEvaluator:
    """`evaluate_model` with the MiniLM embedder (embedding diversity), plus, for latent models, the codes sampled on
    the held-out prompts (`codes` entry beside the splits). `embedder=False` skips embedding diversity."""

    def __init__(self, embedder: bool = True):
        self.use_embedder = embedder

    @property
    def protocol(self) -> str:
        return EVALUATION_PROTOCOL + ("" if self.use_embedder else ", no embedder")

    def __call__(self, model, processor, eval_sets, config) -> dict[str, Any]:
        from ...metrics.diversity import default_embedder
        from ...modeling.model import LatentActionModel
        from .evaluate import evaluate_model

        results = evaluate_model(
            model, processor, eval_sets, config, default_embedder() if self.use_embedder else None
        )
        if isinstance(model, LatentActionModel):
            results["codes"] = sampled_code_usage(model, processor, eval_sets, config)
        return results


# ------------------------------------------------------------------------------------------------ cells
def find_health(result: Any, path: str = "") -> dict[str, Any]:
    """Every `health` entry in an arm's results, by its dotted path (whatever the pipeline reports there)."""
    found: dict[str, Any] = {}
    if isinstance(result, dict):
        for key, value in result.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "health":
                found[where] = value
            else:
                found.update(find_health(value, where))
    return found


def _splits(evaluation: dict) -> dict:
    return {k: v for k, v in evaluation.items() if k != "codes"}


def summarize_cell(
    cell: Cell, config, base: dict, arm: dict, seconds: float, baseline: dict | None = None
) -> dict[str, Any]:
    """The cell's JSON: what the report reads at the top level, the arm's full results under `arm` (and, for token
    cells, the more-data baseline's `{"sft", "eval_sft"}` under `baseline`)."""
    rl = arm["rl"]
    return {
        "study_version": STUDY_VERSION,
        "name": cell.name,
        "loss": cell.loss,
        "method": cell.method,
        "ablation": cell.ablation,
        "seed": cell.seed,
        "config": asdict(config),
        "reward_curve": rl["reward_curve"],
        "rl": {
            **{k: v for k, v in rl.items() if k != "reward_curve"},
            "seconds_per_step": rl["seconds"] / max(rl["steps"], 1),
        },
        "eval": _splits(arm["eval_rl"]),
        "eval_start": _splits(arm["eval_sft"]),
        "codes": arm["eval_rl"].get("codes"),
        "codes_start": arm["eval_sft"].get("codes"),
        "health": find_health(arm),
        "base": base,
        "baseline": None if baseline is None else {"sft": baseline["sft"], "eval_sft": _splits(baseline["eval_sft"])},
        "arm": arm,
        "seconds": seconds,
    }


def run_cell(
    cell: Cell,
    base_config,
    study_dir: Path,
    cache,
    evaluate: StudyEvaluator,
    command: str = "",
    fingerprint=None,
    cells_dir=None,
) -> dict[str, Any]:
    """Run one cell (reusing its cached prefix; its work files under `study_dir`) and write its JSON atomically to
    `cells_dir` (default `<study_dir>/cells`); returns the JSON's contents."""
    from ..console import heading
    from .pipeline import prepare_task, pretrain_base, run_latent_arm, run_text_mix_baseline, run_token_arm

    config = cell.config(base_config)
    work = study_dir / "work" / cell.name
    shutil.rmtree(work, ignore_errors=True)  # what an interrupted run of this cell left
    start = time.perf_counter()
    heading(f"cell {cell.name}")
    data, eval_sets, processor = prepare_task(config, work / "data")
    base_path, base = pretrain_base(processor, data, eval_sets, config, work, cache, evaluate)
    run_arm = run_token_arm if cell.method == "token" else run_latent_arm
    arm = run_arm(base_path, processor, data, eval_sets, config, work / cell.method, cache, evaluate)
    baseline = None
    if cell.method == "token":  # after the arm, so the arm's run is the same with or without it; cached per seed
        baseline = run_text_mix_baseline(base_path, processor, data, eval_sets, config, work / "text", cache, evaluate)
    result = summarize_cell(cell, config, base, arm, time.perf_counter() - start, baseline)
    result.update(
        fingerprint=fingerprint or source_fingerprint(),
        environment=environment(),
        command=command,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_json_atomic(cell_path(cells_dir or Path(study_dir) / "cells", cell), result)
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: another process is running a cell
        work.parent.rmdir()
    return result


def cell_path(cells_dir: Path, cell: Cell) -> Path:
    return Path(cells_dir) / f"{cell.name}.json"


def _check_version(path: Path, saved: dict) -> None:
    version = saved.get("study_version", 1)
    if version != STUDY_VERSION:
        raise ValueError(
            f"{path} is a cell of study version {version}, this code's is {STUDY_VERSION} (another protocol: splits, "
            f"RL schedule, evaluation); use another --cells-dir, or delete the old cells to rerun them."
        )


def finished(cells_dir: Path, cell: Cell, base_config) -> bool:
    """Whether the cell's JSON exists in `cells_dir`; a JSON of another study version or config is an error (mixing
    two grids)."""
    path = cell_path(cells_dir, cell)
    if not path.exists():
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to rerun the cell {cell.name}.") from err
    _check_version(path, saved)
    wanted = _comparable(asdict(cell.config(base_config)))
    # A field added to PipelineConfig after the cell ran (within one study version) did not exist then: the cell ran
    # with its default (a new field's default keeps the old behaviour; one that does not bumps STUDY_VERSION). A
    # field removed since (`extra`, never read) no longer matters.
    defaults = {f.name: f.default for f in fields(base_config) if f.default is not MISSING}
    recorded = {k: v for k, v in saved.get("config", {}).items() if k in wanted}
    config = {**{k: v for k, v in defaults.items() if k in wanted}, **recorded}
    if _comparable(config) != wanted:
        changed = sorted(k for k in wanted if config.get(k) != wanted[k])
        raise ValueError(
            f"{path} was run with another config (differs in {changed}); use another --cells-dir for this grid, "
            f"or delete the cell's JSON to rerun it."
        )
    return True


def run_study(
    study_dir,
    base_config,
    cells: list[Cell],
    embedder: bool = True,
    command: str = "run_study",
    cells_dir=None,
) -> dict[str, list[str]]:
    """Run every unfinished cell of `cells` (`command` is recorded in each cell): the prefix cache and work files go
    to `study_dir`, the cell JSONs to `cells_dir` (default `<study_dir>/cells`). Returns the names run and
    skipped."""
    import torch

    from .prefix_cache import PrefixCache

    if base_config.threads:
        torch.set_num_threads(base_config.threads)  # as the demo: tiny models run fastest on one intra-op thread
    study_dir = Path(study_dir)
    cells_dir = Path(cells_dir) if cells_dir else study_dir / "cells"
    evaluate = StudyEvaluator(embedder)
    env, fingerprint = environment(), source_fingerprint()  # of the code this process imported, taken once
    tag = f"{fingerprint} | {json.dumps(env['versions'], sort_keys=True)} | {evaluate.protocol}"
    cache = PrefixCache(study_dir / "prefix", tag=tag)
    # Every finished cell is checked before any runs: a study dir of another grid is refused up front.
    skipped = [cell.name for cell in cells if finished(cells_dir, cell, base_config)]
    done = {"run": [], "skipped": skipped}
    for cell in cells:
        if cell.name in skipped or cell_path(cells_dir, cell).exists():  # or finished by another process meanwhile
            continue
        run_cell(cell, base_config, study_dir, cache, evaluate, command, fingerprint, cells_dir)
        done["run"].append(cell.name)
    return done


def load_cells(cells_dir) -> list[dict]:
    """Every finished cell's JSON in `cells_dir` (all of this `STUDY_VERSION`, else an error)."""
    cells = []
    for path in sorted(Path(cells_dir).glob("*.json")):
        try:
            cells.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); delete it to rerun that cell.") from err
        _check_version(path, cells[-1])
    return cells


# ------------------------------------------------------------------------------------------------ report
def format_report(cells: list[dict], plots: dict[str, Path], markdown_path: Path, command: str) -> str:
    """`results.md`: provenance, the main and ablation tables, per-cell timings and the plots."""
    import os

    from . import reports

    if not cells:
        raise ValueError("No finished cells to report on: run `trl-latent study` first (see --list).")
    quick = any(c["config"].get("size") == "tiny" for c in cells)
    envs = {json.dumps(c["environment"], sort_keys=True) for c in cells}
    commands = sorted({c.get("command", "") for c in cells})
    dates = sorted(c["finished_at"] for c in cells)
    fingerprints = sorted({c["fingerprint"] for c in cells})
    seeds = sorted({c["seed"] for c in cells})
    lines = ["# Results: latent vs token RL on the embedded task", ""]
    if quick:
        lines += [
            "> **Smoke-size numbers.** These cells ran at the test suite's size (`--quick`: the unit-test model, a few "
            "steps of everything). They show that the study's harness, tables and plots work; they say nothing about "
            "the method. The full grid (`trl-latent study`) replaces them.",
            "",
        ]
    lines += [f"- cells: {len(cells)} ({', '.join(sorted(c['name'] for c in cells))}); seeds {seeds}"]
    for env in sorted(envs):
        env = json.loads(env)
        versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
        lines.append(f"- machine: {env['machine']}, Python {env['python']}; {versions}")
    lines += [f"- cells run with: {', '.join(f'`{c}`' for c in commands)}; report: `{command}`"]
    lines += [f"- finished: {dates[0]} to {dates[-1]}; code fingerprint{'s' if len(fingerprints) > 1 else ''}: "]
    lines[-1] += ", ".join(f"`{f}`" for f in fingerprints)
    lines += ["", "## Latent vs token after RL, mean ± std over seeds", "", reports.format_main_table(cells), ""]
    lines += [reports.format_legend(), ""]
    coinciding = reports.coinciding_losses(cells)
    lines += [f"> {note}" for note in coinciding] + [""] * bool(coinciding)
    start_table = reports.format_start_table(cells)
    if start_table:
        lines += ["## Before RL: the starting models and the more-data baseline, mean ± std over seeds", ""]
        lines += [
            "The more-data baseline is token SFT for the same steps with the latent stages' text-only corpus mixed in,",
            "without RL: compare it with token SFT (same steps, no text) and the latent model after stages 1-5 (which",
            "saw the same text). Each row counts a seed once (the losses share these models).",
            "",
            start_table,
            "",
        ]
    lines += ["## What RL changed: held-out reward before and after RL, mean ± std over seeds", ""]
    lines += [reports.format_gain_table(cells), ""]
    lines += ["## The study's targets and the paper's claims, checked on these cells", ""]
    lines += [reports.format_claims(cells), ""]
    lines += ["## Ablations of the latent model", "", reports.format_ablation_table(cells), ""]
    lines += ["## Per cell: RL time, reward and code usage", "", reports.format_cells_table(cells), ""]
    health = reports.format_health_table(cells)
    lines += ["## Latent-space health, mean ± std over seeds", ""]
    lines += [health or "The cells hold no `health` entries (the pipeline reported none when they ran).", ""]
    lines += ["## Plots", ""]
    for name, path in plots.items():
        rel = os.path.relpath(path, markdown_path.parent)
        lines += [f"{reports.PLOT_CAPTIONS[name]}", "", f"![{name}]({rel})", ""]
    lines += ["## How to reproduce", "", "```bash", *REPRODUCE, "```", "", *CELL_FIELDS, ""]
    return "\n".join(lines).rstrip() + "\n"


# The committed cells of the embedded study, and the command that writes docs/results.md from them.
RESULTS_CELLS_DIR = Path("results") / "shapes_study" / "cells"
DOCS_REPORT_COMMAND = "trl-latent study --report --report-md docs/results.md"


class NoCellsError(ValueError):
    """A report was asked for where no cell has finished."""


def report_markdown(cells_dir, markdown_path, command: str = DOCS_REPORT_COMMAND) -> str:
    """The report's markdown from the cell JSONs of `cells_dir`, its plots named (not drawn) in the folder of
    `markdown_path` without `.md`: what [`write_report`] writes, and what a test rebuilds to check docs/results.md."""
    from .reports import PLOTS

    cells = load_cells(cells_dir)
    if not cells:
        raise NoCellsError(
            f"No finished cells in {cells_dir}: run `trl-latent study` (all cells) or `trl-latent study --cells ...` "
            "first; `trl-latent study --list` shows the grid."
        )
    markdown_path = Path(markdown_path)
    plots = {name: markdown_path.with_suffix("") / f"{name}.png" for name in PLOTS}
    return format_report(cells, plots, markdown_path, command)


def docs_results_page(cells_dir=RESULTS_CELLS_DIR) -> str:
    """docs/results.md: the report over the committed cells, or, while none is committed, a page that says so and
    how to run them (a test checks docs/results.md against this)."""
    if load_cells(cells_dir):
        return report_markdown(cells_dir, Path("docs/results.md"), DOCS_REPORT_COMMAND)
    lines = [
        "# Results: latent vs token RL on the embedded task",
        "",
        f"No study cell is committed yet: `{RESULTS_CELLS_DIR.as_posix()}/` is empty, so this page has no tables. The",
        "study's cells are the data behind every table here; run them and rebuild the page from them:",
        "",
        "```bash",
        *REPRODUCE,
        "```",
        "",
        "The cells land in `results/shapes_study/cells/` (commit them); the prefix cache and work files stay under",
        "`outputs/study/`. The report judges every claim by the seed noise (`trl_latent/experiments/verdicts.py`).",
        "",
        *CELL_FIELDS,
        "",
    ]
    return "\n".join(lines)


def write_report(cells_dir, markdown_path=None, command: str = "trl-latent study --report") -> Path:
    """Tables and plots from the cell JSONs of `cells_dir`: `markdown_path` (default `results.md` beside
    `cells_dir`) and its PNGs in the folder of the same name without `.md`."""
    from . import reports

    cells_dir = Path(cells_dir)
    markdown_path = Path(markdown_path) if markdown_path else cells_dir.parent / "results.md"
    text = report_markdown(cells_dir, markdown_path, command)
    reports.write_plots(load_cells(cells_dir), markdown_path.with_suffix(""))
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(text)
    return markdown_path


# ------------------------------------------------------------------------------------------------ command line
