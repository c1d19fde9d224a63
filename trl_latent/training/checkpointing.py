"""Resuming the latent trainers exactly: what `transformers.Trainer` does not know about a latent model.

`Trainer` resumes a plain (non-DeepSpeed, non-FSDP) run by `model.load_state_dict(file, strict=False)` on the
checkpoint's `model.safetensors`. For a latent model that is wrong twice over:

- the checkpoint stores the base (once world-model SFT changed it) in the key layout transformers *saves* in (for
  Qwen2.5-VL the release layout `base.model.layers.*`, `base.visual.*`), which a plain `load_state_dict` does not map
  back: every base tensor would be reported missing and the run would continue on the original base;
- a checkpoint without base weights (stages 1-4, RL) is complete, but `Trainer` prints a missing-keys notice for the
  whole base, which hides the real case above.

[`LatentCheckpointMixin`] routes both loads (resume, and `load_best_model_at_end`) through
[`LatentActionModel.load_saved_weights`], which maps keys with transformers' own conversion mapping, restores a LoRA
adapter of the base and raises on any real mismatch. Under DeepSpeed the engine's own checkpoint is used (keys are
the module's), so nothing changes there.
"""

from __future__ import annotations

import logging

from ..modeling.model import LatentActionModel

logger = logging.getLogger(__name__)

__all__ = ["LatentCheckpointMixin"]


class LatentCheckpointMixin:
    """Mixed into a `transformers.Trainer` subclass whose `self.model` may be a [`LatentActionModel`]."""

    def _loads_latent_weights(self, model) -> bool:
        return isinstance(model, LatentActionModel) and not self.is_fsdp_enabled

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.model if model is None else model
        if not self._loads_latent_weights(target):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        logger.info("Loading the latent model's weights from %s.", resume_from_checkpoint)
        target.load_saved_weights(resume_from_checkpoint)

    def _load_best_model(self):
        if self.is_deepspeed_enabled or not self._loads_latent_weights(self.model):
            return super()._load_best_model()
        logger.info("Loading the best latent model from %s.", self.state.best_model_checkpoint)
        self.model.load_saved_weights(self.state.best_model_checkpoint)
