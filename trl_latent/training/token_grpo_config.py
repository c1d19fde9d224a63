"""`TokenGRPOConfig`: the configuration of token-level RL, the baseline arm of [`TokenGRPOTrainer`]."""

from __future__ import annotations

from dataclasses import dataclass

from trl import GRPOConfig

from .policy_loss_config import PolicyLossConfigMixin


@dataclass
class TokenGRPOConfig(PolicyLossConfigMixin, GRPOConfig):
    r"""
    Configuration class for [`TokenGRPOTrainer`]: TRL's [`~trl.GRPOConfig`] plus the fields it shares with
    [`LatentGRPOConfig`] (see [`~trl_latent.training.policy_loss_config.PolicyLossConfigMixin`]): `loss`,
    `loss_type` (default `"grpo"`, the paper's, where TRL has `"dapo"`), `beta` (default `0.01`, the paper's, where TRL
    has `0`), `diversity_embedder` and `max_failed_reward_batches`. Every other parameter is GRPOConfig's.

    `TokenGRPOTrainer` also takes a plain `GRPOConfig`, and then behaves as `GRPOTrainer` does with it.

    ```python
    >>> from trl_latent.training.token_grpo_config import TokenGRPOConfig
    >>> args = TokenGRPOConfig("out", loss="dr_grpo", use_cpu=True, bf16=False)
    >>> args.loss_type, args.beta, args.max_failed_reward_batches
    ('dr_grpo', 0.01, 3)
    ```
    """
