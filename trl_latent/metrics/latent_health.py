"""Latent-space health: can the world model say what the task needs, and do the codes change what it says?

A latent action space is useful for RL only if both hold (docs/architecture.md section 2):
- **reachability**: for the answer tokens of held-out dialogues, some code makes the world model emit the right token
  (`health/world_accuracy_best`);
- **controllability**: different codes make it emit different tokens (`health/controllability`, the mean number of
  distinct next tokens across all codes at an answer position; 1 means the codes do not matter).

Next to them: the world model's accuracy with the inverse dynamics model's codes (what stages 1-3 train) and with the
policy's argmax codes (what greedy inference does), the base alone for reference, the codes the policy and the IDM use,
and the policy's mean per-step code entropy (room to explore). [`latent_health`] measures them all on collated batches
(a `LatentDataCollator`'s paired stream: `loss_mask` marks the answer tokens).
"""

from __future__ import annotations

import torch

from ..modeling.modules import entropy_from_logits

__all__ = ["HEALTH_METRICS", "latent_health"]

HEALTH_METRICS = (
    "health/base_accuracy",
    "health/world_accuracy_inverse",
    "health/world_accuracy_policy",
    "health/world_accuracy_best",
    "health/controllability",
    "health/codes_used_policy",
    "health/codes_used_inverse",
    "health/policy_entropy",
)


def _distinct_per_column(tokens: torch.Tensor) -> torch.Tensor:
    """Number of distinct values in each column of `tokens` (C, N): (N,)."""
    ordered = tokens.sort(dim=0).values
    return 1 + (ordered[1:] != ordered[:-1]).sum(0)


@torch.no_grad()
def latent_health(model, batches, code_chunk: int = 16, max_logits: int = 2**26) -> dict[str, float]:
    """Measure the latent-space health metrics of `model` over `batches`.

    Args:
        model ([`LatentActionModel`]): the latent model (its current `config.world_output` form is measured).
        batches (iterable of `dict`): collated paired batches (`input_ids`, `attention_mask`, `loss_mask`, and the
            image inputs when present); `loss_mask` marks the tokens to predict (the answers, with
            `assistant_only_loss`).
        code_chunk (`int`, *optional*, defaults to `16`): codes scored per world-model pass when trying every code.
        max_logits (`int`, *optional*, defaults to `2**26`): the most vocabulary logits one pass holds (256 MB in
            fp32); steps are scored in blocks that fit.

    Returns:
        `dict[str, float]`: the `HEALTH_METRICS`; empty when the batches hold no token to predict.
    """
    was_training = model.training
    model.eval()
    n_codes = model.config.codebook_size
    lm_head = model.backbone.lm_head
    vocab = lm_head.weight.shape[0]
    hits = dict.fromkeys(("base", "inverse", "policy", "best"), 0)
    distinct = entropy = 0.0
    total = 0
    used_policy = torch.zeros(n_codes, dtype=torch.bool)
    used_inverse = torch.zeros(n_codes, dtype=torch.bool)
    try:
        for batch in batches:
            steps = batch["loss_mask"][:, 1:].bool()
            if not steps.any():
                continue
            base = model.encode(
                batch["input_ids"],
                batch["attention_mask"],
                batch.get("pixel_values"),
                batch.get("image_grid_thw"),
                batch.get("mm_token_type_ids"),
            )
            e = base.states
            targets = batch["input_ids"][:, 1:][steps]
            e_steps = e[:, :-1][steps]  # (N, d)
            inverse_codes = model.inverse_logits(e, base)[:, :-1][steps].argmax(-1)
            policy_logits = model.policy_logits(e, base)[:, :-1][steps].float()
            policy_codes = policy_logits.argmax(-1)

            hits["base"] += int((lm_head(e_steps.to(lm_head.weight.dtype)).argmax(-1) == targets).sum())
            for name, codes in (("inverse", inverse_codes), ("policy", policy_codes)):
                predicted = model.world_logits(e_steps[None], codes[None])[0].argmax(-1)
                hits[name] += int((predicted == targets).sum())
            # Every code at every step: (|C|, N) argmax tokens, in blocks of codes x steps whose logits stay within
            # `max_logits` values (a 152K vocabulary makes the full (|C|, N, V) tensor far too large).
            n_steps = e_steps.shape[0]
            step_chunk = max(1, max_logits // (code_chunk * vocab))
            tokens = torch.empty(n_codes, n_steps, dtype=torch.long, device=e.device)
            for start in range(0, n_codes, code_chunk):
                chunk = torch.arange(start, min(start + code_chunk, n_codes), device=e.device)
                for first in range(0, n_steps, step_chunk):
                    part = e_steps[first : first + step_chunk]
                    codes = chunk[:, None].expand(-1, part.shape[0])
                    states = part[None].expand(len(chunk), -1, -1)
                    tokens[chunk, first : first + part.shape[0]] = model.world_logits(states, codes).argmax(-1)
            hits["best"] += int((tokens == targets[None]).any(0).sum())
            distinct += float(_distinct_per_column(tokens).sum())
            entropy += float(entropy_from_logits(policy_logits).sum())
            used_policy[policy_codes.unique().cpu()] = True
            used_inverse[inverse_codes.unique().cpu()] = True
            total += targets.numel()
    finally:
        model.train(was_training)
    if total == 0:
        return {}
    return {
        "health/base_accuracy": hits["base"] / total,
        "health/world_accuracy_inverse": hits["inverse"] / total,
        "health/world_accuracy_policy": hits["policy"] / total,
        "health/world_accuracy_best": hits["best"] / total,
        "health/controllability": distinct / total,
        "health/codes_used_policy": float(used_policy.sum()),
        "health/codes_used_inverse": float(used_inverse.sum()),
        "health/policy_entropy": entropy / total,
    }
