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

[`ResumeCheckpointMixin`] (all three trainers; `LatentCheckpointMixin` includes it) decides *which* folder a run
resumes from, before `Trainer.train` sees it:

- `resume_from_checkpoint=True` takes the newest **complete** `checkpoint-<step>` folder of `args.output_dir`, where
  transformers' `get_last_checkpoint` takes the highest step, complete or not. A run killed while saving leaves a
  folder without `trainer_state.json` (transformers writes it last) or with weights cut short; each such folder is
  skipped with a warning that names it and says why. No complete checkpoint at all is an error saying so.
- an explicit folder is checked the same way, and a broken one fails naming the file (weights, `optimizer.pt`,
  `scheduler.pt`, `rng_state*.pth`, the GRPO reference policy...) instead of a bare torch or safetensors error.

Complete means: `trainer_state.json` is there and is JSON; a weights file is there (`model.safetensors` or its shards,
an adapter, or an engine checkpoint); every safetensors file opens (header and size agree) and every torch-saved file
(`*.pt`, `*.pth`, `*.bin`) is a whole zip archive (a cut-short one has no central directory); and the files the
trainer itself needs are there (`_required_checkpoint_files`: the latent model's base adapter, the TR-DPO reference).
The checks read headers and directories only, never the tensors.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from pathlib import Path

from ..modeling.backbone import is_peft_model
from ..modeling.model import LatentActionModel

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "LatentCheckpointMixin",
    "ResumeCheckpointMixin",
    "checkpoint_problem",
    "resolve_resume_checkpoint",
]

# What to do about a broken checkpoint, said by every error and warning below.
_ADVICE = (
    "Resume from an earlier checkpoint (resume_from_checkpoint=True takes the newest complete one), or start the run "
    "again."
)


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from; the message names the file and says what to do."""


class _Problem:
    """Why one checkpoint folder cannot be resumed from: the file, the reason, and whether the file is missing."""

    def __init__(self, file: Path, reason: str, missing: bool = False):
        self.file, self.reason, self.missing = file, reason, missing

    def __str__(self) -> str:
        return f"{self.file} {self.reason}"

    def error(self, folder: Path) -> Exception:
        cls = FileNotFoundError if self.missing else CheckpointError
        return cls(f"Cannot resume from {folder}: {self}. {_ADVICE}")


def _names():
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.utils import (
        ADAPTER_SAFE_WEIGHTS_NAME,
        ADAPTER_WEIGHTS_NAME,
        SAFE_WEIGHTS_INDEX_NAME,
        SAFE_WEIGHTS_NAME,
        WEIGHTS_INDEX_NAME,
        WEIGHTS_NAME,
    )

    weights = (
        SAFE_WEIGHTS_NAME,
        SAFE_WEIGHTS_INDEX_NAME,
        WEIGHTS_NAME,
        WEIGHTS_INDEX_NAME,
        ADAPTER_SAFE_WEIGHTS_NAME,
        ADAPTER_WEIGHTS_NAME,
    )
    return TRAINER_STATE_NAME, SAFE_WEIGHTS_INDEX_NAME, weights


def _unreadable(file: Path) -> str | None:
    """Why a safetensors or torch-saved file cannot be read (header, size, zip directory), or `None`."""
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), "pt") as f:
                f.keys()
        except (SafetensorError, OSError) as err:
            return f"cannot be read ({err}): it is cut short or corrupt (a run killed while saving?)"
    elif file.suffix in (".pt", ".pth", ".bin"):
        # `torch.save` writes a zip archive whose directory is at the end: a file cut short has none.
        try:
            with zipfile.ZipFile(file):
                pass
        except (zipfile.BadZipFile, OSError) as err:
            return f"cannot be read ({err}): it is cut short or corrupt (a run killed while saving?)"
    return None


def checkpoint_problem(folder, required: dict[str, str] | None = None) -> _Problem | None:
    """Why `folder` is not a complete checkpoint to resume from (see the module docstring), or `None`.

    `required` maps files (relative to `folder`) the trainer needs to what they are, e.g.
    `{"reference_policy.safetensors": "TR-DPO reference policy (sync_ref_model=True)"}`."""
    folder = Path(folder)
    state_name, index_name, weight_names = _names()
    if not folder.is_dir():
        return _Problem(folder, "does not exist (or is not a folder)", missing=True)
    state = folder / state_name
    if not state.is_file():
        return _Problem(
            state,
            "is missing: the save did not finish (transformers writes it last, after the weights), or the folder is a "
            "saved model (`save_model`), not a checkpoint-<step> folder",
            missing=True,
        )
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return _Problem(state, f"is not valid JSON ({err}): it is cut short or corrupt")
    engine = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(("global_step", "pytorch_model_fsdp"))]
    if not any((folder / name).is_file() for name in weight_names) and not engine:
        return _Problem(
            folder, f"holds no model weights ({', '.join(weight_names[:2])} or an adapter): the save did not finish"
        )
    index = folder / index_name
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            return _Problem(index, f"is not a valid shard index ({type(err).__name__}: {err})")
        for shard in shards:
            if not (folder / shard).is_file():
                return _Problem(folder / shard, f"is missing (a shard named in {index_name})", missing=True)
    for name, what in (required or {}).items():
        if not (folder / name).is_file():
            return _Problem(
                folder / name,
                f"is missing: the checkpoint holds no {what}, so the run cannot continue exactly",
                missing=True,
            )
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        reason = _unreadable(file)
        if reason is not None:
            return _Problem(file, reason)
    return None


def _checkpoint_folders(output_dir) -> list[Path]:
    """The `checkpoint-<step>` folders of `output_dir`, newest (highest step) first, as transformers names them."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    pattern = re.compile(rf"^{re.escape(PREFIX_CHECKPOINT_DIR)}-(\d+)$")
    folders = []
    if os.path.isdir(output_dir):
        for entry in Path(output_dir).iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_dir():
                folders.append((int(match.group(1)), entry))
    return [path for _, path in sorted(folders, reverse=True)]


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir, required: dict[str, str] | None = None):
    """The checkpoint folder a run resumes from: for `True`, the newest complete one of `output_dir` (each broken one
    skipped with a warning); for a folder, that folder, checked. Raises, naming the file, when there is none / it is
    broken. `None` and `False` pass through."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return resume_from_checkpoint
    if resume_from_checkpoint is True:
        folders = _checkpoint_folders(output_dir)
        if not folders:
            raise FileNotFoundError(
                f"resume_from_checkpoint=True, but {output_dir} holds no checkpoint-<step> folder to resume from. "
                "Start the run without resume_from_checkpoint, or point it at a checkpoint folder."
            )
        skipped = []
        for folder in folders:
            problem = checkpoint_problem(folder, required)
            if problem is None:
                return str(folder)
            logger.warning(
                "Not resuming from %s: it is not a complete checkpoint (%s); looking at the earlier ones.",
                folder,
                problem,
            )
            skipped.append(f"{folder.name} ({problem})")
        raise FileNotFoundError(
            f"resume_from_checkpoint=True, but no checkpoint in {output_dir} is complete: "
            + "; ".join(skipped)
            + ". Start the run again without resume_from_checkpoint (delete or move the broken folders first)."
        )
    problem = checkpoint_problem(resume_from_checkpoint, required)
    if problem is not None:
        raise problem.error(Path(resume_from_checkpoint))
    return resume_from_checkpoint


class ResumeCheckpointMixin:
    """Mixed into a `transformers.Trainer` subclass: `train(resume_from_checkpoint=True)` resumes from the newest
    complete checkpoint, and a broken explicit one fails naming the file (see the module docstring)."""

    def _required_checkpoint_files(self) -> dict[str, str]:
        """Files (relative to a checkpoint folder) this trainer needs to resume exactly, and what they are."""
        return {}

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        resume_from_checkpoint = resolve_resume_checkpoint(
            resume_from_checkpoint, self.args.output_dir, self._required_checkpoint_files()
        )
        return super().train(resume_from_checkpoint, *args, **kwargs)


class LatentCheckpointMixin(ResumeCheckpointMixin):
    """Mixed into a `transformers.Trainer` subclass whose `self.model` may be a [`LatentActionModel`]."""

    def _required_checkpoint_files(self) -> dict[str, str]:
        required = dict(super()._required_checkpoint_files())
        model = self.accelerator.unwrap_model(self.model)
        if isinstance(model, LatentActionModel) and is_peft_model(model.base):
            required["base_adapter/adapter_model.safetensors"] = "LoRA adapter of the base (base_adapter/)"
        return required

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
