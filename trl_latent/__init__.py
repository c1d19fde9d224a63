"""trl-latent: latent-action reinforcement learning for vision-language models, as a TRL extension."""

import importlib.abc
import importlib.util
import sys
import warnings
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
    "rubric_reward": "trl_latent.experiments.reward",
    "task_reward": "trl_latent.experiments.reward",
    "evaluate": "trl_latent.evaluation",
    "group_diversity": "trl_latent.metrics.diversity",
    "codebook_usage": "trl_latent.metrics.codebook",
}

__all__ = sorted(_EXPORTS)

# Modules that moved to the embedded experiment's package (`trl_latent.experiments`) in 0.2: the old import paths keep
# working, with a DeprecationWarning, until 0.3.
_MOVED_MODULES = {
    "trl_latent.data.synthetic": "trl_latent.experiments.task",
    "trl_latent.rewards.rubric": "trl_latent.experiments.reward",
    "trl_latent.pipeline": "trl_latent.experiments.pipeline",
    "trl_latent.study": "trl_latent.experiments.study",
    "trl_latent.reports": "trl_latent.experiments.reports",
    "trl_latent.prefix_cache": "trl_latent.experiments.prefix_cache",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an old module path as the module it moved to (the same module object, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        warnings.warn(
            f"{spec.name} moved to {_MOVED_MODULES[spec.name]}; import it from there (the old path goes in 0.3).",
            DeprecationWarning,
            stacklevel=2,
        )
        return import_module(_MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())

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
