"""`trl-latent plan`: parameter counts and per-GPU memory of a training stage, computed on the `meta` device.

The latent action model is built on the `meta` device from a config alone (no weights are read or downloaded), so the
real Qwen2.5-VL-3B/7B shapes held in `trl_latent.modeling.tiny` plan offline. The trainable set is the one the
trainers train: the stage table (`trl_latent.training.stages`) applied with `LatentActionModel.set_trainable`, with
`base_tail_prefixes` for the world-model SFT stage and the policy alone for RL.

Accounting (bytes per parameter; Psi = all parameters, Psi_t = trainable ones, N = GPUs), the ZeRO paper's
mixed-precision AdamW (Rajbhandari et al., 2020):

```
precision "bf16": weights 2 Psi (bf16), gradients 2 Psi_t (bf16), optimizer 12 Psi_t (fp32 master + 2 fp32 moments)
precision "fp32": weights 4 Psi,        gradients 4 Psi_t,        optimizer  8 Psi_t (2 fp32 moments)

DDP            : weights, gradients and optimizer states whole on every GPU
ZeRO-2         : weights whole; gradients and optimizer states / N
ZeRO-3         : weights, gradients, optimizer states / N, plus the largest module gathered whole (working set)
ZeRO-3 offload : parameters and optimizer states on the CPU (/ N per process); the GPU holds the gathered working set
```

RL adds a frozen copy of the policy (the KL reference) whole on every GPU. Activations are an estimate of what
autograd keeps for backward (see `activation_terms`), with SDPA attention and no recomputation.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

GIB = 1024**3

# Stage aliases: the numbers of the paper's table (docs/design.md section 3) and RL.
STAGE_NUMBERS = {"1": "inverse_warmup", "2": "projector_warmup", "3": "joint", "4": "policy_bc", "5": "world_sft"}
RL_STAGE = "grpo"
RL_ALIASES = ("grpo", "rl", "6")

STRATEGIES = ("ddp", "zero2", "zero3", "zero3_offload")
STRATEGY_LABELS = {"ddp": "DDP", "zero2": "ZeRO-2", "zero3": "ZeRO-3", "zero3_offload": "ZeRO-3 + CPU offload"}
STRATEGY_ALIASES = {"0": "ddp", "ddp": "ddp", "2": "zero2", "zero2": "zero2", "3": "zero3", "zero3": "zero3"}
STRATEGY_ALIASES.update({"offload": "zero3_offload", "zero3_offload": "zero3_offload", "3_offload": "zero3_offload"})

# (weight, gradient, optimizer) bytes per parameter.
PRECISIONS = {"bf16": (2, 2, 12), "fp32": (4, 4, 8)}

# The released configs of these ids are held offline (`trl_latent.modeling.tiny.REAL_SHAPES`).
KNOWN_MODEL_IDS = {"qwen/qwen2.5-vl-3b-instruct": "3b", "qwen/qwen2.5-vl-7b-instruct": "7b"}

# LoRA targets the plan counts: every attention and MLP projection of the base LM layers (world-model SFT), or of the
# policy layers (RL, `POLICY_LORA_TARGET_MODULES`).
BASE_LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class PlanError(ValueError):
    """Bad input to the planner: the message says what was wrong and what to pass instead."""


# ------------------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class ModuleCount:
    """Parameters of one module group: all of them and those the stage trains."""

    name: str
    params: int
    trainable: int
    note: str = ""


@dataclass(frozen=True)
class StrategyMemory:
    """Per-GPU memory (bytes) of one distribution strategy, and whether it fits the GPU."""

    strategy: str
    weights: int
    gradients: int
    optimizer: int
    reference: int
    activations: int
    cpu_per_process: int
    fits: bool

    @property
    def label(self) -> str:
        return STRATEGY_LABELS[self.strategy]

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.reference + self.activations


@dataclass(frozen=True)
class Plan:
    """What `make_plan` computes; `format_plan` prints it."""

    model: str
    source: str
    model_type: str
    stage: str
    stage_description: str
    precision: str
    num_gpus: int
    gpu_memory_gib: float
    reserve_gib: float
    batch_size: int
    seq_len: int
    image_tokens: int
    lora_r: int | None
    modules: tuple[ModuleCount, ...]
    total_params: int
    trainable_params: int
    largest_module_params: int
    activation_terms: dict[str, int]
    strategies: tuple[StrategyMemory, ...]
    zero: str | None = None
    suggestions: tuple[str, ...] = field(default_factory=tuple)

    def memory(self, strategy: str) -> StrategyMemory:
        return next(m for m in self.strategies if m.strategy == strategy)

    @property
    def fits(self) -> bool:
        """The chosen strategy fits (`zero` given), or at least one does."""
        if self.zero is not None:
            return self.memory(self.zero).fits
        return any(m.fits for m in self.strategies)


# ------------------------------------------------------------------------------------------------------ inputs
def resolve_plan_stage(stage: str) -> str:
    """A stage name of the table, its number (1-5), or `grpo` (RL; also `rl`, `6`) -> the canonical name."""
    from .training.stages import STAGE_NAMES

    key = str(stage).strip().lower()
    if key in STAGE_NAMES:
        return key
    if key in STAGE_NUMBERS:
        return STAGE_NUMBERS[key]
    if key in RL_ALIASES:
        return RL_STAGE
    choices = ", ".join(f"{n} ({name})" for n, name in STAGE_NUMBERS.items())
    raise PlanError(f"Unknown stage {stage!r}: choose one of {choices}, or grpo (latent-action RL).")


def resolve_strategy(zero: str | int | None) -> str | None:
    if zero is None:
        return None
    key = str(zero).strip().lower().replace("-", "_")
    if key not in STRATEGY_ALIASES:
        raise PlanError(f"Unknown ZeRO setting {zero!r}: choose one of {', '.join(STRATEGIES)} (or 0, 2, 3).")
    return STRATEGY_ALIASES[key]


def load_model_config(model: str | os.PathLike, **latent_kwargs):
    """The `LatentActionConfig` to plan for, and where it came from.

    `model` is a folder holding `config.json` (a base model or a saved latent model), a `config.json` file, or a hub
    id: the ids in `KNOWN_MODEL_IDS` use the shapes held offline; other ids need their config in the local cache (or
    network access with `HF_HUB_OFFLINE=0`). `latent_kwargs` (codebook_size, inverse_layers, ...) set the new modules
    of a base model, or override a saved latent model's.
    """
    from transformers import AutoConfig

    from .modeling.backbone import check_supported
    from .modeling.configuration import LatentActionConfig
    from .modeling.tiny import real_shape_config

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

    from .modeling.backbone import base_model_class
    from .modeling.model import LatentActionModel

    base_config = AutoConfig.for_model(**config.base_config)
    with torch.device("meta"):
        base = base_model_class(base_config.model_type).from_config(base_config)
        return LatentActionModel(config, base_model=base)


# ------------------------------------------------------------------------------------------------------ counting
def _stage_switches():
    # The stage table resolved with `LatentSFTConfig`'s defaults (ablation switches on), without building the config.
    from types import SimpleNamespace

    from .training.latent_sft_config import LatentSFTConfig

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
    from .training.stages import resolve_stage

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
    from .training.latent_grpo_trainer import POLICY_LORA_TARGET_MODULES

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


# ------------------------------------------------------------------------------------------------------ activations
@dataclass(frozen=True)
class Shapes:
    hidden: int
    kv: int
    intermediate: int
    layers: int
    vocab: int
    merge_intermediate: int
    merge_blocks: int
    projector_hidden: int
    inverse_layers: int
    policy_layers: int
    vision_hidden: int = 0
    vision_intermediate: int = 0
    vision_depth: int = 0
    patches_per_token: int = 0


def model_shapes(config) -> Shapes:
    from transformers import AutoConfig

    base = AutoConfig.for_model(**config.base_config)
    text = base.text_config if hasattr(base, "vision_config") else base
    h = text.hidden_size
    head_dim = getattr(text, "head_dim", None) or h // text.num_attention_heads
    kwargs = dict(
        hidden=h,
        kv=text.num_key_value_heads * head_dim,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        merge_intermediate=config.merge_intermediate_size or text.intermediate_size,
        merge_blocks=config.merge_blocks,
        projector_hidden=max(1, int(round(h * config.projector_hidden_ratio))),
        inverse_layers=config.inverse_layers,
        policy_layers=config.policy_layers,
    )
    vision = getattr(base, "vision_config", None)
    if vision is not None:
        hv = getattr(vision, "embed_dim", None) or vision.hidden_size  # Qwen2-VL names the width embed_dim
        iv = getattr(vision, "intermediate_size", None) or int(hv * getattr(vision, "mlp_ratio", 4))
        kwargs.update(
            vision_hidden=hv,
            vision_intermediate=iv,
            vision_depth=vision.depth,
            patches_per_token=vision.spatial_merge_size**2,
        )
    return Shapes(**kwargs)


def layer_values(hidden: int, kv: int, intermediate: int) -> int:
    """Values one decoder layer keeps for backward, per token: `8h + 2 kv + 4 i`.

    Eight h-wide tensors (among them the layer input, both norms' outputs, q, the attention output and `o_proj`'s
    input), k and v (2 kv), and the MLP's gate, up, silu(gate) and their product (4i); a few per-token scalars (norm
    statistics, the attention's log-sum-exp, rotary tables) are left out. Checked against the tensors autograd saves
    for a Qwen2 decoder layer (`tests/test_planning.py`)."""
    return 8 * hidden + 2 * kv + 4 * intermediate


def activation_terms(
    shapes: Shapes, stage: str, batch: int, seq: int, image_tokens: int, act_bytes: int, vision_trainable: bool
) -> dict[str, int]:
    """Activation estimate (bytes, one micro-batch of `batch` sequences of `seq` tokens) by stage.

    Terms (t = batch * seq tokens, a = bytes per value):
    - base pass without gradient (stages 1-4, RL rollouts): one layer at a time, `t * layer * a`, plus the states kept
      (`t * h * a` each: e, and e^T where the stage uses it);
    - a decoder stack with gradient (inverse dynamics, policy, the base LM in world-model SFT): `layers * t * layer * a`;
    - world model: each merge block keeps concat[x, c] and its SwiGLU (`2h + 4 i_m`), plus the norm (2h) per token;
      logits `t * V * (a + 8)` (the logits, their fp32 copy and the fp32 log-softmax of the cross-entropy);
    - projectors: `7d + 2 d_P` per token each (MLP, heads, Gaussian NLL);
    - vision tower with gradient (world-model SFT): `depth * patches * layer(hv, hv, iv) * a`, 4 patches per token;
    - RL: the rollout keeps both KV caches (`2 (L + L_pi) * kv * t * a`) and the states it reuses in the update, then
      the update runs the policy with gradient; the larger of rollout and update counts, plus the states.
    Streams: stages 3 and 4 read a text-only micro-batch beside the paired one (same size, no image tokens).
    """
    s = shapes
    t = batch * seq
    a = act_bytes
    layer = layer_values(s.hidden, s.kv, s.intermediate)
    base_pass = t * layer * a
    state = t * s.hidden * a
    world = t * (s.merge_blocks * (2 * s.hidden + 4 * s.merge_intermediate) + 2 * s.hidden) * a
    logits = t * s.vocab * (a + 8)
    projector = t * (7 * s.hidden + 2 * s.projector_hidden) * a
    inverse = s.inverse_layers * t * layer * a
    policy = s.policy_layers * t * layer * a
    if stage == "inverse_warmup":
        return {
            "base pass (no grad)": base_pass,
            "states": state,
            "inverse dynamics": inverse,
            "world model": world,
            "logits": logits,
        }
    if stage == "projector_warmup":
        return {"base pass (no grad)": base_pass, "states": 2 * state, "projectors": 2 * projector}
    if stage == "joint":  # paired: e, e^T, IDM, world, P and P'; text-only: e^T, P, IDM, world, P' (cycle)
        return {
            "base pass (no grad)": base_pass,
            "states": 3 * state,
            "inverse dynamics": 2 * inverse,
            "world model": 2 * world,
            "logits": 2 * logits,
            "projectors": 4 * projector,
        }
    if stage == "policy_bc":  # the IDM labels without gradient; the policy learns on both streams
        return {"base pass (no grad)": base_pass, "states": 2 * state, "policy": 2 * policy}
    if stage == "world_sft":
        terms = {"base LM layers": s.layers * t * layer * a, "world model": world, "logits": logits}
        if vision_trainable and s.vision_depth:
            patches = batch * image_tokens * s.patches_per_token
            vision = layer_values(s.vision_hidden, s.vision_hidden, s.vision_intermediate)
            terms["vision tower"] = s.vision_depth * patches * vision * a
        return terms
    if stage == RL_STAGE:
        rollout = 2 * (s.layers + s.policy_layers) * s.kv * t * a + base_pass
        return {"states": state, "rollout KV caches or update": max(rollout, policy)}
    raise PlanError(f"Unknown stage {stage!r}.")


# ------------------------------------------------------------------------------------------------------ memory
def strategy_memory(
    strategy: str,
    *,
    total: int,
    trainable: int,
    largest: int,
    reference: int,
    activations: int,
    num_gpus: int,
    precision: str,
    usable: float,
) -> StrategyMemory:
    """Per-GPU bytes of one strategy (see the module docstring for the accounting)."""
    w, g, o = PRECISIONS[precision]
    n = num_gpus
    cpu = 0
    if strategy == "ddp":
        weights, grads, optim = w * total, g * trainable, o * trainable
    elif strategy == "zero2":
        weights, grads, optim = w * total, math.ceil(g * trainable / n), math.ceil(o * trainable / n)
    elif strategy == "zero3":
        weights = math.ceil(w * total / n) + w * largest
        grads, optim = math.ceil(g * trainable / n), math.ceil(o * trainable / n)
    elif strategy == "zero3_offload":
        weights, grads, optim = w * largest, 0, 0
        cpu = math.ceil((w * total + g * trainable + o * trainable) / n)
    else:
        raise PlanError(f"Unknown strategy {strategy!r}; choose one of {STRATEGIES}.")
    ref = w * reference
    fits = weights + grads + optim + ref + activations <= usable
    return StrategyMemory(strategy, weights, grads, optim, ref, activations, cpu, fits)


def make_plan(
    model: str | os.PathLike,
    stage: str,
    *,
    zero: str | int | None = None,
    num_gpus: int = 1,
    gpu_memory_gib: float = 80.0,
    reserve_gib: float = 2.0,
    batch_size: int = 1,
    seq_len: int = 1024,
    image_tokens: int = 150,
    precision: str = "bf16",
    lora_r: int | None = None,
    world_sft_last_layers: int | None = None,
    suggest: bool = True,
    **latent_kwargs,
) -> Plan:
    """Plan `stage` of the latent action model around `model` (see the module docstring).

    Args:
        model: a folder holding config.json (base or saved latent model), a config.json, or a model id.
        stage: 1-5 or a stage name of `trl_latent.training.stages.STAGES`, or `grpo` (RL).
        zero: the strategy to check (`ddp`, `zero2`, `zero3`, `zero3_offload`; or 0, 2, 3); `None`: any.
        num_gpus, gpu_memory_gib: the GPUs; `reserve_gib` of each is kept for the CUDA context, allocator
            fragmentation and communication buffers.
        batch_size, seq_len, image_tokens: the per-GPU micro-batch: sequences, tokens per sequence (image tokens
            included; 150 is one 280x420 image), image tokens per sequence.
        precision: `bf16` (mixed precision) or `fp32`.
        lora_r: plan a LoRA adapter of this rank instead (world_sft: on the base LM layers; grpo: on the policy).
        world_sft_last_layers: LM layers world_sft trains (default: `LatentSFTConfig`'s).
        latent_kwargs: `LatentActionConfig` fields (codebook_size, inverse_layers, policy_layers, ...).
    """
    stage = resolve_plan_stage(stage)
    strategy = resolve_strategy(zero)
    if precision not in PRECISIONS:
        raise PlanError(f"Unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}.")
    for name, value in (("num_gpus", num_gpus), ("batch_size", batch_size), ("seq_len", seq_len)):
        if value < 1:
            raise PlanError(f"{name} must be at least 1 (got {value}).")
    if gpu_memory_gib <= reserve_gib:
        raise PlanError(f"gpu_memory_gib ({gpu_memory_gib}) must exceed the reserve ({reserve_gib} GiB).")
    if lora_r is not None and lora_r < 1:
        raise PlanError(f"lora_r must be at least 1 (got {lora_r}).")
    if not 0 <= image_tokens <= seq_len:
        raise PlanError(f"image_tokens must be between 0 and seq_len ({seq_len}), got {image_tokens}.")
    config, source = load_model_config(model, **{k: v for k, v in latent_kwargs.items() if v is not None})
    meta = build_meta_model(config)
    set_stage_trainable(meta, stage, world_sft_last_layers)
    lora = lora_parameters(meta, stage, lora_r) if lora_r is not None else None
    vision_trainable = _is_vlm(meta) and any(p.requires_grad for p in meta.backbone.inner.visual.parameters())
    modules = tuple(count_modules(meta, lora))
    total = sum(m.params for m in modules)
    trainable = sum(m.trainable for m in modules)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in meta.modules())
    shapes = model_shapes(config)
    if not _is_vlm(meta):
        image_tokens = 0
    act_bytes = PRECISIONS[precision][0]
    terms = activation_terms(shapes, stage, batch_size, seq_len, image_tokens, act_bytes, vision_trainable)
    activations = sum(terms.values())
    reference = sum(p.numel() for p in meta.policy.parameters()) if stage == RL_STAGE and lora_r is None else 0
    usable = (gpu_memory_gib - reserve_gib) * GIB
    memories = tuple(
        strategy_memory(
            s,
            total=total,
            trainable=trainable,
            largest=largest,
            reference=reference,
            activations=activations,
            num_gpus=num_gpus,
            precision=precision,
            usable=usable,
        )
        for s in STRATEGIES
    )
    from .training.stages import STAGES

    description = STAGES[stage].description if stage in STAGES else "stage 6: latent-action RL (the policy only)"
    plan = Plan(
        model=str(model),
        source=source,
        model_type=config.base_config["model_type"],
        stage=stage,
        stage_description=description,
        precision=precision,
        num_gpus=num_gpus,
        gpu_memory_gib=gpu_memory_gib,
        reserve_gib=reserve_gib,
        batch_size=batch_size,
        seq_len=seq_len,
        image_tokens=image_tokens,
        lora_r=lora_r,
        modules=modules,
        total_params=total,
        trainable_params=trainable,
        largest_module_params=largest,
        activation_terms=terms,
        strategies=memories,
        zero=strategy,
    )
    if suggest and not plan.fits:
        plan = _with_suggestions(plan, model, latent_kwargs, world_sft_last_layers)
    return plan


def _is_vlm(model) -> bool:
    return model.backbone.is_vlm


def _min_gpus(plan: Plan, strategy: str, limit: int = 1024) -> int | None:
    usable = (plan.gpu_memory_gib - plan.reserve_gib) * GIB
    reference = plan.memory(strategy).reference // PRECISIONS[plan.precision][0]
    n = 1
    while n <= limit:
        memory = strategy_memory(
            strategy,
            total=plan.total_params,
            trainable=plan.trainable_params,
            largest=plan.largest_module_params,
            reference=reference,
            activations=sum(plan.activation_terms.values()),
            num_gpus=n,
            precision=plan.precision,
            usable=usable,
        )
        if memory.fits:
            return n
        n *= 2
    return None


def _with_suggestions(plan: Plan, model, latent_kwargs, world_sft_last_layers) -> Plan:
    """What to try when the plan does not fit: another strategy, more GPUs, LoRA, a smaller micro-batch."""
    tips = []
    fitting = [m.label for m in plan.strategies if m.fits]
    if fitting:
        tips.append(f"use {' or '.join(fitting)} on these {plan.num_gpus} GPU(s) (--zero)")
    for strategy in ("zero3", "zero3_offload"):
        n = _min_gpus(plan, strategy)
        if n is not None and n > plan.num_gpus:
            tips.append(
                f"{STRATEGY_LABELS[strategy]} fits on {n} GPUs of {plan.gpu_memory_gib:g} GiB (--num-gpus {n})"
            )
    if plan.lora_r is None and plan.stage in ("world_sft", RL_STAGE):
        lora = make_plan(
            model,
            plan.stage,
            num_gpus=plan.num_gpus,
            gpu_memory_gib=plan.gpu_memory_gib,
            reserve_gib=plan.reserve_gib,
            batch_size=plan.batch_size,
            seq_len=plan.seq_len,
            image_tokens=plan.image_tokens,
            precision=plan.precision,
            lora_r=16,
            world_sft_last_layers=world_sft_last_layers,
            suggest=False,
            **latent_kwargs,
        )
        where = "the base" if plan.stage == "world_sft" else "the policy (POLICY_LORA_TARGET_MODULES)"
        lora_fits = [m.label for m in lora.strategies if m.fits]
        verdict = f"fits under {' / '.join(lora_fits)}" if lora_fits else "does not fit either"
        tips.append(f"a LoRA adapter on {where} (--lora-r 16: {_count(lora.trainable_params)} trainable) {verdict}")
    activations = sum(plan.activation_terms.values())
    if activations > 0.25 * (plan.gpu_memory_gib - plan.reserve_gib) * GIB:
        tips.append(
            f"activations alone take {activations / GIB:.1f} GiB: lower --batch-size or --seq-len and use gradient "
            "accumulation"
        )
    return Plan(**{**{f.name: getattr(plan, f.name) for f in fields(plan)}, "suggestions": tuple(tips)})


# ------------------------------------------------------------------------------------------------------ printing
def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def format_plan(plan: Plan) -> str:
    """The plan as a person reads it: a parameter table, a memory table and a verdict."""
    lines = [
        f"trl-latent plan: {plan.model} ({plan.model_type}; {plan.source})",
        f"stage {plan.stage}: {plan.stage_description}" + (f", LoRA r={plan.lora_r}" if plan.lora_r else ""),
        "",
        f"{'module':<36}{'parameters':>12}{'trainable':>12}",
    ]
    for m in plan.modules:
        note = f"  ({m.note})" if m.note else ""
        lines.append(f"{m.name:<36}{_count(m.params):>12}{_count(m.trainable):>12}{note}")
    lines.append(f"{'total':<36}{_count(plan.total_params):>12}{_count(plan.trainable_params):>12}")
    lines += [
        "",
        f"Memory per GPU in GiB: {plan.num_gpus} GPU(s) of {plan.gpu_memory_gib:g} GiB ({plan.reserve_gib:g} reserved), "
        f"{plan.precision} AdamW, micro-batch {plan.batch_size} x {plan.seq_len} tokens ({plan.image_tokens} image)",
        f"{'strategy':<22}{'weights':>9}{'grads':>8}{'optim':>8}{'ref':>6}{'activ':>8}{'total':>8}{'CPU/proc':>10}  fits",
    ]
    for m in plan.strategies:
        chosen = " <- chosen" if m.strategy == plan.zero else ""
        lines.append(
            f"{m.label:<22}{_gib(m.weights):>9}{_gib(m.gradients):>8}{_gib(m.optimizer):>8}{_gib(m.reference):>6}"
            f"{_gib(m.activations):>8}{_gib(m.total):>8}{_gib(m.cpu_per_process):>10}  {'yes' if m.fits else 'no'}"
            f"{chosen}"
        )
    terms = ", ".join(f"{k} {v / GIB:.2f}" for k, v in plan.activation_terms.items())
    lines += ["", f"activations (estimate, GiB): {terms}"]
    lines.append(_verdict(plan))
    lines += [f"  - {tip}" for tip in plan.suggestions]
    return "\n".join(lines)


def _verdict(plan: Plan) -> str:
    if plan.fits:
        if plan.zero is not None:
            return f"{STRATEGY_LABELS[plan.zero]} fits."
        return "Fits: " + ", ".join(m.label for m in plan.strategies if m.fits) + "."
    what = STRATEGY_LABELS[plan.zero] if plan.zero else "No strategy"
    head = f"{what} does not fit {plan.num_gpus} GPU(s) of {plan.gpu_memory_gib:g} GiB."
    return head + (" Try:" if plan.suggestions else "")


# ------------------------------------------------------------------------------------------------------ command line
PLAN_HELP = """\
Parameter counts and per-GPU memory of one training stage, from the model's config alone: the latent action model is
built on the meta device (no weights are read or downloaded; the released Qwen2.5-VL-3B/7B-Instruct configs are held
offline, other hub ids need their config in the local cache or HF_HUB_OFFLINE=0).

Accounting, per parameter (Psi all, Psi_t trainable, N GPUs), mixed-precision AdamW as in the ZeRO paper:
  bf16: weights 2 Psi (bf16), gradients 2 Psi_t (bf16), optimizer 12 Psi_t (fp32 master + 2 fp32 moments)
  fp32: weights 4 Psi, gradients 4 Psi_t, optimizer 8 Psi_t
  DDP everything whole; ZeRO-2 gradients and optimizer / N; ZeRO-3 also weights / N, plus the largest module
  gathered whole; ZeRO-3 + CPU offload keeps parameters and optimizer on the CPU (CPU/proc column).
RL (grpo) adds the frozen reference policy whole on every GPU. Activations are an estimate of what autograd keeps for
backward per micro-batch (SDPA attention, no recomputation); see docs/plan.md for the formula.

Exit status: 0 when the chosen --zero (or, without it, any strategy) fits, 1 when not (with what to try), 2 on bad
input."""


def add_plan_command(subparsers) -> None:
    """Register `trl-latent plan`."""
    import argparse

    parser = subparsers.add_parser(
        "plan",
        help="parameter counts and per-GPU memory of a stage (meta device, offline)",
        description=PLAN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="base model or saved latent model: folder, config.json, or model id")
    parser.add_argument("--stage", required=True, help="1-5 (or inverse_warmup ... world_sft), or grpo for RL")
    parser.add_argument(
        "--zero",
        default=None,
        help="the strategy to check: ddp, zero2, zero3, zero3_offload (or 0, 2, 3); default: report which fit",
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs (default 1)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="memory per GPU in GiB (default 80)")
    parser.add_argument(
        "--reserve", type=float, default=2.0, help="GiB per GPU kept for CUDA context and buffers (default 2)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="per-GPU micro-batch in sequences (default 1)")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence, image tokens included")
    parser.add_argument(
        "--image-tokens", type=int, default=150, help="image tokens per sequence (default 150: one 280x420 image)"
    )
    parser.add_argument("--precision", default="bf16", choices=sorted(PRECISIONS), help="default bf16")
    parser.add_argument("--lora-r", type=int, default=None, help="plan a LoRA adapter of this rank (world_sft, grpo)")
    parser.add_argument("--world-sft-last-layers", type=int, default=None, help="LM layers world_sft trains (8)")
    parser.add_argument("--codebook-size", type=int, default=None, help="latent actions |C| (default 128)")
    parser.add_argument("--inverse-layers", type=int, default=None, help="inverse dynamics layers (default 4)")
    parser.add_argument("--policy-layers", type=int, default=None, help="policy layers (default 8)")
    parser.set_defaults(func=run_plan_command)


def run_plan_command(args) -> int:
    import sys

    try:
        plan = make_plan(
            args.model,
            args.stage,
            zero=args.zero,
            num_gpus=args.num_gpus,
            gpu_memory_gib=args.gpu_memory,
            reserve_gib=args.reserve,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            image_tokens=args.image_tokens,
            precision=args.precision,
            lora_r=args.lora_r,
            world_sft_last_layers=args.world_sft_last_layers,
            codebook_size=args.codebook_size,
            inverse_layers=args.inverse_layers,
            policy_layers=args.policy_layers,
        )
    except PlanError as err:
        print(f"trl-latent plan: error: {err}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    if not plan.fits:
        print(f"trl-latent plan: {_verdict(plan)} {'; '.join(plan.suggestions)}", file=sys.stderr)
        return 1
    return 0
