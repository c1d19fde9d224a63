"""Tables and plots of latent vs token RL runs: the study's grid of cells (`trl_latent.experiments.study`) and the demo's single
run (`trl_latent.experiments.pipeline.run_pipeline`) go through the same functions.

A *cell* is one RL run, a dict with at least `loss`, `method` (`"token"` or `"latent"`), `ablation` (`"full"` or the
switch turned off), `seed`, `reward_curve` (rollout reward per RL step), `eval` (held-out metrics after RL per split
`id`/`ood`: `all`, `reward`, `diversity/...`) and `codes` (latent cells: `histogram`, the count of each code sampled on
the held-out prompts). Tables give mean ± std over seeds; plots are PNGs of `FIGURE_SIZE` pixels (matplotlib, Agg).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..metrics.stats import mean_std as sample_mean_std
from ..training.losses import LOSS_CLASSES
from ..training.stages import ABLATIONS as LATENT_ABLATIONS

logger = logging.getLogger(__name__)

LOSSES = tuple(LOSS_CLASSES)
METHODS = ("token", "latent")
ABLATIONS = ("full", *LATENT_ABLATIONS)
ABLATION_LABELS = {
    "full": "full latent model",
    "no_cycle_loss": "without the cycle loss",
    "no_projector": "without the projector",
    "no_text_only": "without text-only data",
}
FIGURE_SIZE = (960, 480)  # pixels of every PNG
_DPI = 100
PLOTS = ("reward_curves", "id_ood", "diversity", "ablation", "code_usage")
PLOT_CAPTIONS = {
    "reward_curves": "Rollout reward per RL step, mean over seeds with a ±std band, one panel per loss.",
    "id_ood": "Held-out greedy reward on ID and OOD characters after RL, mean ± std over seeds.",
    "diversity": "Diversity of sampled rollouts on held-out ID prompts after RL, mean ± std over seeds.",
    "ablation": "Held-out reward of the latent model with each part switched off, mean ± std over seeds.",
    "code_usage": "Share of sampled steps per code on held-out prompts after RL, codes sorted by use, mean over seeds.",
}
_COLOURS = {"token": "#4c72b0", "latent": "#dd8452"}

# Table columns: (header, split, metric key).
COLUMNS = (
    ("ID accuracy", "id", "all"),
    ("ID reward", "id", "reward"),
    ("OOD accuracy", "ood", "all"),
    ("OOD reward", "ood", "reward"),
    ("distinct-2", "id", "diversity/distinct_2"),
    ("self-BLEU", "id", "diversity/self_bleu"),
    ("embedding diversity", "id", "diversity/embedding"),
)
COLUMN_NOTES = {
    "ID accuracy": "greedy answers with colour, shape, count and voice all right, characters seen in training",
    "ID reward": "mean rubric reward (the paper's judge ratio) of greedy answers, characters seen in training",
    "OOD accuracy": "as ID accuracy, on characters never seen in training",
    "OOD reward": "as ID reward, on characters never seen in training",
    "distinct-2": "unique / all word pairs within a prompt's sampled rollouts, ID (higher = more diverse)",
    "self-BLEU": "BLEU of each sampled rollout against the rest of its group, ID (lower = more diverse)",
    "embedding diversity": "1 / mean pairwise cosine similarity of MiniLM embeddings per group, ID (paper's measure)",
}


# ------------------------------------------------------------------------------------------------ numbers
def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values; NaN mean when none: the
    library's [`~trl_latent.metrics.stats.mean_std`] with the count."""
    values = _finite(values)
    if not values:
        return math.nan, math.nan, 0
    return (*sample_mean_std(values), len(values))


def format_mean_std(values, digits: int = 3) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def metric(cell: dict, split: str, key: str):
    return cell.get("eval", {}).get(split, {}).get(key)


def group_cells(cells: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Cells by (loss, method, ablation), each group sorted by seed."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for cell in cells:
        groups[(cell["loss"], cell["method"], cell.get("ablation", "full"))].append(cell)
    return {key: sorted(group, key=lambda c: c["seed"]) for key, group in groups.items()}


def _index(order, key) -> int:
    return order.index(key) if key in order else len(order)


def _ordered(keys, order):
    return sorted(keys, key=lambda k: (_index(order, k), k))


# ------------------------------------------------------------------------------------------------ tables
def _table(rows: list[tuple[list[str], list[dict]]], lead: list[str]) -> str:
    header = [*lead, "seeds", *(name for name, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(lead) + "---:|" * (len(COLUMNS) + 1)]
    for labels, group in rows:
        values = [format_mean_std([metric(c, split, key) for c in group]) for _, split, key in COLUMNS]
        lines.append("| " + " | ".join([*labels, str(len(group)), *values]) + " |")
    return "\n".join(lines)


def format_main_table(cells: list[dict]) -> str:
    """The paper's table shape: rows loss x method (full models), columns ID, OOD and diversity, mean ± std."""
    groups = group_cells(cells)
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSSES)
    rows = [
        ([loss, method], groups[(loss, method, "full")])
        for loss in losses
        for method in METHODS
        if (loss, method, "full") in groups
    ]
    return _table(rows, ["loss", "method"])


def format_ablation_table(cells: list[dict]) -> str:
    """Latent models of each ablation under the same loss(es), mean ± std over seeds."""
    groups = group_cells(cells)
    ablated = {loss for loss, method, ablation in groups if method == "latent" and ablation != "full"}
    rows = [
        ([loss, ABLATION_LABELS.get(ablation, ablation)], groups[(loss, "latent", ablation)])
        for loss in _ordered(ablated, LOSSES)
        for ablation in ABLATIONS
        if (loss, "latent", ablation) in groups
    ]
    return _table(rows, ["loss", "latent model"])


def format_legend() -> str:
    return "\n".join(f"- **{name}**: {note}" for name, note in COLUMN_NOTES.items())


def start_metric(cell: dict, split: str, key: str):
    """A held-out metric of the cell's model before RL (after its SFT: token SFT, or latent stages 1-5)."""
    return cell.get("eval_start", {}).get(split, {}).get(key)


def _gain(cell: dict, split: str, key: str = "reward"):
    after, before = metric(cell, split, key), start_metric(cell, split, key)
    return None if after is None or before is None else after - before


def format_gain_table(cells: list[dict]) -> str:
    """What RL did: held-out greedy reward before RL (the SFT start) and after, and the per-seed gain, ID and OOD,
    rows loss x method (full models), mean ± std over seeds."""
    groups = group_cells(cells)
    header = ["loss", "method", "seeds"]
    for split in ("ID", "OOD"):
        header += [f"{split} reward before RL", f"{split} reward after RL", f"{split} gain"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSSES)
    for loss in losses:
        for method in METHODS:
            group = groups.get((loss, method, "full"))
            if not group:
                continue
            row = [loss, method, str(len(group))]
            for split in ("id", "ood"):
                row += [
                    format_mean_std([start_metric(c, split, "reward") for c in group]),
                    format_mean_std([metric(c, split, "reward") for c in group]),
                    format_mean_std([_gain(c, split) for c in group]),
                ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# Why two objectives can give the same runs: the known cases, by pair of losses.
_COINCIDING = {
    ("dapo", "bnpo"): (
        "on one process with one optimisation step per generation batch, DAPO's normalisation by the batch's "
        "completion tokens is BNPO's, and the clipped ratio is exactly 1 on-policy, so clip-higher never acts"
    ),
}


def coinciding_losses(cells: list[dict]) -> list[str]:
    """One sentence per pair of losses whose cells gave the same held-out numbers for every seed and method they
    share (full models): a reader should not take two rows that coincide for two independent results."""
    by_key = {(c["loss"], c["method"], c["seed"]): c.get("eval") for c in cells if c.get("ablation", "full") == "full"}
    losses = _ordered({loss for loss, _, _ in by_key}, LOSSES)
    notes = []
    for i, first in enumerate(losses):
        for second in losses[i + 1 :]:
            shared = [(m, s) for (loss, m, s) in by_key if loss == first and (second, m, s) in by_key]
            if shared and all(by_key[(first, m, s)] == by_key[(second, m, s)] for m, s in shared):
                why = _COINCIDING.get((first, second)) or _COINCIDING.get((second, first))
                notes.append(
                    f"{first} and {second} gave identical held-out numbers in all {len(shared)} cells they share"
                    + (f": {why}." if why else ": their updates coincide in this setting.")
                )
    return notes


def _mean(cells: list[dict], value) -> float:
    return mean_std([value(c) for c in cells])[0]


def check_claims(cells: list[dict]) -> list[tuple[str, str, str]]:
    """The paper's comparative claims checked on the cells, each as (claim, what was measured, verdict), verdict
    `"met"`, `"missed"` or `"n/a"` (the cells needed are missing). Means are over seeds; a loss counts for latent
    when its mean held-out reward is at least token's."""
    groups = group_cells(cells)
    losses = [loss for loss in LOSSES if (loss, "token", "full") in groups and (loss, "latent", "full") in groups]
    claims = []
    for split, label in (("id", "ID"), ("ood", "OOD")):
        wins = [
            loss
            for loss in losses
            if _mean(groups[(loss, "latent", "full")], lambda c, s=split: metric(c, s, "reward"))
            >= _mean(groups[(loss, "token", "full")], lambda c, s=split: metric(c, s, "reward"))
        ]
        measured = f"{len(wins)} of {len(losses)} losses ({', '.join(wins) or 'none'})"
        verdict = "n/a" if len(losses) < 4 else ("met" if len(wins) >= 3 else "missed")
        claims.append((f"final {label} reward of latent >= token for at least 3 of the 4 losses", measured, verdict))
    ratios = []
    for loss in losses:
        token = _mean(groups[(loss, "token", "full")], lambda c: metric(c, "id", "diversity/embedding"))
        latent = _mean(groups[(loss, "latent", "full")], lambda c: metric(c, "id", "diversity/embedding"))
        if token and not math.isnan(token) and not math.isnan(latent):
            ratios.append((loss, latent / token))
    if ratios:
        mean_ratio = statistics.fmean(r for _, r in ratios)
        measured = f"latent / token {mean_ratio:.3f} (" + ", ".join(f"{loss} {r:.3f}" for loss, r in ratios) + ")"
        claims.append(
            (
                "rollout embedding diversity of latent >= 1.15x token",
                measured,
                "met" if mean_ratio >= 1.15 else "missed",
            )
        )
    else:
        claims.append(
            ("rollout embedding diversity of latent >= 1.15x token", "no embedding diversity measured", "n/a")
        )
    ablated = sorted({(loss, a) for loss, method, a in groups if method == "latent" and a != "full"})
    for loss, ablation in ablated:
        if (loss, "latent", "full") not in groups:
            continue
        full = _mean(groups[(loss, "latent", "full")], lambda c: metric(c, "ood", "reward"))
        without = _mean(groups[(loss, "latent", ablation)], lambda c: metric(c, "ood", "reward"))
        claims.append(
            (
                f"full latent model >= {ABLATION_LABELS.get(ablation, ablation)} on OOD reward ({loss})",
                f"{full:.3f} vs {without:.3f}",
                "met" if full >= without else "missed",
            )
        )
    return claims


def format_claims(cells: list[dict]) -> str:
    """[`check_claims`] as a markdown table."""
    lines = ["| claim | measured (mean over seeds) | verdict |", "|---|---|---|"]
    lines += [f"| {claim} | {measured} | {verdict} |" for claim, measured, verdict in check_claims(cells)]
    return "\n".join(lines)


def format_cells_table(cells: list[dict]) -> str:
    """One row per cell: RL steps, wall time per RL step, reward first -> last quarter, codes used and entropy."""
    lines = [
        "| cell | RL steps | s / RL step | RL reward, first -> last quarter | codes used | code entropy (nats) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for cell in sorted(cells, key=lambda c: c["name"]):
        rl, codes = cell.get("rl", {}), cell.get("codes") or {}
        used = f"{codes['used']:.0f} / {codes['num_codes']}" if codes else ""
        entropy = f"{codes['entropy']:.2f}" if codes else ""
        lines.append(
            f"| {cell['name']} | {rl.get('steps', '')} | {rl.get('seconds_per_step', math.nan):.2f} | "
            f"{rl.get('reward_first_quarter', math.nan):.3f} -> {rl.get('reward_last_quarter', math.nan):.3f} | "
            f"{used} | {entropy} |"
        )
    return "\n".join(lines)


def flatten_numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested dicts by dotted path (lists and strings are left out)."""
    if isinstance(value, bool):
        return {prefix: float(value)} if prefix else {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)} if prefix else {}
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(flatten_numbers(item, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _health_label(path: str) -> str:
    """`stages.joint.health.health/controllability` -> `joint: controllability`."""
    stage, _, name = path.removeprefix("stages.").rpartition(".health.health/")
    return f"{stage}: {name}" if stage else path


def format_health_table(cells: list[dict]) -> str:
    """The latent cells' `health` entries (whatever the pipeline reports): one row per numeric entry, one column per
    latent model (loss, ablation), mean ± std over seeds. Latent models whose columns are identical (the losses share
    stages 1-5, so their health is the same) share one column. Empty string when no cell has any."""
    groups = {k: g for k, g in group_cells(cells).items() if k[1] == "latent"}
    flat = {key: [flatten_numbers(c.get("health") or {}) for c in group] for key, group in groups.items()}
    metrics: list[str] = []
    for values in flat.values():
        for entry in values:
            metrics += [name for name in entry if name not in metrics]
    if not metrics:
        return ""

    def order(key):
        loss, _, ablation = key
        return (_index(LOSSES, loss), loss, _index(ABLATIONS, ablation), ablation)

    keys = sorted(flat, key=order)
    merged: dict[tuple[str, ...], list[str]] = {}  # column values -> the models sharing them
    for key in keys:
        column = tuple(format_mean_std([entry.get(name) for entry in flat[key]]) for name in metrics)
        loss, _, ablation = key
        merged.setdefault(column, []).append(loss if ablation == "full" else f"{loss}, {ablation}")
    header = ["health entry", *(" = ".join(models) for models in merged.values())]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(merged)]
    for i, name in enumerate(metrics):
        lines.append(f"| {_health_label(name)} | " + " | ".join(column[i] for column in merged) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plots
def _figure(ncols: int = 1):
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("The plots need matplotlib: `pip install trl-latent[metrics]`.") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = FIGURE_SIZE
    fig, axes = plt.subplots(1, max(ncols, 1), figsize=(width / _DPI, height / _DPI), dpi=_DPI, squeeze=False)
    return fig, list(axes[0])


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)  # no bbox_inches="tight": every PNG keeps FIGURE_SIZE
    plt.close(fig)
    return path


def _empty(ax, text: str = "no cells yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_reward_curves(cells: list[dict], path: Path) -> Path:
    """Rollout reward per RL step, one panel per loss: mean over seeds with a ±std band, token vs latent."""
    import numpy as np

    groups = group_cells(cells)
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSSES)
    fig, axes = _figure(len(losses))
    if not losses:
        _empty(axes[0])
    for ax, loss in zip(axes, losses):
        for method in METHODS:
            curves = [c["reward_curve"] for c in groups.get((loss, method, "full"), []) if c.get("reward_curve")]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            values = np.array([c[:length] for c in curves], dtype=float)
            mean, std = values.mean(0), values.std(0)
            steps = np.arange(1, length + 1)
            ax.plot(steps, mean, color=_COLOURS[method], label=f"{method} (n={len(curves)})")
            ax.fill_between(steps, mean - std, mean + std, color=_COLOURS[method], alpha=0.25, linewidth=0)
        ax.set_title(loss)
        ax.set_xlabel("RL step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("rollout reward")
    return _save(fig, path)


def _bars(ax, labels: list[str], series: dict[str, list[list[float]]], ylabel: str) -> None:
    """Grouped bars with std error bars: `series[name][i]` are the values behind bar `i` of that series."""
    import numpy as np

    if not labels:
        _empty(ax)
        return
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(labels))
    for i, (name, groups) in enumerate(series.items()):
        stats = [mean_std(values) for values in groups]
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            [m for m, _, _ in stats],  # NaN (no cells) draws no bar rather than a misleading zero
            width,
            yerr=[0.0 if n == 0 else s for _, s, n in stats],
            capsize=3,
            label=name,
            color=_COLOURS.get(name),
        )
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def _loss_method_series(cells, split: str, key: str):
    groups = group_cells(cells)
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSSES)
    series = {
        method: [[metric(c, split, key) for c in groups.get((loss, method, "full"), [])] for loss in losses]
        for method in METHODS
    }
    return losses, series


def plot_id_ood(cells: list[dict], path: Path) -> Path:
    """Held-out greedy reward on ID and OOD characters per loss, token vs latent (mean ± std over seeds)."""
    fig, axes = _figure(2)
    for ax, split in zip(axes, ("id", "ood")):
        losses, series = _loss_method_series(cells, split, "reward")
        _bars(ax, losses, series, "held-out reward")
        ax.set_title(f"{split.upper()} characters")
    return _save(fig, path)


def plot_diversity(cells: list[dict], path: Path) -> Path:
    """Rollout diversity on held-out ID prompts per loss: distinct-2, self-BLEU, embedding diversity."""
    fig, axes = _figure(3)
    for ax, key in zip(axes, ("diversity/distinct_2", "diversity/self_bleu", "diversity/embedding")):
        losses, series = _loss_method_series(cells, "id", key)
        if not any(_finite(v) for values in series.values() for v in values):
            _empty(ax, f"no {key}")
        else:
            _bars(ax, losses, series, key.split("/")[1])
        ax.set_title(key.split("/")[1] + (" (lower = more diverse)" if "bleu" in key else ""))
    return _save(fig, path)


def plot_ablation(cells: list[dict], path: Path) -> Path:
    """Latent models with each part switched off, ID and OOD held-out reward (mean ± std over seeds)."""
    groups = group_cells(cells)
    ablated = [(loss, a) for loss, m, a in groups if m == "latent" and a != "full"]
    fig, axes = _figure(1)
    losses = _ordered({loss for loss, _ in ablated}, LOSSES)
    variants = [(loss, a) for loss in losses for a in ABLATIONS if (loss, "latent", a) in groups]
    labels = [f"{a}\n({loss})" if len(losses) > 1 else a for loss, a in variants]
    series = {
        split.upper(): [[metric(c, split, "reward") for c in groups[(loss, "latent", a)]] for loss, a in variants]
        for split in ("id", "ood")
    }
    _bars(axes[0], labels, series, "held-out reward")
    axes[0].set_title("ablations of the latent model")
    return _save(fig, path)


def plot_code_usage(cells: list[dict], path: Path) -> Path:
    """How evenly the policy uses its codes on held-out prompts: share of sampled steps per code, codes sorted by
    use (code identities differ between seeds), mean over seeds, one line per latent model."""
    import numpy as np

    groups = group_cells(cells)
    fig, axes = _figure(1)
    ax = axes[0]
    drawn = 0
    styles = ("-", "--", ":", "-.")  # identical usage profiles would otherwise hide each other
    for (loss, method, ablation), group in sorted(groups.items()):
        histograms = [np.array(c["codes"]["histogram"], dtype=float) for c in group if c.get("codes")]
        histograms = [h for h in histograms if h.sum() > 0]
        if method != "latent" or not histograms:
            continue
        shares = np.mean([np.sort(h / h.sum())[::-1] for h in histograms], axis=0)
        label = f"{loss}" + ("" if ablation == "full" else f", {ablation}")
        style = styles[drawn % len(styles)]
        ax.step(np.arange(1, len(shares) + 1), shares, style, where="mid", label=f"{label} (n={len(histograms)})")
        drawn += 1
    if not drawn:
        _empty(ax, "no latent cells with code counts")
    else:
        ax.set_yscale("log")
        ax.set_xlabel("code rank (most used first)")
        ax.set_ylabel("share of sampled steps")
        ax.set_title("code usage on held-out prompts after RL")
        ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(cells: list[dict], output_dir: str | Path) -> dict[str, Path]:
    """Every plot of `PLOTS` as `<name>.png` in `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    draw = {
        "reward_curves": plot_reward_curves,
        "id_ood": plot_id_ood,
        "diversity": plot_diversity,
        "ablation": plot_ablation,
        "code_usage": plot_code_usage,
    }
    return {name: draw[name](cells, output_dir / f"{name}.png") for name in PLOTS}


# ------------------------------------------------------------------------------------------------ the demo
def cells_from_run(results: dict[str, Any]) -> list[dict]:
    """The demo's two arms (`run_pipeline` results) as two cells, so its plots are the study's."""
    config = results["config"]
    cells = []
    for method in METHODS:
        arm = results[method]
        rl = arm["rl"]
        cells.append(
            {
                "name": f"{config['loss']}-{method}-s{config['seed']}",
                "loss": config["loss"],
                "method": method,
                "ablation": "full",
                "seed": config["seed"],
                "reward_curve": rl["reward_curve"],
                "rl": {**rl, "seconds_per_step": rl["seconds"] / max(rl["steps"], 1)},
                "eval": arm["eval_rl"],
                "codes": arm.get("codes"),
            }
        )
    return cells


def write_run_plots(results: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """The study's plots for one `run_pipeline` run, next to its `results.json` (ablation and code-usage plots say
    when the run has no data for them). Without matplotlib the run keeps its results and says how to get plots."""
    if importlib.util.find_spec("matplotlib") is None:
        logger.warning("No plots for %s: matplotlib is missing (`pip install trl-latent[metrics]`).", output_dir)
        return {}
    return write_plots(cells_from_run(results), output_dir)
