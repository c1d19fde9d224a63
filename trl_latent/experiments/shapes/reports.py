"""Tables and plots of latent vs token RL runs: the study's grid of cells (`trl_latent.experiments.shapes.study`) and the demo's single
run (`trl_latent.experiments.shapes.pipeline.run_pipeline`) go through the same functions.

A *cell* is one RL run, a dict with at least `loss`, `method` (`"token"` or `"latent"`), `ablation` (`"full"` or the
switch turned off), `seed`, `reward_curve` (rollout reward per RL step), `eval` (held-out metrics after RL per split
`id`/`ood`/`held_out`: `all`, `reward`, `diversity/...`, each generation-averaged metric with its `<key>_std`) and
`codes` (latent cells: `histogram`, the count of each code sampled on the held-out prompts). The study's cells also
hold `eval_start` (the same before RL), `base` (the pretrained base: `pretrain.answer_token_accuracy`, `eval_base`),
`health` (latent cells: the stages' latent-space health by path) and, in token cells, `baseline` (the more-data
baseline: token SFT with the text-only corpus mixed in, no RL). Tables give mean ± std over seeds; plots are PNGs of
`FIGURE_SIZE` pixels (matplotlib, Agg).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ...metrics.stats import mean_std as sample_mean_std
from ...training.losses import LOSS_NAMES
from ...training.stages import ABLATIONS as LATENT_ABLATIONS
from ..kl_budget import ARMS
from ..verdicts import MET, MISSED, WITHIN_NOISE, Verdict, paired_verdict, range_verdict
from .evaluate import SPLITS

logger = logging.getLogger(__name__)

METHODS = ARMS
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
    "id_ood": "Held-out reward on ID characters, OOD characters and held-out combinations after RL, mean ± std over "
    "seeds.",
    "diversity": "Diversity of sampled rollouts on held-out ID prompts after RL, mean ± std over seeds.",
    "ablation": "Held-out reward of the latent model with each part switched off, mean ± std over seeds.",
    "code_usage": "Share of sampled steps per code on held-out prompts after RL, codes sorted by use, mean over seeds.",
}
_COLOURS = {"token": "#4c72b0", "latent": "#dd8452"}

# The evaluation splits, in table order: ID characters, OOD characters, ID characters on held-out combinations.

# Table columns: (header, split, metric key).
COLUMNS = (
    ("ID accuracy", "id", "all"),
    ("ID reward", "id", "reward"),
    ("OOD accuracy", "ood", "all"),
    ("OOD reward", "ood", "reward"),
    ("held-out combos accuracy", "held_out", "all"),
    ("held-out combos reward", "held_out", "reward"),
    ("distinct-2", "id", "diversity/distinct_2"),
    ("self-BLEU", "id", "diversity/self_bleu"),
    ("embedding diversity", "id", "diversity/embedding"),
)
COLUMN_NOTES = {
    "ID accuracy": "share of sampled answers (3 per prompt, temperature 0.1, top-k 64) with colour, shape, count and "
    "voice all right, characters seen in training",
    "ID reward": "mean rubric reward (the paper's judge ratio) of the same answers, characters seen in training",
    "OOD accuracy": "as ID accuracy, on characters never seen in training (their voices only the general text has)",
    "OOD reward": "as ID reward, on characters never seen in training",
    "held-out combos accuracy": "as ID accuracy, ID characters on colour/shape combinations only the general text shows",
    "held-out combos reward": "as ID reward, on the held-out combinations",
    "distinct-2": "unique / all word pairs within a prompt's sampled rollouts, ID (higher = more diverse)",
    "self-BLEU": "BLEU of each sampled rollout against the rest of its group, ID (lower = more diverse)",
    "embedding diversity": "1 / mean pairwise cosine similarity of MiniLM embeddings per group, ID (paper's measure)",
    "answer tokens": "share of held-out task dialogues' answer tokens the model predicts (teacher forcing; plain VLMs)",
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
def _table(rows: list[tuple[list[str], list[dict]]], lead: list[str], extra=()) -> str:
    """`rows` of (labels, cells): a column per `COLUMNS` entry, then one per `extra` entry (header, the value of a
    cell), each mean ± std over the row's cells."""
    header = [*lead, "seeds", *(name for name, _, _ in COLUMNS), *(name for name, _ in extra)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(lead) + "---:|" * (len(header) - len(lead))]
    for labels, group in rows:
        values = [format_mean_std([metric(c, split, key) for c in group]) for _, split, key in COLUMNS]
        values += [format_mean_std([value(c) for c in group]) for _, value in extra]
        lines.append("| " + " | ".join([*labels, str(len(group)), *values]) + " |")
    return "\n".join(lines)


def format_main_table(cells: list[dict]) -> str:
    """The paper's table shape: rows loss x method (full models), columns ID, OOD, held-out combinations and
    diversity, mean ± std."""
    groups = group_cells(cells)
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSS_NAMES)
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
        for loss in _ordered(ablated, LOSS_NAMES)
        for ablation in ABLATIONS
        if (loss, "latent", ablation) in groups
    ]
    return _table(rows, ["loss", "latent model"])


def format_legend() -> str:
    return "\n".join(f"- **{name}**: {note}" for name, note in COLUMN_NOTES.items())


def _get(value, *path):
    """`value[path[0]][path[1]]...`, or None where any step is missing."""
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _full(cells: list[dict], method: str) -> list[dict]:
    return [c for c in cells if c["method"] == method and c.get("ablation", "full") == "full"]


def one_per_seed(cells: list[dict], value) -> list:
    """`value(cell)` for one cell per seed (the first, in loss order, where it is not None), in seed order: for what
    all cells of a seed share from one cached prefix (the base, the token SFT model, the latent stages 1-5, the
    more-data baseline), so that a seed counts once however many losses ran."""
    found: dict[int, Any] = {}
    for cell in sorted(cells, key=lambda c: (_index(LOSS_NAMES, c["loss"]), c["loss"])):
        if cell["seed"] not in found and (v := value(cell)) is not None:
            found[cell["seed"]] = v
    return [found[seed] for seed in sorted(found)]


def starting_points(cells: list[dict]) -> list[tuple[str, list[dict]]]:
    """The models before RL, as (label, one entry per seed with `eval` and `answer_tokens`): the pretrained base, the
    token SFT model, the more-data baseline (token SFT with the text-only corpus mixed in, no RL; token cells carry
    it) and the full latent model after stages 1-5. Labels without any cell are left out."""

    def entry(evaluation, answer_tokens=None):
        return None if evaluation is None else {"eval": evaluation, "answer_tokens": answer_tokens}

    token, latent = _full(cells, "token"), _full(cells, "latent")
    rows = [
        (
            "base (general pretraining)",
            one_per_seed(
                cells,
                lambda c: entry(_get(c, "base", "eval_base"), _get(c, "base", "pretrain", "answer_token_accuracy")),
            ),
        ),
        (
            "token: SFT",
            one_per_seed(token, lambda c: entry(c.get("eval_start"), _get(c, "arm", "sft", "answer_token_accuracy"))),
        ),
        (
            "token: SFT with the text-only corpus (more-data baseline)",
            one_per_seed(
                token,
                lambda c: entry(_get(c, "baseline", "eval_sft"), _get(c, "baseline", "sft", "answer_token_accuracy")),
            ),
        ),
        ("latent: stages 1-5", one_per_seed(latent, lambda c: entry(c.get("eval_start")))),
    ]
    return [(label, group) for label, group in rows if group]


def format_start_table(cells: list[dict]) -> str:
    """The models RL starts from, and the more-data baseline beside them: rows [`starting_points`], the main table's
    columns plus answer-token accuracy, mean ± std over seeds. Empty string when no cell holds them."""
    rows = [([label], group) for label, group in starting_points(cells)]
    if not rows:
        return ""
    return _table(rows, ["model (before RL)"], extra=[("answer tokens", lambda c: c["answer_tokens"])])


def start_metric(cell: dict, split: str, key: str):
    """A held-out metric of the cell's model before RL (after its SFT: token SFT, or latent stages 1-5)."""
    return cell.get("eval_start", {}).get(split, {}).get(key)


def _gain(cell: dict, split: str, key: str = "reward"):
    after, before = metric(cell, split, key), start_metric(cell, split, key)
    return None if after is None or before is None else after - before


def format_gain_table(cells: list[dict]) -> str:
    """What RL did: held-out reward before RL (the SFT start) and after, and the per-seed gain, on each split (ID,
    OOD, held-out combinations), rows loss x method (full models), mean ± std over seeds."""
    groups = group_cells(cells)
    header = ["loss", "method", "seeds"]
    for _, label in SPLITS:
        header += [f"{label} reward before RL", f"{label} reward after RL", f"{label} gain"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSS_NAMES)
    for loss in losses:
        for method in METHODS:
            group = groups.get((loss, method, "full"))
            if not group:
                continue
            row = [loss, method, str(len(group))]
            for split, _ in SPLITS:
                row += [
                    format_mean_std([start_metric(c, split, "reward") for c in group]),
                    format_mean_std([metric(c, split, "reward") for c in group]),
                    format_mean_std([_gain(c, split) for c in group]),
                ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def coinciding_losses(cells: list[dict]) -> list[str]:
    """One sentence per pair of losses whose cells gave the same held-out numbers for every seed and method they
    share (full models): a reader should not take two rows that coincide for two independent results. Under the
    study's schedule (several micro-batches and passes per generation batch, DAPO's clip-higher) the objectives
    differ, so coinciding runs are a finding; only with one on-policy step per generation batch do DAPO and BNPO
    coincide by construction, and the sentence says so."""
    by_key = {(c["loss"], c["method"], c["seed"]): c for c in cells if c.get("ablation", "full") == "full"}
    losses = _ordered({loss for loss, _, _ in by_key}, LOSS_NAMES)
    notes = []
    for i, first in enumerate(losses):
        for second in losses[i + 1 :]:
            shared = [(m, s) for (loss, m, s) in by_key if loss == first and (second, m, s) in by_key]
            if not shared or any(
                by_key[(first, m, s)].get("eval") != by_key[(second, m, s)].get("eval") for m, s in shared
            ):
                continue
            schedules = {
                (_get(c, "config", "rl_micro_batches"), _get(c, "config", "rl_iterations"))
                for m, s in shared
                for c in (by_key[(first, m, s)], by_key[(second, m, s)])
            }
            note = f"{first} and {second} gave identical held-out numbers in all {len(shared)} cells they share"
            if {first, second} == {"dapo", "bnpo"} and schedules == {(1, 1)}:
                note += (
                    ": expected with one on-policy optimisation step per generation batch, where DAPO's normalisation "
                    "by the batch's completion tokens is BNPO's and the clipped ratio is exactly 1, so clip-higher "
                    "never acts."
                )
            else:
                shown = ", ".join(f"{mb} micro-batches x {it} passes" for mb, it in sorted(schedules, key=str))
                note += (
                    f" under a schedule where their updates should differ ({shown} per generation batch): a finding "
                    "to examine, not two independent results."
                )
            notes.append(note)
    return notes


def _mean(cells: list[dict], value) -> float:
    return mean_std([value(c) for c in cells])[0]


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _verdict(value: float, met: bool) -> str:
    """A verdict on one measurement that is not a seed statistic (the study's wall time)."""
    return "n/a" if math.isnan(value) else ("met" if met else "missed")


def _per_seed(cells: list[dict], value) -> dict[int, float]:
    """`value(cell)` by seed (the first cell of a seed with a finite value)."""
    found: dict[int, float] = {}
    for cell in cells:
        v = value(cell)
        if cell["seed"] not in found and v is not None and math.isfinite(float(v)):
            found[cell["seed"]] = float(v)
    return found


def _paired(groups, first: tuple, second: tuple, value, combine=lambda a, b: a - b) -> dict[int, float]:
    """`combine(value(first's cell), value(second's cell))` for each seed both groups ran: paired by seed."""
    a, b = _per_seed(groups.get(first, []), value), _per_seed(groups.get(second, []), value)
    return {seed: combine(a[seed], b[seed]) for seed in sorted(a.keys() & b.keys())}


def _latent_token_pairs(groups, split: str, key: str, combine=lambda la, t: la - t) -> dict[str, dict[int, float]]:
    """Per loss (both full arms ran), `combine(latent, token)` of a held-out metric per seed."""
    losses = _ordered({loss for loss, _, a in groups if a == "full"}, LOSS_NAMES)
    pairs = {}
    for loss in losses:
        paired = _paired(
            groups, (loss, "latent", "full"), (loss, "token", "full"), lambda c: metric(c, split, key), combine
        )
        if paired:
            pairs[loss] = paired
    return pairs


def _mean_over_losses(pairs: dict[str, dict[int, float]]) -> list[float]:
    """Per seed, the mean over losses of a paired value: the seed is the unit of noise (the losses of a seed share its
    base, SFT model and latent stages)."""
    seeds = sorted({seed for by_seed in pairs.values() for seed in by_seed})
    return [statistics.fmean(p[seed] for p in pairs.values() if seed in p) for seed in seeds]


def _claim(target: str, measured: str, verdict: Verdict) -> tuple[str, str, str]:
    return target, measured, verdict.verdict


def _latent_vs_token(groups, split: str, key: str, target: str, latent_lower: bool = False) -> tuple[str, str, str]:
    """A claim that latent is at least token's (at most, `latent_lower`) on a held-out metric: latent - token paired by
    seed, each seed's difference the mean over the losses where both arms ran."""
    pairs = _latent_token_pairs(groups, split, key)
    if not pairs:
        return target, "no cells with both arms", "n/a"
    verdict = paired_verdict(_mean_over_losses(pairs), higher_is_better=not latent_lower)
    return _claim(target, f"latent - token {verdict.describe()}, mean over {len(pairs)} losses", verdict)


def _per_loss_claim(groups, split: str, label: str) -> tuple[str, str, str]:
    """Latent >= token on a split's final reward for at least 3 of the 4 losses, each loss a paired verdict: met when
    3 losses clear the noise, missed when 2 clear it the wrong way (3 can no longer be met), within noise otherwise."""
    target = f"final {label} reward of latent >= token for at least 3 of the 4 losses"
    pairs = _latent_token_pairs(groups, split, "reward")
    verdicts = {loss: paired_verdict(list(by_seed.values())) for loss, by_seed in pairs.items()}
    measured = "; ".join(f"{loss} {v.describe()}: {v.verdict}" for loss, v in verdicts.items()) or "no cells"
    met = sum(v.verdict == MET for v in verdicts.values())
    missed = sum(v.verdict == MISSED for v in verdicts.values())
    if len(verdicts) < len(LOSS_NAMES):
        verdict = "n/a"
    elif met >= 3:
        verdict = MET
    elif missed >= 2:
        verdict = MISSED
    else:
        verdict = WITHIN_NOISE
    return target, f"latent - token per loss: {measured}", verdict


# The kinds of content word whose controllability the latent-space health measures (pipeline.CONTENT_WORDS).
CONTENT_KINDS = ("colour", "shape", "count", "voice")
# The full study's wall-time target, and how many processes share the machine for it.
STUDY_HOURS, STUDY_PROCESSES = 2.0, 2


def world_sft_health(cell: dict, name: str):
    """A latent cell's latent-space health entry `health/<name>` after stage 5 (world-model SFT), or None."""
    return _get(cell, "health", "stages.world_sft.health", f"health/{name}")


def _study_time(cells: list[dict]) -> list[tuple[str, str, str]]:
    claims = []
    smoke = [c for c in cells if _get(c, "config", "size") == "tiny"]
    full = [c for c in cells if c not in smoke]
    seeds = {c["seed"] for c in full}
    expected = (len(LOSS_NAMES) * len(METHODS) + len(LATENT_ABLATIONS)) * len(seeds)
    target = f"the full study in at most {STUDY_HOURS:g} hours as {STUDY_PROCESSES} processes"
    seconds = [c.get("seconds") for c in full]
    if not full or len(_finite(seconds)) < len(full):
        claims.append((target, "no full-size cells with their time", "n/a"))
    else:
        hours = sum(_finite(seconds)) / STUDY_PROCESSES / 3600
        measured = (
            f"{hours:.2f} h (all cells' time {hours * STUDY_PROCESSES:.2f} h / {STUDY_PROCESSES}, {len(full)} cells"
        )
        if len(full) < expected:
            claims.append((target, f"{measured} of {expected}: grid not finished)", "n/a"))
        else:
            claims.append((target, measured + ")", _verdict(hours, hours <= STUDY_HOURS)))
    target = "one cell at smoke size (`--quick`), as CI runs it"
    if smoke:
        slowest = max(_finite(c.get("seconds") for c in smoke), default=math.nan)
        claims.append((target, f"slowest of {len(smoke)} smoke-size cells {_number(slowest, 0)} s", "met"))
    else:
        claims.append(
            (target, "no smoke-size cells here (CI runs two in tests/experiments/shapes/test_study.py)", "n/a")
        )
    return claims


def check_claims(cells: list[dict]) -> list[tuple[str, str, str]]:
    """The study's targets and the paper's claims on this task, each as (target, what was measured, verdict).

    Every comparison is paired by seed and judged by [`~trl_latent.experiments.verdicts.paired_verdict`]: "met" only
    when every seed agrees and the mean clears two standard errors, "missed" when it clears them the wrong way,
    "within noise" otherwise, "n/a" without the cells (or with one seed). What all cells of a seed share (base, token
    SFT, latent stages 1-5) counts once per seed ([`one_per_seed`]); a claim over losses takes, per seed, the mean over
    the losses of the paired difference.

    - RL has room: token SFT's ID all-correct in [0.2, 0.7]; token GRPO raises it by at least 0.05.
    - The base alone predicts at most 0.6 of the answer tokens of task dialogues.
    - Codes steer: content-position controllability after stage 5 of at least 3 right-kind words; latent rollouts at
      least as diverse as token rollouts (ID self-BLEU at or below, embedding diversity at or above).
    - The paper's claims: final reward of latent >= token for at least 3 of the 4 losses (ID and OOD); embedding
      diversity of latent >= 1.15x token; latent >= token on the held-out combinations and on the OOD characters
      (reward); the full latent model >= each ablation on OOD reward.
    - Cost: the full study in at most 2 hours as two processes; a cell at smoke size runs in CI.
    """
    groups = group_cells(cells)
    token, latent = _full(cells, "token"), _full(cells, "latent")
    claims = []

    values = one_per_seed(token, lambda c: start_metric(c, "id", "all"))
    verdict = range_verdict(values, 0.2, 0.7)
    claims.append(
        _claim(
            "RL has room: token SFT's ID all-correct between 0.2 and 0.7",
            f"{format_mean_std(values)} ({len(values)} seeds)",
            verdict,
        )
    )
    grpo = groups.get(("grpo", "token", "full"), [])
    verdict = paired_verdict([_gain(c, "id", "all") for c in grpo], threshold=0.05)
    before, after = _mean(grpo, lambda c: start_metric(c, "id", "all")), _mean(grpo, lambda c: metric(c, "id", "all"))
    claims.append(
        _claim(
            "RL has room: token GRPO raises ID all-correct by at least 0.05",
            f"{_number(before)} -> {_number(after)}, gain {verdict.describe()}",
            verdict,
        )
    )
    values = one_per_seed(cells, lambda c: _get(c, "base", "pretrain", "answer_token_accuracy"))
    verdict = paired_verdict(values, threshold=0.6, higher_is_better=False)
    claims.append(
        _claim(
            "base alone: at most 0.6 of answer tokens on task dialogues",
            f"{format_mean_std(values)} ({len(values)} seeds)",
            verdict,
        )
    )
    values = one_per_seed(latent, lambda c: world_sft_health(c, "content_controllability"))
    kinds = []
    for kind in CONTENT_KINDS:
        kind_mean = mean_std(
            one_per_seed(latent, lambda c, k=kind: world_sft_health(c, f"content_controllability/{k}"))
        )[0]
        if not math.isnan(kind_mean):
            kinds.append(f"{kind} {kind_mean:.2f}")
    verdict = paired_verdict(values, threshold=3)
    claims.append(
        _claim(
            "codes steer: content-position controllability after stage 5 of at least 3 right-kind words",
            f"{format_mean_std(values, 2)} ({', '.join([*kinds, f'{len(values)} seeds'])})",
            verdict,
        )
    )
    claims.append(
        _latent_vs_token(
            groups, "id", "diversity/self_bleu", "codes steer: latent self-BLEU at or below token's (ID)", True
        )
    )
    claims.append(
        _latent_vs_token(
            groups, "id", "diversity/embedding", "codes steer: latent embedding diversity at or above token's (ID)"
        )
    )
    claims.append(_per_loss_claim(groups, "id", "ID"))
    claims.append(_per_loss_claim(groups, "ood", "OOD"))
    target = "rollout embedding diversity of latent >= 1.15x token"
    pairs = _latent_token_pairs(groups, "id", "diversity/embedding", lambda la, t: la / t if t else math.nan)
    if pairs:
        verdict = paired_verdict(_mean_over_losses(pairs), threshold=1.15)
        claims.append(
            _claim(target, f"latent / token {verdict.describe(signed=False)}, mean over {len(pairs)} losses", verdict)
        )
    else:
        claims.append((target, "no embedding diversity measured", "n/a"))
    claims.append(
        _latent_vs_token(groups, "held_out", "reward", "latent >= token on the held-out combinations (reward)")
    )
    claims.append(_latent_vs_token(groups, "ood", "reward", "latent >= token on the OOD characters (reward)"))
    ablated = sorted({(loss, a) for loss, method, a in groups if method == "latent" and a != "full"})
    for loss, ablation in ablated:
        if (loss, "latent", "full") not in groups:
            continue
        paired = _paired(
            groups, (loss, "latent", "full"), (loss, "latent", ablation), lambda c: metric(c, "ood", "reward")
        )
        verdict = paired_verdict(list(paired.values()))
        claims.append(
            _claim(
                f"full latent model >= {ABLATION_LABELS.get(ablation, ablation)} on OOD reward ({loss})",
                f"full - ablated {verdict.describe()}",
                verdict,
            )
        )
    return claims + _study_time(cells)


def format_claims(cells: list[dict]) -> str:
    """[`check_claims`] as a markdown table."""
    lines = ["| target | measured (paired by seed: mean ± std) | verdict |", "|---|---|---|"]
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
        return (_index(LOSS_NAMES, loss), loss, _index(ABLATIONS, ablation), ablation)

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
        raise ImportError("The plots need matplotlib: `pip install trl-latent[experiments]`.") from err

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
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSS_NAMES)
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
    losses = _ordered({loss for loss, _, ablation in groups if ablation == "full"}, LOSS_NAMES)
    series = {
        method: [[metric(c, split, key) for c in groups.get((loss, method, "full"), [])] for loss in losses]
        for method in METHODS
    }
    return losses, series


def plot_id_ood(cells: list[dict], path: Path) -> Path:
    """Held-out reward on ID characters, OOD characters and held-out combinations per loss, token vs latent (mean ±
    std over seeds)."""
    fig, axes = _figure(len(SPLITS))
    for ax, (split, label) in zip(axes, SPLITS):
        losses, series = _loss_method_series(cells, split, "reward")
        _bars(ax, losses, series, "held-out reward")
        ax.set_title(label if split == "held_out" else f"{label} characters")
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
    """Latent models with each part switched off, held-out reward per split (mean ± std over seeds)."""
    groups = group_cells(cells)
    ablated = [(loss, a) for loss, m, a in groups if m == "latent" and a != "full"]
    fig, axes = _figure(1)
    losses = _ordered({loss for loss, _ in ablated}, LOSS_NAMES)
    variants = [(loss, a) for loss in losses for a in ABLATIONS if (loss, "latent", a) in groups]
    labels = [f"{a}\n({loss})" if len(losses) > 1 else a for loss, a in variants]
    series = {
        label: [[metric(c, split, "reward") for c in groups[(loss, "latent", a)]] for loss, a in variants]
        for split, label in SPLITS
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
                "eval_start": arm.get("eval_sft"),
                "codes": arm.get("codes"),
                "baseline": results.get("token_text") if method == "token" else None,
            }
        )
    return cells


def write_run_plots(results: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """The study's plots for one `run_pipeline` run, next to its `results.json` (ablation and code-usage plots say
    when the run has no data for them). Without matplotlib the run keeps its results and says how to get plots."""
    if importlib.util.find_spec("matplotlib") is None:
        logger.warning("No plots for %s: matplotlib is missing (`pip install trl-latent[experiments]`).", output_dir)
        return {}
    return write_plots(cells_from_run(results), output_dir)
