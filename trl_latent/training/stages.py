"""The stage table: what each latent-space pre-training stage trains, on which data, with which loss terms.

The five supervised stages that build the latent action space (docs/architecture.md section 3) are rows of one table, not
classes. A row names the module groups that train (every other parameter is frozen), the loss terms with their
weights, and the data streams the terms read. [`resolve_stage`] turns a row plus a [`LatentSFTConfig`] into the
concrete plan a trainer runs: the paper's ablations (`use_cycle_loss`, `use_projector`, `use_text_only`) are switches
that remove exactly their terms (and the modules and streams only those terms needed).

| stage | streams | trainable | loss terms (weight) | world output (`"minus_base_then_merge_delta"` schedule) |
|---|---|---|---|---|
| `inverse_warmup` | paired | IDM, codebook, merge | `world/ce_paired` (1) - `inverse/entropy` (`entropy_weight`) | minus-base |
| `projector_warmup` | paired | P, P' | `projector/nll_paired` (1) + `projector/nll_inverse` (1) | (unused) |
| `joint` | paired + text | IDM, codebook, merge, P, P' | `world/ce_paired` + `world/ce_text` (1) - entropies (`entropy_weight`) + projector NLLs (`projector_weight`) + `projector/cycle` (`cycle_weight`) | minus-base |
| `policy_bc` | paired + text | policy | `policy/bc_paired` + `policy/bc_text` (1) - `policy/entropy` (`bc_entropy_weight`) | (unused) |
| `world_sft` | paired (task dialogues; images optional) | base tail (or a LoRA adapter); policy when `world_sft_bc_weight` > 0 | `world/ce_paired` (1), codes = policy argmax; + `policy/bc_task` (`world_sft_bc_weight`, optional) | merge-delta |

The world-model output form (docs/architecture.md section 2) is a property of the stage: the table's last column is the
authors' schedule; `WORLD_OUTPUT_SCHEDULES` holds the named alternatives (`LatentSFTConfig.world_output_schedule`),
and `LatentSFTConfig.world_output` overrides one stage. A stage that never runs the world model keeps the form the
model already has. The trainer writes the stage's form into the model's config, so a saved model carries the form
its last stage trained under into RL, evaluation and inference.

```python
>>> from trl_latent.training.stages import STAGES
>>> STAGES["policy_bc"].trainable
('policy',)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ABLATIONS",
    "DEFAULT_WORLD_OUTPUT_SCHEDULE",
    "PRETRAIN_STAGE_NAMES",
    "STAGES",
    "STAGE_NAMES",
    "STAGE_NUMBERS",
    "STREAMS",
    "WORLD_OUTPUT_SCHEDULES",
    "LossTerm",
    "Stage",
    "StagePlan",
    "resolve_stage",
]

# Data streams. "paired": the trainer's `train_dataset` (image-text records; the task dialogues for `world_sft`).
# "text": the trainer's `text_dataset` (text-only records), mixed 1:1 with the paired stream per step.
STREAMS = ("paired", "text")

# The ablation switches of the paper (section 5.4 of arXiv 2601.07516), as `LatentSFTConfig` field names.
SWITCHES = ("use_text_only", "use_projector", "use_cycle_loss")
# The paper's ablations, each one switch turned off (name -> field). Here, not in `latent_sft_config` (which re-exports
# it), so that reading the names does not import TRL's config classes and transformers' training stack.
ABLATIONS = {"no_cycle_loss": "use_cycle_loss", "no_projector": "use_projector", "no_text_only": "use_text_only"}


@dataclass(frozen=True)
class LossTerm:
    """One term of a stage's loss.

    Args:
        name (`str`): the term, also its logged metric key (e.g. `"world/ce_paired"`).
        stream (`str`): the data stream it reads (`"paired"` or `"text"`).
        weight (`float` or `str`): a fixed weight, or the name of the `LatentSFTConfig` field holding it.
        sign (`float`): +1 to minimise the term, -1 to maximise it (the IDM entropy terms).
        requires (`tuple[str, ...]`): ablation switches that must all be on for the term to exist.
        optional (`bool`): the term exists only when its weight is not zero (an opt-in regulariser).
    """

    name: str
    stream: str
    weight: float | str = 1.0
    sign: float = 1.0
    requires: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class Stage:
    """One row of the stage table.

    Args:
        name (`str`): the stage name (`LatentSFTConfig.stage`).
        trainable (`tuple[str, ...]`): module groups of [`LatentActionModel`] that train.
        terms (`tuple[LossTerm, ...]`): the loss terms.
        group_requires (`dict[str, tuple[str, ...]]`): module groups that train only while these switches are on.
        group_weights (`dict[str, str]`): module groups that train only while the config field named here (a loss
            weight) is not zero.
        base_trainable (`bool`): whether part of the base model trains (the world-model SFT trainable set, or a LoRA
            adapter on the base).
        code_source (`str`): where the world model's codes come from, `"inverse"` (the IDM) or `"policy"`.
        paired_requires_image (`bool`): whether each paired record must hold an image.
        world_output (`str` or `None`): the world-model output form the stage trains under in the authors' schedule
            (`None`: the stage does not run the world model).
        description (`str`): one line for docs and errors.
    """

    name: str
    trainable: tuple[str, ...]
    terms: tuple[LossTerm, ...]
    group_requires: dict[str, tuple[str, ...]] = field(default_factory=dict)
    group_weights: dict[str, str] = field(default_factory=dict)
    base_trainable: bool = False
    code_source: str | None = None
    paired_requires_image: bool = True
    world_output: str | None = None
    description: str = ""


_ENTROPY = dict(weight="entropy_weight", sign=-1.0)  # the sign raises the entropy: codes stay in use

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            name="inverse_warmup",
            trainable=("inverse_dynamics", "codebook", "world_merge"),
            terms=(
                LossTerm("world/ce_paired", "paired"),
                LossTerm("inverse/entropy", "paired", **_ENTROPY),
            ),
            code_source="inverse",
            world_output="residual_minus_base",
            description="stage 1: inverse dynamics warm-up on paired data",
        ),
        Stage(
            name="projector_warmup",
            trainable=("projector", "inverse_projector"),
            terms=(
                LossTerm("projector/nll_paired", "paired", requires=("use_projector",)),
                LossTerm("projector/nll_inverse", "paired", requires=("use_projector",)),
            ),
            group_requires={"projector": ("use_projector",), "inverse_projector": ("use_projector",)},
            description="stage 2: projector warm-up on paired data",
        ),
        Stage(
            name="joint",
            trainable=("inverse_dynamics", "codebook", "world_merge", "projector", "inverse_projector"),
            terms=(
                LossTerm("world/ce_paired", "paired"),
                LossTerm("world/ce_text", "text", requires=("use_text_only",)),
                LossTerm("inverse/entropy", "paired", **_ENTROPY),
                LossTerm("inverse/entropy_text", "text", requires=("use_text_only",), **_ENTROPY),
                LossTerm("projector/nll_paired", "paired", weight="projector_weight", requires=("use_projector",)),
                LossTerm("projector/nll_inverse", "paired", weight="projector_weight", requires=("use_projector",)),
                LossTerm(
                    "projector/cycle",
                    "text",
                    weight="cycle_weight",
                    requires=("use_text_only", "use_projector", "use_cycle_loss"),
                ),
            ),
            group_requires={"projector": ("use_projector",), "inverse_projector": ("use_projector",)},
            code_source="inverse",
            world_output="residual_minus_base",
            description="stage 3: joint inverse dynamics and projector training on paired and text-only data",
        ),
        Stage(
            name="policy_bc",
            trainable=("policy",),
            terms=(
                LossTerm("policy/bc_paired", "paired"),
                LossTerm("policy/bc_text", "text", requires=("use_text_only",)),
                LossTerm("policy/entropy", "paired", weight="bc_entropy_weight", sign=-1.0, optional=True),
            ),
            code_source="inverse",
            description="stage 4: policy behaviour cloning of the IDM's argmax codes",
        ),
        Stage(
            name="world_sft",
            trainable=("policy",),
            terms=(
                LossTerm("world/ce_paired", "paired"),
                LossTerm("policy/bc_task", "paired", weight="world_sft_bc_weight", optional=True),
            ),
            group_weights={"policy": "world_sft_bc_weight"},
            base_trainable=True,
            code_source="policy",
            paired_requires_image=False,
            world_output="merge_delta",
            description="stage 5: action-guided task SFT of the base (world model) with the policy's argmax codes",
        ),
    )
}
STAGE_NAMES = tuple(STAGES)
# Stages 1-4 read the pre-training corpora (paired image-text and text-only); stage 5 reads the task's dialogues.
PRETRAIN_STAGE_NAMES = tuple(name for name in STAGE_NAMES if name != "world_sft")
# The stage numbers of the paper and the stage commands: "1" -> "inverse_warmup", ..., "5" -> "world_sft".
STAGE_NUMBERS = {str(number): name for number, name in enumerate(STAGE_NAMES, start=1)}

# Named world-output schedules: stage -> the form it trains under (stages that do not run the world model are left
# out and keep the model's form). "minus_base_then_merge_delta" (the paper's and the authors' code) is the table's
# column: minus-base while the codebook is learned, then merge-delta for task SFT, RL and inference. The other
# schedules train every stage under one form (docs/model.md compares them on the embedded task).
_WORLD_STAGES = tuple(name for name, stage in STAGES.items() if stage.world_output is not None)
# The library's default is the authors' schedule (`LatentSFTConfig.world_output_schedule`); an experiment that measured
# another one better sets it in its own config.
DEFAULT_WORLD_OUTPUT_SCHEDULE = "minus_base_then_merge_delta"
WORLD_OUTPUT_SCHEDULES: dict[str, dict[str, str]] = {
    "minus_base_then_merge_delta": {name: STAGES[name].world_output for name in _WORLD_STAGES},
    # Merge-delta while the codebook is learned, then the base's own logits plus the merge-delta code expert from stage
    # 5 on: stage 5 trains the base through its direct path to lm_head (as token SFT does) while the frozen code
    # expert keeps the codes' meaning.
    "merge_delta_then_base_plus_delta": {
        name: "base_plus_delta" if name == "world_sft" else "merge_delta" for name in _WORLD_STAGES
    },
    **{
        form: dict.fromkeys(_WORLD_STAGES, form)
        for form in ("base_plus_delta", "residual_norm", "merge_delta", "residual", "residual_minus_base")
    },
}


@dataclass(frozen=True)
class StagePlan:
    """A stage row resolved against a config: what a trainer actually runs.

    Args:
        stage ([`Stage`]): the row.
        trainable (`tuple[str, ...]`): module groups that train.
        base_trainable (`bool`): whether part of the base trains.
        weights (`dict[str, float]`): active loss term -> signed weight (the loss is `sum(weight * term)`).
        streams (`tuple[str, ...]`): data streams the active terms read.
        world_output (`str` or `None`): the world-model output form the stage trains under (`None`: the model's own).
        text_only_base (`bool`): resolved for a text-only base (Qwen2, Llama): its text records are the paired
            (observation) stream, and there is no projector and no separate text-only stream.
    """

    stage: Stage
    trainable: tuple[str, ...]
    base_trainable: bool
    weights: dict[str, float]
    streams: tuple[str, ...]
    world_output: str | None = None
    text_only_base: bool = False

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def paired_requires_image(self) -> bool:
        """Whether each record of the paired (observation) stream must hold an image: never on a text-only base."""
        return self.stage.paired_requires_image and not self.text_only_base

    def uses(self, stream: str) -> bool:
        return stream in self.streams

    def has(self, term: str) -> bool:
        return term in self.weights


def _switches_on(config, requires: tuple[str, ...]) -> bool:
    return all(bool(getattr(config, switch)) for switch in requires)


# The switches a text-only base turns off whatever the config says: it has no image-text states, so no projector (which
# maps text-only states to image-text states) and no text-only stream apart from its one (observation) stream.
TEXT_ONLY_BASE_OFF = ("use_projector", "use_text_only", "use_cycle_loss")


class _TextOnlyBaseView:
    """A config as a text-only base reads it: `TEXT_ONLY_BASE_OFF` switches off, every other field the config's."""

    def __init__(self, config):
        self._config = config

    def __getattr__(self, name):
        return False if name in TEXT_ONLY_BASE_OFF else getattr(self._config, name)


def resolve_stage(config, text_only_base: bool = False) -> StagePlan:
    """Resolve the row of `config.stage` against the config's ablation switches and loss weights.

    Args:
        config ([`LatentSFTConfig`] or any object with `stage`, the switches in `SWITCHES` and the weight fields).
        text_only_base (`bool`, *optional*, defaults to `False`): resolve for a text-only base (Qwen2, Llama). Its
            text records are the paired (observation) stream; it has no projector (P maps text-only states to
            image-text states, which a text-only base does not have), so the projector terms and modules and the
            separate text-only stream are removed (`TEXT_ONLY_BASE_OFF`), and `projector_warmup` is refused.

    Returns:
        [`StagePlan`]

    Raises:
        `ValueError`: unknown stage, a stage left with nothing to train or no loss term, or `projector_warmup` on a
        text-only base.
    """
    if config.stage not in STAGES:
        raise ValueError(f"Unknown stage {config.stage!r}; choose one of {STAGE_NAMES}.")
    stage = STAGES[config.stage]
    if text_only_base:
        if stage.name == "projector_warmup":
            raise ValueError(
                "Stage 'projector_warmup' trains the projector, which maps text-only states to image-text states; a "
                "text-only base has no image-text states, hence no projector: skip this stage (run inverse_warmup, "
                "joint, policy_bc, world_sft)."
            )
        config = _TextOnlyBaseView(config)
    weights = {}
    for term in stage.terms:
        if not _switches_on(config, term.requires):
            continue
        weight = getattr(config, term.weight, 0.0) if isinstance(term.weight, str) else term.weight
        if term.optional and not weight:
            continue
        weights[term.name] = term.sign * float(weight)
    trainable = tuple(
        group
        for group in stage.trainable
        if _switches_on(config, stage.group_requires.get(group, ()))
        and (group not in stage.group_weights or getattr(config, stage.group_weights[group], 0.0))
    )
    if not weights or not (trainable or stage.base_trainable):
        raise ValueError(
            f"Stage {stage.name!r} has nothing left to train with use_projector={config.use_projector}, "
            f"use_text_only={config.use_text_only}, use_cycle_loss={config.use_cycle_loss}: the "
            f"{stage.name} stage only trains the projectors, so skip it when running the no-projector ablation."
        )
    streams = tuple(s for s in STREAMS if any(t.stream == s for t in stage.terms if t.name in weights))
    return StagePlan(
        stage, trainable, stage.base_trainable, weights, streams, _world_output(config, stage), text_only_base
    )


def _world_output(config, stage: Stage) -> str | None:
    if stage.world_output is None:  # the stage never runs the world model
        return None
    explicit = getattr(config, "world_output", None)
    if explicit is not None:
        return explicit
    schedule = getattr(config, "world_output_schedule", DEFAULT_WORLD_OUTPUT_SCHEDULE)
    if schedule not in WORLD_OUTPUT_SCHEDULES:
        raise ValueError(f"Unknown world_output_schedule {schedule!r}; choose one of {tuple(WORLD_OUTPUT_SCHEDULES)}.")
    return WORLD_OUTPUT_SCHEDULES[schedule][stage.name]
