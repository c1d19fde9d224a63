"""trl-latent: latent-action reinforcement learning for vision-language models, as a TRL extension.

Every public name loads from the library alone (`modeling`, `training`, `data`, `rewards`, `metrics`, `planning`,
`evaluation`); the embedded experiments under `trl_latent.experiments` use the library and are never imported by it.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public API -> defining module. Imported lazily so `import trl_latent` stays fast and a missing optional extra only
# fails when its feature is used.
_EXPORTS = {
    "LatentActionConfig": "trl_latent.modeling.configuration",
    "LatentActionModel": "trl_latent.modeling.model",
    "latent_generate": "trl_latent.modeling.generation",
    "inspect_codes": "trl_latent.modeling.inspection",
    "LatentSFTConfig": "trl_latent.training.latent_sft_config",
    "LatentSFTTrainer": "trl_latent.training.latent_sft_trainer",
    "LatentGRPOConfig": "trl_latent.training.latent_grpo_config",
    "LatentGRPOTrainer": "trl_latent.training.latent_grpo_trainer",
    "TokenGRPOConfig": "trl_latent.training.token_grpo_config",
    "TokenGRPOTrainer": "trl_latent.training.token_grpo_trainer",
    "PolicyLoss": "trl_latent.training.losses",
    "GRPOLoss": "trl_latent.training.losses",
    "DrGRPOLoss": "trl_latent.training.losses",
    "DAPOLoss": "trl_latent.training.losses",
    "BNPOLoss": "trl_latent.training.losses",
    "get_loss": "trl_latent.training.losses",
    "load_mmrole": "trl_latent.data.mmrole",
    "load_pcogalign": "trl_latent.data.pcogalign",
    "load_pretrain_corpus": "trl_latent.data.pretrain",
    "JudgeReward": "trl_latent.rewards.judge",
    "evaluate": "trl_latent.evaluation",
    "group_diversity": "trl_latent.metrics.diversity",
    "codebook_usage": "trl_latent.metrics.codebook",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .modeling.configuration import LatentActionConfig  # noqa: F401
    from .modeling.generation import latent_generate  # noqa: F401
    from .modeling.inspection import inspect_codes  # noqa: F401
    from .modeling.model import LatentActionModel  # noqa: F401


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trl_latent' has no attribute {name!r}")
