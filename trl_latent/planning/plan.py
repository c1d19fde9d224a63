"""`make_plan`, `format_plan` and the `trl-latent plan` command."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from .counting import (
    RL_STAGE,
    ModuleCount,
    PlanError,
    build_meta_model,
    count_modules,
    load_model_config,
    lora_parameters,
    resolve_plan_stage,
    set_stage_trainable,
)
from .memory import (
    GIB,
    PRECISIONS,
    STRATEGIES,
    STRATEGY_LABELS,
    StrategyMemory,
    activation_terms,
    model_shapes,
    resolve_strategy,
    strategy_memory,
)


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
    largest_trainable_module_params: int
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
    config, source = load_model_config(model, **{k: v for k, v in latent_kwargs.items() if v is not None})
    meta = build_meta_model(config)
    set_stage_trainable(meta, stage, world_sft_last_layers)
    lora = lora_parameters(meta, stage, lora_r) if lora_r is not None else None
    vision_trainable = _is_vlm(meta) and any(p.requires_grad for p in meta.backbone.inner.visual.parameters())
    modules = tuple(count_modules(meta, lora))
    total = sum(m.params for m in modules)
    trainable = sum(m.trainable for m in modules)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in meta.modules())
    # The largest module that trains (its whole gradient exists before ZeRO reduce-scatters it); under LoRA the
    # adapters train, each far smaller than the trainable total that bounds it here.
    own_trainable = (sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad) for m in meta.modules())
    largest_trainable = min(max(own_trainable), trainable)
    shapes = model_shapes(config)
    if not _is_vlm(meta):
        image_tokens = 0  # a text-only base
    if not 0 <= image_tokens <= seq_len:
        raise PlanError(
            f"image_tokens must be between 0 and seq_len ({seq_len}), got {image_tokens}: the sequence length "
            "counts the image tokens too."
        )
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
            largest_trainable=largest_trainable,
            reference=reference,
            activations=activations,
            num_gpus=num_gpus,
            precision=precision,
            usable=usable,
        )
        for s in STRATEGIES
    )
    from ..training.stages import STAGES

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
        largest_trainable_module_params=largest_trainable,
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
            largest_trainable=plan.largest_trainable_module_params,
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
    lines.append(verdict(plan))
    lines += [f"  - {tip}" for tip in plan.suggestions]
    return "\n".join(lines)


def verdict(plan: Plan) -> str:
    if plan.fits:
        if plan.zero is not None:
            return f"{STRATEGY_LABELS[plan.zero]} fits."
        return "Fits: " + ", ".join(m.label for m in plan.strategies if m.fits) + "."
    what = STRATEGY_LABELS[plan.zero] if plan.zero else "No strategy"
    head = f"{what} does not fit {plan.num_gpus} GPU(s) of {plan.gpu_memory_gib:g} GiB."
    return head + (" Try:" if plan.suggestions else "")


# ------------------------------------------------------------------------------------------------------ command line
