"""`TokenGRPOTrainer`: TRL's `GRPOTrainer` with the pluggable loss classes of `trl_latent.training.losses`.

It is the token-level baseline of the latent-action trainer: both compute their objective with the same
[`~trl_latent.training.losses.PolicyLoss`] object, so a latent run and a token run differ only in the action space
(128 latent codes per step vs the vocabulary). The glue that hands a batch to the loss object, recomputes advantages
with it and logs rollout diversity is [`~trl_latent.training.policy_loss_mixin.PolicyLossMixin`], which `LatentGRPOTrainer`
reuses (re-exported here with `resolve_policy_loss` and `build_diversity_embedder`).

Overridden TRL private methods (pinned by `tests/project/test_trl_contract.py`), each wrapped with `super()`:
`_calculate_rewards` (keeps the rewards and logs diversity) and `_generate_and_score_completions` (advantages from the
loss object), both in `PolicyLossMixin`, and `_compute_loss` (log-probabilities from TRL, loss from the loss object).
`train(resume_from_checkpoint=True)` resumes from the newest complete checkpoint (`ResumeCheckpointMixin`).
"""

from __future__ import annotations

import logging

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import get_config_model_id

from ..data.prompt_datasets import check_prompt_dataset
from .checkpointing import ResumeCheckpointMixin

# The policy-loss glue lives in its own module; re-exported here, where it used to live.
from .policy_loss_mixin import (
    DISTINCT_N,  # noqa: F401 (re-exported)
    PolicyLossMixin,
    build_diversity_embedder,
    resolve_policy_loss,
)
from .reward_failures import MAX_FAILED_REWARD_BATCHES

logger = logging.getLogger(__name__)

__all__ = ["PolicyLossMixin", "TokenGRPOTrainer", "build_diversity_embedder", "resolve_policy_loss"]

# Inputs of a TRL generation batch that `GRPOTrainer._get_per_token_logps_and_entropies` takes as keyword arguments
# (as TRL 1.16's `_compute_loss` passes them). The contract test checks they are still its parameters.
FORWARD_KWARGS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


class TokenGRPOTrainer(ResumeCheckpointMixin, PolicyLossMixin, GRPOTrainer):
    """
    TRL's [`~trl.GRPOTrainer`] with a pluggable [`~trl_latent.training.losses.PolicyLoss`]: the token-level baseline of
    [`LatentGRPOTrainer`], computing its objective with the very same loss classes.

    With `loss=None` it reproduces `GRPOTrainer` for the same `GRPOConfig` (same loss, gradients and metrics), and also
    logs rollout diversity per prompt group (`diversity/distinct_1`, `diversity/distinct_2`, `diversity/self_bleu` and,
    with an embedder, `diversity/embedding`).

    Args:
        model, reward_funcs, args, **kwargs:
            As for [`~trl.GRPOTrainer`]. With a [`~trl_latent.training.token_grpo_config.TokenGRPOConfig`], its
            `loss` (a name or a [`~trl_latent.training.losses.PolicyLoss`] object), `diversity_embedder` (logs
            `diversity/embedding`, the paper's diversity) and `max_failed_reward_batches` (generation batches in a row
            without a reward after which the run saves a checkpoint and stops, `train()` raising
            [`~trl_latent.training.reward_failures.RewardFailureError`]) apply, as they do for `LatentGRPOTrainer`. With
            a plain `GRPOConfig`, the loss is TRL's for its `loss_type`, no embedder is loaded and the run stops after
            3 failed reward batches.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_latent.modeling.tiny import tiny_lm
    >>> from trl_latent.training.losses import DrGRPOLoss
    >>> from trl_latent.training.token_grpo_config import TokenGRPOConfig
    >>> from trl_latent.training.token_grpo_trainer import TokenGRPOTrainer

    >>> model, tokenizer = tiny_lm("tiny", corpus=["Which colour is the circle?", "It is red."])
    >>> dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": "Which colour is the circle?"}]] * 8})
    >>> args = TokenGRPOConfig("out", per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
    ...                        max_steps=2, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
    ...                        loss=DrGRPOLoss(scale_rewards="none"))
    >>> def reward_len(completions, **kwargs):
    ...     return [float(len(c[0]["content"])) for c in completions]
    >>> trainer = TokenGRPOTrainer(model, reward_funcs=reward_len, args=args, train_dataset=dataset,
    ...                            processing_class=tokenizer)
    >>> trainer.train().global_step
    2
    ```
    """

    _tag_names = ["trl", "grpo", "trl-latent", "token-grpo"]
    _name = "Token GRPO"

    def __init__(self, model, reward_funcs=None, args: GRPOConfig | None = None, *positional, **kwargs):
        moved = sorted(set(kwargs) & {"loss", "diversity_embedder", "max_failed_reward_batches"})
        if moved:
            raise TypeError(
                f"TokenGRPOTrainer takes {moved} from its config: TokenGRPOConfig(..., "
                + ", ".join(f"{name}=..." for name in moved)
                + ") (trl_latent.training.token_grpo_config), as LatentGRPOConfig does for the latent trainer."
            )
        if args is None:  # as GRPOTrainer does, but the loss must see the config before TRL builds the reference
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = GRPOConfig(f"{model_name.split('/')[-1]}-GRPO")
        self.policy_loss = resolve_policy_loss(getattr(args, "loss", None), args)
        self.diversity_embedder = build_diversity_embedder(getattr(args, "diversity_embedder", None))
        super().__init__(model, reward_funcs, args, *positional, **kwargs)
        # names a bad row now, not at the batch that holds it; a model reads images when its processor has an image
        # processor
        check_prompt_dataset(self.train_dataset, takes_images=hasattr(self.processing_class, "image_processor"))
        self._check_policy_loss_support()
        self._setup_reward_failure_stop(getattr(args, "max_failed_reward_batches", MAX_FAILED_REWARD_BATCHES))

    def _compute_loss(self, model, inputs):
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        per_token_logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),  # logits only for the completion tokens
            compute_entropy=True,
            **{key: inputs.get(key) for key in FORWARD_KWARGS},
        )
        return self._compute_policy_loss(inputs, per_token_logps, entropies)
