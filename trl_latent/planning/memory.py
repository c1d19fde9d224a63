"""Memory per GPU: the activation estimate and the weights / gradients / optimizer accounting of each strategy."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .counting import RL_STAGE, PlanError

GIB = 1024**3

STRATEGIES = ("ddp", "zero2", "zero3", "zero3_offload")
STRATEGY_LABELS = {"ddp": "DDP", "zero2": "ZeRO-2", "zero3": "ZeRO-3", "zero3_offload": "ZeRO-3 + CPU offload"}
# Every strategy by its name, and the spellings users write: `--zero 2`, `zero-3`, `zero_3_offload`.
STRATEGY_ALIASES = {
    **{name: name for name in STRATEGIES},
    **{
        "0": "ddp",
        "2": "zero2",
        "3": "zero3",
        "zero_2": "zero2",
        "zero_3": "zero3",
        "zero_3_offload": "zero3_offload",
    },
}
STRATEGY_ALIASES.update({"offload": "zero3_offload", "zero3_offload": "zero3_offload", "3_offload": "zero3_offload"})

# (weight, gradient, optimizer) bytes per parameter.
PRECISIONS = {"bf16": (2, 2, 12), "fp32": (4, 4, 8)}
# DeepSpeed's default `reduce_bucket_size` (elements): ZeRO-2 and ZeRO-3 allocate one gradient buffer of this size on
# the device when the optimizer is built (contiguous gradients, on by default). The accelerate configs in
# examples/accelerate_configs leave it unset; a DeepSpeed JSON with `"auto"` gets hidden_size**2 from accelerate.
DEEPSPEED_REDUCE_BUCKET = 500_000_000


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


def resolve_strategy(zero: str | int | None) -> str | None:
    if zero is None:
        return None
    key = str(zero).strip().lower().replace("-", "_")
    if key not in STRATEGY_ALIASES:
        raise PlanError(f"Unknown ZeRO setting {zero!r}: choose one of {', '.join(STRATEGIES)} (or 0, 2, 3).")
    return STRATEGY_ALIASES[key]


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
    for a Qwen2 decoder layer (`tests/planning/test_memory.py`)."""
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
    - projectors: `7d + 4 d_P` per token each (mean and log-variance MLPs, Gaussian NLL);
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
    projector = t * (7 * s.hidden + 4 * s.projector_hidden) * a
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
    largest_trainable: int,
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
    # Under every ZeRO stage the gradients also hold, on the device, DeepSpeed's reduce bucket and, in backward, the
    # whole gradient of the largest trainable module before it is reduced to its partition (docs/plan.md; measured
    # by benchmarks/plan_check.py).
    zero_gradient_extra = g * (DEEPSPEED_REDUCE_BUCKET + largest_trainable) if trainable else 0
    if strategy == "ddp":
        weights, grads, optim = w * total, g * trainable, o * trainable
    elif strategy == "zero2":
        weights, grads, optim = w * total, math.ceil(g * trainable / n), math.ceil(o * trainable / n)
        grads += zero_gradient_extra
    elif strategy == "zero3":
        weights = math.ceil(w * total / n) + w * largest
        grads, optim = math.ceil(g * trainable / n) + zero_gradient_extra, math.ceil(o * trainable / n)
    elif strategy == "zero3_offload":
        weights, grads, optim = w * largest, zero_gradient_extra, 0
        cpu = math.ceil((w * total + g * trainable + o * trainable) / n)
    else:
        raise PlanError(f"Unknown strategy {strategy!r}; choose one of {STRATEGIES}.")
    ref = w * reference
    fits = weights + grads + optim + ref + activations <= usable
    return StrategyMemory(strategy, weights, grads, optim, ref, activations, cpu, fits)
