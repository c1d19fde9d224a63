"""Pluggable GRPO-family policy losses, shared by the token-level and the latent-action trainers.

A loss object owns everything that makes GRPO, Dr.GRPO, DAPO and BNPO different from one another: how rewards become
advantages (group baseline, optional standard-deviation scaling, optional soft over-length shaping), the clipped
importance-weighted surrogate, the k3 KL term to the reference policy, and how per-token losses are aggregated into
one scalar. Trainers only compute log-probabilities and hand them over.

The interface is shape-agnostic over `(B, S)`: for `TokenGRPOTrainer` a "token" is a text token and its log-probability
is over the vocabulary; for `LatentGRPOTrainer` it is one completion step and its log-probability is over the 128 latent
actions (codes). The same object therefore gives the same objective in both action spaces.

A name means one thing everywhere: TRL's `loss_type` of the same name. A class built with no arguments, `get_loss(name)`
and a config's `loss=name` all give TRL's loss with `GRPOConfig`'s defaults, and configured from a `GRPOConfig` (see
[`loss_from_config`]) every class reproduces TRL 1.16's `GRPOTrainer._compute_loss` exactly, including gradient
accumulation and multi-process normalisation; the tests compare both on random tensors. The papers' own settings
(Dr.GRPO without std scaling, DAPO's clip-higher) are spelled out where they differ: `PAPER_SETTINGS`, applied by
`get_loss(name, paper=True)`, or the same values on a config (`scale_rewards="none"`, `epsilon_high=0.28`).

```python
>>> import torch
>>> from trl_latent.training.losses import get_loss
>>> loss_fn = get_loss("dr_grpo", paper=True, max_completion_length=4)  # the paper's setting: no std scaling
>>> rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
>>> loss_fn.compute_advantages(rewards, num_generations=2)
tensor([ 0.5000, -0.5000, -0.5000,  0.5000])
>>> logps = torch.randn(4, 4, requires_grad=True)
>>> loss, metrics = loss_fn(logps, logps.detach(), None, loss_fn.compute_advantages(rewards, 2), torch.ones(4, 4))
>>> sorted(metrics)
['clip_ratio/high_max', 'clip_ratio/high_mean', 'clip_ratio/low_mean', 'clip_ratio/low_min', 'clip_ratio/region_mean']

```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch


# TRL's NaN-aware statistics (so advantages and metrics match TRL's bit for bit), imported on first use: importing
# `trl.trainer.utils` loads transformers' training stack and, through it, peft and bitsandbytes, which the loss names
# alone (`LOSS_CLASSES`, read by the command-line parsers) do not need.
def nanstd(*args, **kwargs):
    from trl.trainer.utils import nanstd as trl_nanstd

    return trl_nanstd(*args, **kwargs)


def nanmin(tensor):
    from trl.trainer.utils import nanmin as trl_nanmin

    return trl_nanmin(tensor)


def nanmax(tensor):
    from trl.trainer.utils import nanmax as trl_nanmax

    return trl_nanmax(tensor)


__all__ = [
    "LOSS_CLASSES",
    "LOSS_NAMES",
    "PAPER_SETTINGS",
    "BNPOLoss",
    "DAPOLoss",
    "DrGRPOLoss",
    "GRPOLoss",
    "PolicyLoss",
    "get_loss",
    "loss_from_config",
]

SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
AGGREGATIONS = ("sequence_mean", "token_mean", "constant", "global_token_mean")
# TRL 1.16 `loss_type`s that are not GRPO-family clipped objectives; named in the error for an unknown loss.
_TRL_ONLY_LOSS_TYPES = ("cispo", "sapo", "luspo", "vespo")


def _normalise_scale_rewards(value: str | bool) -> str:
    # GRPOConfig accepts booleans too (True -> "group", False -> "none").
    value = {True: "group", False: "none"}.get(value, value)
    if value not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS} (or True/False), got {value!r}.")
    return value


class PolicyLoss:
    r"""
    Base class of the GRPO-family policy losses.

    For a group of `G` completions of one prompt with rewards `r_i`, the advantage is `A_i = r_i - mean(r)`, divided by
    `std(r) + 1e-4` when rewards are scaled. The per-token loss is the clipped importance-weighted surrogate of PPO plus
    the k3 estimator of the KL to the reference policy:

        w_t = exp(log π(a_t) - log π_old(a_t)),
        ℓ_t = -min(w_t A, clip(w_t, 1 - ε_low, 1 + ε_high) A) + β (exp(log π_ref - log π) - (log π_ref - log π) - 1),

    and `aggregation` turns the `(B, S)` per-token losses into one scalar. Subclasses set `name` and `aggregation`;
    their defaults are TRL's for the `loss_type` of that name (a paper's own settings: `PAPER_SETTINGS`). To add an objective, subclass and override [`~PolicyLoss.per_token_loss`] (and
    [`~PolicyLoss.clip_masks`] when it does not clip), or [`~PolicyLoss.aggregate`] for a new aggregation; the
    trainers need no change.

    Args:
        beta (`float`, *optional*, defaults to `0.0`):
            KL coefficient β. `0.0` drops the KL term (and a trainer then needs no reference log-probabilities).
        epsilon (`float`, *optional*, defaults to `0.2`):
            Lower clipping bound ε_low: the ratio is clipped below at `1 - epsilon`.
        epsilon_high (`float`, *optional*):
            Upper clipping bound ε_high: the ratio is clipped above at `1 + epsilon_high`. `None` means `epsilon`
            (symmetric clipping, as TRL). DAPO's clip-higher uses `0.28`.
        delta (`float`, *optional*):
            Two-sided clipping (INTELLECT-2, arXiv 2505.07291, as TRL's `delta`): the unclipped ratio is also capped
            at `delta`, which bounds the update for negative advantages. `None` disables it.
        scale_rewards (`str` or `bool`, *optional*, defaults to `"group"`):
            `"group"` divides the advantages by the standard deviation of each group, `"batch"` by that of the whole
            generation batch, `"none"` does not scale (Dr.GRPO). `True`/`False` mean `"group"`/`"none"`.
        importance_sampling_level (`str`, *optional*, defaults to `"token"`):
            `"token"`: one importance ratio per token; `"sequence"`: the masked mean of the log-ratios of each sequence
            (GSPO, arXiv 2507.18071).
        use_bias_correction_kl (`bool`, *optional*, defaults to `True`):
            Multiply the KL term by the importance ratio (DeepSeek-V3.2, arXiv 2512.02556), as TRL 1.16 does by
            default.
        max_completion_length (`int`, *optional*):
            Maximum completion length. Required by the `"constant"` aggregation (Dr.GRPO) and by over-length shaping.
            Trainers fill it from their config when it is `None`.
        drop_zero_variance_groups (`bool`, *optional*, defaults to `False`):
            Remove the completions of groups whose rewards are all equal from the loss: they carry no policy gradient
            (their advantages are zero) and their tokens and sequences no longer count in the normaliser, so they do
            not dilute the informative groups (their KL term is dropped with them). This is DAPO's dynamic sampling
            (arXiv 2503.14476, section 3.2) without re-sampling.
        overlong_buffer_length (`int`, *optional*):
            Soft over-length shaping (DAPO eq. 13) with cache length `L_cache = overlong_buffer_length`: a completion
            of length `|y|` gets `overlong_penalty_factor * clip(((L_max - L_cache) - |y|) / L_cache, -1, 0)` added to
            its reward before advantages are computed, with `L_max = max_completion_length`. Completions up to
            `L_max - L_cache` tokens are not penalised. `None` disables it.
        overlong_penalty_factor (`float`, *optional*, defaults to `1.0`):
            Scale of the over-length penalty (the DAPO recipe's `overlong_penalty_factor`).
    """

    name: ClassVar[str] = "policy"
    # One of AGGREGATIONS; see `aggregate`.
    aggregation: ClassVar[str] = "token_mean"

    def __init__(
        self,
        *,
        beta: float = 0.0,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        delta: float | None = None,
        scale_rewards: str | bool = "group",
        importance_sampling_level: str = "token",
        use_bias_correction_kl: bool = True,
        max_completion_length: int | None = None,
        drop_zero_variance_groups: bool = False,
        overlong_buffer_length: int | None = None,
        overlong_penalty_factor: float = 1.0,
    ):
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        if epsilon < 0 or (epsilon_high is not None and epsilon_high < 0):
            raise ValueError(f"epsilon and epsilon_high must be >= 0, got {epsilon} and {epsilon_high}.")
        if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got "
                f"{importance_sampling_level!r}."
            )
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"{type(self).__name__}.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}; "
                "override `aggregate` for a new aggregation."
            )
        if max_completion_length is not None and max_completion_length <= 0:
            raise ValueError(f"max_completion_length must be positive, got {max_completion_length}.")
        if overlong_buffer_length is not None:
            if overlong_buffer_length <= 0:
                raise ValueError(f"overlong_buffer_length must be positive, got {overlong_buffer_length}.")
            if max_completion_length is not None and overlong_buffer_length > max_completion_length:
                raise ValueError(
                    f"overlong_buffer_length ({overlong_buffer_length}) must not exceed max_completion_length "
                    f"({max_completion_length})."
                )
        self.beta = beta
        self.epsilon_low = epsilon
        self.epsilon_high = epsilon if epsilon_high is None else epsilon_high
        self.delta = delta
        self.scale_rewards = _normalise_scale_rewards(scale_rewards)
        self.importance_sampling_level = importance_sampling_level
        self.use_bias_correction_kl = use_bias_correction_kl
        self.max_completion_length = max_completion_length
        self.drop_zero_variance_groups = drop_zero_variance_groups
        self.overlong_buffer_length = overlong_buffer_length
        self.overlong_penalty_factor = overlong_penalty_factor

    def __repr__(self) -> str:
        fields = (
            "beta",
            "epsilon_low",
            "epsilon_high",
            "delta",
            "scale_rewards",
            "importance_sampling_level",
            "use_bias_correction_kl",
            "max_completion_length",
            "drop_zero_variance_groups",
            "overlong_buffer_length",
            "overlong_penalty_factor",
        )
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in fields)})"

    # ------------------------------------------------------------------------------------------------- advantages
    def overlong_penalty(self, completion_lengths: torch.Tensor) -> torch.Tensor:
        """DAPO's soft over-length punishment (arXiv 2503.14476, eq. 13) for each completion length."""
        if self.overlong_buffer_length is None:
            raise ValueError("overlong_penalty needs `overlong_buffer_length`; it is None (shaping is off).")
        if self.max_completion_length is None:
            raise ValueError("Over-length shaping needs `max_completion_length` (L_max); set it on the loss.")
        cache = self.overlong_buffer_length
        free = self.max_completion_length - cache
        # 0 up to L_max - L_cache, then linear down to -1 at L_max, and -1 beyond.
        penalty = ((free - completion_lengths.float()) / cache).clamp(min=-1.0, max=0.0)
        return self.overlong_penalty_factor * penalty

    def shape_rewards(self, rewards: torch.Tensor, completion_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The rewards advantages are computed from: `rewards` plus the over-length penalty when shaping is on."""
        if self.overlong_buffer_length is None:
            return rewards
        if completion_lengths is None:
            raise ValueError(
                "Over-length shaping is on (overlong_buffer_length is set), so `completion_lengths` must be passed "
                "(one length per completion, in the order of `rewards`)."
            )
        return rewards + self.overlong_penalty(completion_lengths).to(rewards.device, rewards.dtype)

    @staticmethod
    def _check_groups(rewards: torch.Tensor, num_generations: int) -> None:
        if rewards.dim() != 1:
            raise ValueError(f"rewards must be 1-D (one reward per completion), got shape {tuple(rewards.shape)}.")
        if num_generations < 1 or rewards.numel() % num_generations != 0:
            raise ValueError(
                f"The number of rewards ({rewards.numel()}) must be a multiple of num_generations "
                f"({num_generations}): completions of one prompt must be consecutive, num_generations per prompt."
            )

    def compute_advantages(
        self,
        rewards: torch.Tensor,
        num_generations: int,
        *,
        completion_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Group-relative advantages, exactly as TRL 1.16 computes them (`multi_objective_aggregation=
        "sum_then_normalize"`).

        Args:
            rewards (`torch.Tensor`):
                Shape `(N,)`, the (weighted, summed) reward of each completion of the whole generation batch, the
                `num_generations` completions of each prompt consecutive. `NaN` marks an unscorable completion: it is
                left out of its group's statistics and gets advantage `0`.
            num_generations (`int`):
                Completions per prompt (`G`).
            completion_lengths (`torch.Tensor`, *optional*):
                Shape `(N,)`, needed only for over-length shaping.

        Returns:
            `torch.Tensor`: shape `(N,)`.
        """
        self._check_groups(rewards, num_generations)
        rewards = self.shape_rewards(rewards, completion_lengths)
        grouped = rewards.view(-1, num_generations)
        mean_grouped_rewards = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations, dim=0)
        if self.scale_rewards in ("group", "none"):
            if num_generations > 1:
                std_rewards = nanstd(grouped, dim=1).repeat_interleave(num_generations, dim=0)
            else:
                std_rewards = torch.zeros_like(rewards)
        else:  # "batch" (PPO-Lite, arXiv 2508.08221)
            std_rewards = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = rewards - mean_grouped_rewards
        if self.scale_rewards != "none":
            advantages = advantages / (std_rewards + 1e-4)
        return torch.nan_to_num(advantages, nan=0.0)

    def informative_mask(
        self,
        rewards: torch.Tensor,
        num_generations: int,
        *,
        completion_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(N,)` bool: `True` for completions whose group's (shaped) rewards are not all equal.

        Equality is TRL's `frac_reward_zero_std` test (`torch.isclose(std, 0)`); a group with fewer than two scorable
        completions has no variance either.
        """
        self._check_groups(rewards, num_generations)
        rewards = self.shape_rewards(rewards, completion_lengths)
        if num_generations == 1:
            return torch.zeros_like(rewards, dtype=torch.bool)
        std = nanstd(rewards.view(-1, num_generations), dim=1)
        informative = ~(torch.isclose(std, torch.zeros_like(std)) | torch.isnan(std))
        return informative.repeat_interleave(num_generations, dim=0)

    # ------------------------------------------------------------------------------------------------------- loss
    def importance_log_weights(self, log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Log importance weights: `(B, S)` per token, or `(B, 1)` per sequence (GSPO)."""
        if self.importance_sampling_level == "token":
            return log_ratio
        log_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return log_weights.unsqueeze(-1)

    def kl_divergence(
        self, per_token_logps: torch.Tensor, ref_per_token_logps: torch.Tensor, coef_1: torch.Tensor
    ) -> torch.Tensor:
        """k3 estimator of KL(π || π_ref) per token (Schulman, "Approximating KL divergence"), as TRL."""
        per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
        if self.use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1
        return per_token_kl

    def per_token_loss(
        self, coef_1: torch.Tensor, advantages: torch.Tensor, per_token_logps: torch.Tensor
    ) -> torch.Tensor:
        """The policy-gradient term per token (before masking, weights, KL and aggregation).

        `coef_1` is the importance ratio (`(B, S)` or `(B, 1)`), `advantages` is `(B, 1)` or `(B, S)`. The default is
        PPO's clipped surrogate with asymmetric bounds and optional two-sided clipping.
        """
        coef_2 = torch.clamp(coef_1, 1 - self.epsilon_low, 1 + self.epsilon_high)
        if self.delta is not None:  # two-sided clipping (INTELLECT-2)
            coef_1 = torch.clamp(coef_1, max=self.delta)
        per_token_loss1 = coef_1 * advantages
        per_token_loss2 = coef_2 * advantages
        return -torch.min(per_token_loss1, per_token_loss2)

    def clip_masks(self, coef_1: torch.Tensor, advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Where the clip is active, `(low, high)`, for the `clip_ratio/*` metrics; `None` for objectives that do
        not clip (no clip metrics are then reported)."""
        if self.delta is not None:  # TRL measures the clip on the delta-capped ratio
            coef_1 = torch.clamp(coef_1, max=self.delta)
        is_low_clipped = (coef_1 < 1 - self.epsilon_low) & (advantages < 0)
        is_high_clipped = (coef_1 > 1 + self.epsilon_high) & (advantages > 0)
        return is_low_clipped, is_high_clipped

    def aggregate(
        self,
        per_token_loss: torch.Tensor,
        mask: torch.Tensor,
        *,
        sequence_mask: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        gradient_accumulation_steps: int = 1,
        steps_per_generation: int = 1,
        num_processes: int = 1,
    ) -> torch.Tensor:
        """Reduce `(B, S)` per-token losses to the scalar to back-propagate (already scaled for gradient
        accumulation, as TRL's `loss_is_scaled_for_ga = True` expects). See `docs/losses.md` for the formulas."""
        if sequence_mask is not None:
            sequence_mask = sequence_mask.to(per_token_loss.dtype)
            mask = mask * sequence_mask.unsqueeze(-1)
        if self.aggregation == "sequence_mean":  # GRPO: mean over each sequence, then over sequences
            per_sequence = (per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
            if sequence_mask is None:
                loss = per_sequence.mean()
            else:
                loss = (per_sequence * sequence_mask).sum() / sequence_mask.sum().clamp(min=1.0)
            return loss / gradient_accumulation_steps
        if self.aggregation == "token_mean":  # BNPO: mean over the tokens of this micro-batch
            loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
            return loss / gradient_accumulation_steps
        if self.aggregation == "constant":  # Dr.GRPO: token sum / (sequences x max completion length)
            if self.max_completion_length is None:
                raise ValueError(f"{type(self).__name__} needs `max_completion_length` for its constant normaliser.")
            num_sequences = per_token_loss.size(0) if sequence_mask is None else sequence_mask.sum().clamp(min=1.0)
            loss = (per_token_loss * mask).sum() / (num_sequences * self.max_completion_length)
            return loss / gradient_accumulation_steps
        if self.aggregation == "global_token_mean":  # DAPO: token sum / tokens of the whole generation batch
            if num_items_in_batch is None:
                # Stand-alone use: this micro-batch is the whole generation batch.
                num_items_in_batch = mask.sum() * num_processes * steps_per_generation / gradient_accumulation_steps
            if not torch.is_tensor(num_items_in_batch):
                num_items_in_batch = torch.tensor(float(num_items_in_batch), device=per_token_loss.device)
            # `num_items_in_batch` counts the tokens of the generation batch over all processes: per process, it
            # spans `steps_per_generation` micro-batches, of which `gradient_accumulation_steps` make one optimizer
            # step, so this is the token count of one accumulation window (TRL 1.16 `_compute_loss`).
            normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
            normalizer = normalizer * gradient_accumulation_steps / steps_per_generation
            return (per_token_loss * mask).sum() / normalizer
        raise ValueError(f"Unknown aggregation {self.aggregation!r}; choose one of {AGGREGATIONS}.")

    def __call__(
        self,
        per_token_logps: torch.Tensor,
        old_per_token_logps: torch.Tensor | None,
        ref_per_token_logps: torch.Tensor | None,
        advantages: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        entropies: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        gradient_accumulation_steps: int = 1,
        steps_per_generation: int = 1,
        num_processes: int = 1,
        sequence_mask: torch.Tensor | None = None,
        token_weights: Sequence[torch.Tensor] = (),
        accelerator: Any = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """
        Compute the loss of one micro-batch and its metrics.

        Args:
            per_token_logps (`torch.Tensor`):
                `(B, S)` log-probabilities of the sampled actions (tokens or latent codes) under the current policy.
            old_per_token_logps (`torch.Tensor` or `None`):
                `(B, S)` log-probabilities under the policy that sampled them; `None` means on-policy
                (`per_token_logps.detach()`).
            ref_per_token_logps (`torch.Tensor` or `None`):
                `(B, S)` log-probabilities under the reference policy; required when `beta > 0`.
            advantages (`torch.Tensor`):
                `(B,)` per sequence or `(B, S)` per step.
            completion_mask (`torch.Tensor`):
                `(B, S)`, 1 for the steps that count.
            entropies (`torch.Tensor`, *optional*):
                `(B, S)` entropies of the policy at each step, for the `entropy` metric only.
            num_items_in_batch (`torch.Tensor` or `int`, *optional*):
                For the `"global_token_mean"` aggregation (DAPO): the number of counted steps in the whole generation
                batch over all processes (TRL's `inputs["num_items_in_batch"]`). `None` treats this micro-batch as the
                whole generation batch.
            gradient_accumulation_steps (`int`, *optional*, defaults to `1`):
                Micro-batches per optimizer step (TRL's `current_gradient_accumulation_steps`); `1` in evaluation.
            steps_per_generation (`int`, *optional*, defaults to `1`):
                Micro-batches per generation batch (`args.steps_per_generation`); `1` in evaluation.
            num_processes (`int`, *optional*, defaults to `1`):
                Data-parallel processes.
            sequence_mask (`torch.Tensor`, *optional*):
                `(B,)`, 0 for sequences to remove from the loss and its normaliser (see `drop_zero_variance_groups`).
            token_weights (sequence of `torch.Tensor`, *optional*):
                Multiplicative weights on the policy-gradient term (not on the KL), applied in order, each `(B, S)`
                or `(B, 1)`: TRL's off-policy sequence mask, high-entropy token mask and vLLM importance-sampling
                ratio.
            accelerator (`accelerate.Accelerator`, *optional*):
                Used only to reduce metrics across processes (`reduce`/`gather`); `None` reports local metrics.

        Returns:
            `tuple[torch.Tensor, dict[str, float]]`: the scalar loss and the metrics, named as TRL logs them (`kl`,
            `entropy`, `clip_ratio/low_mean`, `clip_ratio/high_mean`, `clip_ratio/region_mean`, `clip_ratio/low_min`,
            `clip_ratio/high_max`).
        """
        mask = completion_mask
        if per_token_logps.shape != mask.shape:
            raise ValueError(
                f"per_token_logps {tuple(per_token_logps.shape)} and completion_mask {tuple(mask.shape)} must have "
                "the same (batch, steps) shape."
            )
        # GRPO advantages are one per sequence, (B,); subclasses may give one per step, (B, S).
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()
        if self.beta != 0.0 and ref_per_token_logps is None:
            raise ValueError(
                f"beta={self.beta} needs reference log-probabilities (ref_per_token_logps); pass them or set beta=0."
            )

        log_ratio = per_token_logps - old_per_token_logps
        coef_1 = torch.exp(self.importance_log_weights(log_ratio, mask))
        per_token_kl = self.kl_divergence(per_token_logps, ref_per_token_logps, coef_1) if self.beta != 0.0 else None

        per_token_loss = self.per_token_loss(coef_1, advantages, per_token_logps)
        for weight in token_weights:
            per_token_loss = per_token_loss * weight
        if per_token_kl is not None:
            per_token_loss = per_token_loss + self.beta * per_token_kl

        loss = self.aggregate(
            per_token_loss,
            mask,
            sequence_mask=sequence_mask,
            num_items_in_batch=num_items_in_batch,
            gradient_accumulation_steps=gradient_accumulation_steps,
            steps_per_generation=steps_per_generation,
            num_processes=num_processes,
        )
        metrics = self.metrics(mask, coef_1, advantages, per_token_kl, entropies, accelerator)
        return loss, metrics

    # ---------------------------------------------------------------------------------------------------- metrics
    def metrics(
        self,
        mask: torch.Tensor,
        coef_1: torch.Tensor,
        advantages: torch.Tensor,
        per_token_kl: torch.Tensor | None,
        entropies: torch.Tensor | None,
        accelerator: Any = None,
    ) -> dict[str, float]:
        """The metrics TRL 1.16 logs from `_compute_loss`, reduced over processes exactly as TRL reduces them."""
        with torch.no_grad():

            def reduce_sum(t):
                return t if accelerator is None else accelerator.reduce(t, reduction="sum")

            def gather(t):
                return t if accelerator is None else accelerator.gather(t)

            def masked_seq_mean(x):
                if x.shape[1] == 1:  # sequence-level importance sampling: already one value per sequence
                    return x.squeeze(1)
                return (x * mask).sum(-1) / mask.sum(-1)

            def global_masked_mean(x):
                if x.shape[1] == 1:
                    local_sum, local_count = x.sum(), torch.tensor(float(x.shape[0]), device=x.device)
                else:
                    local_sum, local_count = (x * mask).sum(), mask.sum().float()
                totals = reduce_sum(torch.stack([local_sum, local_count]))
                return (totals[0] / totals[1].clamp(min=1.0)).item()

            metrics: dict[str, float] = {}
            if per_token_kl is not None:
                metrics["kl"] = global_masked_mean(per_token_kl)
            if entropies is not None:
                metrics["entropy"] = global_masked_mean(entropies)
            clipped = self.clip_masks(coef_1, advantages)
            if clipped is not None:
                is_low_clipped, is_high_clipped = clipped
                is_region_clipped = is_low_clipped | is_high_clipped
                metrics["clip_ratio/low_mean"] = global_masked_mean(is_low_clipped.float())
                metrics["clip_ratio/high_mean"] = global_masked_mean(is_high_clipped.float())
                metrics["clip_ratio/region_mean"] = global_masked_mean(is_region_clipped.float())
                metrics["clip_ratio/low_min"] = nanmin(gather(masked_seq_mean(is_low_clipped.float()))).item()
                metrics["clip_ratio/high_max"] = nanmax(gather(masked_seq_mean(is_high_clipped.float()))).item()
        return metrics


class GRPOLoss(PolicyLoss):
    """GRPO (DeepSeekMath, arXiv 2402.03300): each sequence's loss is the mean over its tokens, then the mean over
    sequences. Defaults are TRL's (`scale_rewards="group"`, symmetric ε = 0.2, β = 0)."""

    name = "grpo"
    aggregation = "sequence_mean"


class BNPOLoss(PolicyLoss):
    """BNPO (batch-normalised policy optimisation, TRL's `loss_type="bnpo"`): the mean over all tokens of the
    micro-batch. Defaults are TRL's."""

    name = "bnpo"
    aggregation = "token_mean"


class DrGRPOLoss(PolicyLoss):
    """Dr.GRPO ("Understanding R1-Zero-Like Training", arXiv 2503.20783): the token sum divided by a constant,
    (sequences in the micro-batch) x `max_completion_length`, which removes GRPO's length bias. Defaults are TRL's
    `loss_type="dr_grpo"` (`scale_rewards="group"`); the paper also leaves advantages unscaled by the group's standard
    deviation, which removes the question-difficulty bias: `DrGRPOLoss(scale_rewards="none")` or
    `get_loss("dr_grpo", paper=True)`."""

    name = "dr_grpo"
    aggregation = "constant"


class DAPOLoss(PolicyLoss):
    """DAPO (arXiv 2503.14476): the token sum divided by the number of tokens of the whole generation batch
    (token-level policy gradient). Defaults are TRL's `loss_type="dapo"` (`epsilon_high = epsilon`); the paper's
    clip-higher is `DAPOLoss(epsilon_high=0.28)` or `get_loss("dapo", paper=True)`. The paper's dynamic sampling and
    soft over-length punishment are the `drop_zero_variance_groups` and `overlong_buffer_length` options. Clip-higher acts only on
    off-policy steps and the normaliser differs from BNPO's only across micro-batches: with one optimisation step per
    generation batch DAPO and BNPO give the same update (docs/losses.md "When the objectives differ: the RL
    schedule")."""

    name = "dapo"
    aggregation = "global_token_mean"


LOSS_CLASSES: dict[str, type[PolicyLoss]] = {cls.name: cls for cls in (GRPOLoss, DrGRPOLoss, DAPOLoss, BNPOLoss)}
LOSS_NAMES = tuple(LOSS_CLASSES)
# Where a paper's own setting differs from TRL's `loss_type` of the same name (`get_loss(name, paper=True)`).
PAPER_SETTINGS: dict[str, dict[str, Any]] = {"dr_grpo": {"scale_rewards": "none"}, "dapo": {"epsilon_high": 0.28}}


def get_loss(name_or_obj: str | PolicyLoss | type[PolicyLoss], *, paper: bool = False, **config) -> PolicyLoss:
    """
    Build a loss by name (TRL's `loss_type` of that name with `GRPOConfig`'s defaults; `**config` overrides them), or
    pass a loss object through.

    Args:
        name_or_obj (`str`, `PolicyLoss` or a `PolicyLoss` subclass):
            `"grpo"`, `"dr_grpo"`, `"dapo"` or `"bnpo"`; a loss object (returned as is); or a class to instantiate.
        paper (`bool`, *optional*, defaults to `False`):
            Apply the paper's own settings where they differ from TRL's (`PAPER_SETTINGS`: Dr.GRPO without std
            scaling, DAPO's clip-higher 0.28) before `**config`.
        **config:
            Constructor arguments of the class (see [`PolicyLoss`]).

    Returns:
        [`PolicyLoss`]
    """
    if isinstance(name_or_obj, PolicyLoss):
        if config or paper:
            raise TypeError(
                f"get_loss got a {type(name_or_obj).__name__} object and options {sorted(config) or ['paper']}; configure the "
                "object through its constructor instead."
            )
        return name_or_obj
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, PolicyLoss):
        settings = PAPER_SETTINGS.get(name_or_obj.name, {}) if paper else {}
        return name_or_obj(**{**settings, **config})
    if not isinstance(name_or_obj, str):
        raise TypeError(
            f"A loss is a name ({sorted(LOSS_CLASSES)}) or a PolicyLoss object, got {type(name_or_obj).__name__}."
        )
    if name_or_obj not in LOSS_CLASSES:
        hint = ""
        if name_or_obj in _TRL_ONLY_LOSS_TYPES:
            hint = (
                f" {name_or_obj!r} is a TRL loss_type without a trl-latent class: use TRL's GRPOTrainer for it, or "
                "subclass trl_latent.training.losses.PolicyLoss to add it (docs/losses.md)."
            )
        raise ValueError(f"Unknown loss {name_or_obj!r}; choose one of {sorted(LOSS_CLASSES)}.{hint}")
    settings = PAPER_SETTINGS.get(name_or_obj, {}) if paper else {}
    return LOSS_CLASSES[name_or_obj](**{**settings, **config})


def loss_from_config(args: Any, **overrides) -> PolicyLoss:
    """
    Build the loss that reproduces TRL's `GRPOTrainer` with this `GRPOConfig` exactly.

    Reads `loss_type`, `beta`, `epsilon`, `epsilon_high` (`None` means `epsilon`, as in TRL),
    `delta`, `scale_rewards`, `importance_sampling_level`, `use_bias_correction_kl` and `max_completion_length`.

    Args:
        args (`GRPOConfig` or any object with those attributes):
            The training configuration.
        **overrides:
            Constructor arguments that replace the config's values; `loss_type=` picks another class.

    Returns:
        [`PolicyLoss`]
    """
    loss_type = overrides.pop("loss_type", args.loss_type)
    config = dict(
        beta=args.beta,
        epsilon=args.epsilon,
        epsilon_high=args.epsilon if args.epsilon_high is None else args.epsilon_high,
        delta=args.delta,
        scale_rewards=args.scale_rewards,
        importance_sampling_level=args.importance_sampling_level,
        use_bias_correction_kl=args.use_bias_correction_kl,
        max_completion_length=args.max_completion_length,
    )
    config.update(overrides)
    return get_loss(loss_type, **config)
