"""`trl-latent plan`: parameter counts and per-GPU memory of a stage, from the model's config alone (no weights)."""

from __future__ import annotations

import argparse
import inspect
import sys

from ..paper import CODEBOOK_SIZE, INVERSE_LAYERS, POLICY_LAYERS, WORLD_SFT_LAST_LAYERS
from ..planning import PRECISIONS, PlanError, format_plan, make_plan
from ..planning.plan import verdict

# The flags' defaults are make_plan's own.
_DEFAULTS = {name: p.default for name, p in inspect.signature(make_plan).parameters.items()}

PLAN_HELP = """\
Parameter counts and per-GPU memory of one training stage, from the model's config alone: the latent action model is
built on the meta device (no weights are read or downloaded; the released Qwen2.5-VL-3B/7B-Instruct configs are held
offline, other hub ids need their config in the local cache or HF_HUB_OFFLINE=0).

Accounting, per parameter (Psi all, Psi_t trainable, N GPUs), mixed-precision AdamW as in the ZeRO paper:
  bf16: weights 2 Psi (bf16), gradients 2 Psi_t (bf16), optimizer 12 Psi_t (fp32 master + 2 fp32 moments)
  fp32: weights 4 Psi, gradients 4 Psi_t, optimizer 8 Psi_t
  DDP everything whole; ZeRO-2 gradients and optimizer / N; ZeRO-3 also weights / N, plus the largest module
  gathered whole; ZeRO-3 + CPU offload keeps parameters and optimizer on the CPU (CPU/proc column). Under every
  ZeRO stage the gradients also count DeepSpeed's reduce bucket (5e8 values) and the whole gradient of the largest
  trainable module before it is reduced.
RL (grpo) adds the frozen reference policy whole on every GPU. Activations are an estimate of what autograd keeps for
backward per micro-batch (SDPA attention, no recomputation); see docs/plan.md for the formula.

Exit status: 0 when the chosen --zero (or, without it, any strategy) fits, 1 when not (with what to try), 2 on bad
input."""


def add_parser(subparsers) -> None:
    """Register `trl-latent plan`."""

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
    parser.add_argument("--num-gpus", type=int, default=_DEFAULTS["num_gpus"], help="GPUs (default %(default)s)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="memory per GPU in GiB (default 80)")
    parser.add_argument(
        "--reserve", type=float, default=2.0, help="GiB per GPU kept for CUDA context and buffers (default 2)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULTS["batch_size"],
        help="per-GPU micro-batch in sequences (default %(default)s)",
    )
    parser.add_argument(
        "--seq-len", type=int, default=_DEFAULTS["seq_len"], help="tokens per sequence, image tokens included"
    )
    parser.add_argument(
        "--image-tokens",
        type=int,
        default=_DEFAULTS["image_tokens"],
        help="image tokens per sequence (default %(default)s: one 280x420 image)",
    )
    parser.add_argument(
        "--precision", default=_DEFAULTS["precision"], choices=sorted(PRECISIONS), help="default %(default)s"
    )
    parser.add_argument("--lora-r", type=int, default=None, help="plan a LoRA adapter of this rank (world_sft, grpo)")
    parser.add_argument(
        "--world-sft-last-layers", type=int, default=None, help=f"LM layers world_sft trains ({WORLD_SFT_LAST_LAYERS})"
    )
    parser.add_argument(
        "--codebook-size", type=int, default=None, help=f"latent actions |C| (default {CODEBOOK_SIZE})"
    )
    parser.add_argument(
        "--inverse-layers", type=int, default=None, help=f"inverse dynamics layers (default {INVERSE_LAYERS})"
    )
    parser.add_argument("--policy-layers", type=int, default=None, help=f"policy layers (default {POLICY_LAYERS})")
    parser.set_defaults(func=run)


def run(args) -> int:

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
    except (PlanError, ValueError) as err:  # ValueError: a latent-model size the config refuses (--codebook-size 0)
        print(f"trl-latent plan: error: {err}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    if not plan.fits:  # the advice is in the table's output; stderr says only that it does not fit
        head = verdict(plan).removesuffix(" Try:")
        print(f"trl-latent plan: {head} What to try is printed above.", file=sys.stderr)
        return 1
    return 0
