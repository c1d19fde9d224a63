"""Counting on the `meta` device: which model, which stage, how many parameters per module and which of them train."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

# Stage aliases: the numbers of the paper's table (docs/architecture.md section 3) and RL.
RL_STAGE = "grpo"
RL_ALIASES = ("grpo", "rl", "6")

# The released configs of these ids are held offline (`trl_latent.modeling.real_shapes.REAL_SHAPES`).
KNOWN_MODEL_IDS = {"qwen/qwen2.5-vl-3b-instruct": "3b", "qwen/qwen2.5-vl-7b-instruct": "7b"}

# LoRA targets the plan counts: every attention and MLP projection of the base LM layers (world-model SFT), or of the
# policy layers (RL, `POLICY_LORA_TARGET_MODULES`).
BASE_LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class PlanError(ValueError):
    """Bad input to the planner: the message says what was wrong and what to pass instead."""


@dataclass(frozen=True)
class ModuleCount:
    """Parameters of one module group: all of them and those the stage trains."""

    name: str
    params: int
    trainable: int
    note: str = ""


# ------------------------------------------------------------------------------------------------------ inputs
def resolve_plan_stage(stage: str) -> str:
    """A stage name of the table, its number (1-5), or `grpo` (RL; also `rl`, `6`) -> the canonical name."""
    from ..training.stages import STAGE_NAMES, STAGE_NUMBERS

    key = str(stage).strip().lower()
    if key in STAGE_NAMES:
        return key
    if key in STAGE_NUMBERS:
        return STAGE_NUMBERS[key]
    if key in RL_ALIASES:
        return RL_STAGE
    choices = ", ".join(f"{n} ({name})" for n, name in STAGE_NUMBERS.items())
    raise PlanError(f"Unknown stage {stage!r}: choose one of {choices}, or grpo (latent-action RL).")


def load_model_config(model: str | os.PathLike, **latent_kwargs):
    """The `LatentActionConfig` to plan for, and where it came from.

    `model` is a folder holding `config.json` (a base model or a saved latent model), a `config.json` file, or a hub
    id: the ids in `KNOWN_MODEL_IDS` use the shapes held offline; other ids need their config in the local cache (or
    network access with `HF_HUB_OFFLINE=0`). `latent_kwargs` (codebook_size, inverse_layers, ...) set the new modules
    of a base model, or override a saved latent model's.
    """
    from transformers import AutoConfig

    from ..modeling.backbone import check_supported
    from ..modeling.configuration import LatentActionConfig
    from ..modeling.real_shapes import real_shape_config

    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PlanError(f"{path} holds no config.json: pass a model folder, a config.json file, or a model id.")
        data, source = _read_json(path / "config.json"), f"{path / 'config.json'}"
    elif path.is_file():
        data, source = _read_json(path), str(path)
    elif name.lower() in KNOWN_MODEL_IDS:
        data, source = real_shape_config(KNOWN_MODEL_IDS[name.lower()]).to_dict(), "released config held offline"
    else:
        try:
            data, source = AutoConfig.from_pretrained(name).to_dict(), "hub config"
        except (OSError, ValueError) as err:
            known = ", ".join(sorted({"Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"}))
            raise PlanError(
                f"Model {name!r} not found: it is not an existing folder or config file, and its config is not "
                f"available offline ({type(err).__name__}). Check the path, pass a folder holding config.json or the "
                f"config.json itself, or use a model id held offline ({known})."
            ) from None
    model_type = data.get("model_type")
    if model_type == LatentActionConfig.model_type:
        config = LatentActionConfig.from_dict(data)
        for key, value in latent_kwargs.items():
            setattr(config, key, value)
        if not config.base_config:
            raise PlanError(f"The latent model config {source} holds no base_config to build the base from.")
        check_supported_or_plan_error(check_supported, config.base_config.get("model_type"))
        return config, source
    if model_type is None:
        raise PlanError(f"{source} has no model_type: it is not a transformers model config.")
    check_supported_or_plan_error(check_supported, model_type)
    base_config = AutoConfig.for_model(**data)
    config = LatentActionConfig(base_model_name_or_path=name, base_config=base_config.to_dict(), **latent_kwargs)
    return config, source


def check_supported_or_plan_error(check, model_type) -> None:
    try:
        check(model_type)
    except NotImplementedError as err:
        raise PlanError(str(err)) from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PlanError(f"Cannot read {path} as a JSON model config: {err}.") from None


def build_meta_model(config):
    """The `LatentActionModel` of `config` on the `meta` device: shapes and names only, nothing allocated."""
    import torch
    from transformers import AutoConfig

    from ..modeling.backbone import base_model_class
    from ..modeling.model import LatentActionModel

    base_config = AutoConfig.for_model(**config.base_config)
    with torch.device("meta"):
        base = base_model_class(base_config.model_type).from_config(base_config)
        return LatentActionModel(config, base_model=base)


# ------------------------------------------------------------------------------------------------------ counting
def _stage_switches():
    # The stage table resolved with `LatentSFTConfig`'s defaults (ablation switches on), without building the config.
    from types import SimpleNamespace

    from ..training.latent_sft_config import LatentSFTConfig

    defaults = {f.name: f.default for f in fields(LatentSFTConfig) if f.name in _SWITCH_FIELDS}
    return SimpleNamespace(**defaults)


_SWITCH_FIELDS = (
    "use_text_only",
    "use_projector",
    "use_cycle_loss",
    "entropy_weight",
    "projector_weight",
    "cycle_weight",
    "world_sft_last_layers",
)


def set_stage_trainable(model, stage: str, world_sft_last_layers: int | None = None) -> None:
    """Mark the stage's trainable parameters on `model` exactly as the trainers do."""
    from ..training.stages import resolve_stage

    if stage == RL_STAGE:
        model.set_trainable(["policy"])  # LatentGRPOTrainer: the policy only
        return
    switches = _stage_switches()
    switches.stage = stage
    plan = resolve_stage(switches)
    last = switches.world_sft_last_layers if world_sft_last_layers is None else world_sft_last_layers
    base_modules = model.base_tail_prefixes(last) if plan.base_trainable else None
    model.set_trainable(plan.trainable, base_modules=base_modules)


def _groups(model) -> list[tuple[str, object, str]]:
    """(name, module, note) of every counted group, base first, in the paper's vocabulary."""
    backbone = model.backbone
    groups = []
    if backbone.is_vlm:
        groups.append(("base / vision tower", backbone.inner.visual, ""))
    n_layers = len(backbone.text_model.layers)
    groups += [
        ("base / embeddings", backbone.text_model.embed_tokens, ""),
        (f"base / LM layers ({n_layers})", backbone.text_model.layers, ""),
        ("base / final norm", backbone.final_norm, ""),
        ("base / lm_head", backbone.lm_head, ""),
        ("codebook", model.codebook, ""),
        (f"inverse dynamics ({model.config.inverse_layers} layers)", model.inverse_dynamics, ""),
        (f"world-model merge ({model.config.merge_blocks} blocks)", model.world_merge, ""),
        (f"policy ({model.config.policy_layers} layers)", model.policy, ""),
        ("projector P", model.projector, ""),
        ("inverse projector P'", model.inverse_projector, ""),
    ]
    return groups


def count_modules(model, lora: dict[str, int] | None = None) -> list[ModuleCount]:
    """Parameters per module group, each shared (tied) parameter counted once, where it first appears."""
    owner = {}
    names = [g[0] for g in _groups(model)]
    for name, module, _ in _groups(model):
        for p in module.parameters():
            owner.setdefault(id(p), name)
    totals = {name: [0, 0] for name in names}
    other = [0, 0]
    for _, p in model.named_parameters():  # deduplicated: a tied lm_head is the embeddings' parameter
        slot = totals.get(owner.get(id(p)), other)
        slot[0] += p.numel()
        slot[1] += p.numel() if p.requires_grad else 0
    counts = []
    for name in names:
        params, trainable = totals[name]
        note = "tied to the embeddings" if name == "base / lm_head" and params == 0 else ""
        counts.append(ModuleCount(name, params, trainable, note))
    if other[0]:
        counts.append(ModuleCount("base / other", other[0], other[1]))
    for name, params in (lora or {}).items():
        counts.append(ModuleCount(name, params, params, "LoRA adapter"))
    return counts


def lora_parameters(model, stage: str, r: int) -> dict[str, int]:
    """LoRA adapter parameters, `r * (in + out)` per adapted linear: the base LM's projections (world-model SFT) or
    the policy's (`POLICY_LORA_TARGET_MODULES`, RL). Marks every original parameter frozen, as PEFT does."""
    from ..training.latent_grpo_trainer import POLICY_LORA_TARGET_MODULES

    if stage == RL_STAGE:
        pattern, label = re.compile(POLICY_LORA_TARGET_MODULES), f"LoRA r={r} on the policy"
        linears = [m for n, m in model.named_modules() if pattern.fullmatch(n)]
    elif stage == "world_sft":
        label = f"LoRA r={r} on the base LM layers"
        linears = [
            m
            for n, m in model.backbone.text_model.layers.named_modules()
            if n.rsplit(".", 1)[-1] in BASE_LORA_PROJECTIONS
        ]
    else:
        raise PlanError(
            f"--lora-r applies to world_sft (an adapter on the base) and grpo (an adapter on the policy), not {stage}: "
            "stages 1-4 train small new modules in full."
        )
    for p in model.parameters():
        p.requires_grad_(False)
    return {label: sum(r * (m.in_features + m.out_features) for m in linears)}
