"""Reading saved latent models: weight files with clear errors, and saved keys mapped to the model's own.

transformers reverts its checkpoint conversion mapping on save (files keep the key layout of the original release,
e.g. Qwen2.5-VL's `model.layers.*` / `visual.*`) and applies it on load; [`to_model_keys`] applies the same mapping
to a state dict, so a plain `load_state_dict` (what `Trainer` resumes with) sees the model's keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .configuration import LatentActionConfig

__all__ = [
    "check_weight_files",
    "load_folder_state",
    "load_safetensors",
    "read_saved_config",
    "saved_base_path",
    "to_model_keys",
]


def to_model_keys(model: nn.Module, state: dict[str, torch.Tensor], source="the checkpoint") -> dict:
    """Rename the keys of a saved state dict to `model`'s own, whichever layout transformers wrote.

    transformers reverts its checkpoint conversion mapping on save (so files keep the layout of the original release)
    and applies it on load; `from_pretrained` does it, a plain `load_state_dict` (what `Trainer` uses to resume) does
    not. This applies the same mapping (`transformers.conversion_mapping.get_model_conversion_mapping`, scoped to
    each sub-model such as `base`) to the keys. Keys already in the model's layout pass unchanged."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    own = model.state_dict()
    out = {}
    for key, tensor in state.items():
        if key in own:
            out[key] = tensor
            continue
        renamed, converter = rename_source_key(key, renamings, converters)
        if converter is not None:
            raise NotImplementedError(
                f"{source} stores {key!r} in a layout that transformers converts with an operation, not a rename "
                f"({converter!r}); load it with `LatentActionModel.from_pretrained` instead."
            )
        out[renamed] = tensor
    return out


def load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{file} cannot be read ({err}): the file is truncated or corrupt (an interrupted save or copy?). Copy "
            "it again, or resume from an earlier checkpoint."
        ) from err


def check_weight_files(folder: Path) -> None:
    """Open (header and size) every safetensors file of a saved folder, so a truncated file fails with its name."""
    from safetensors import SafetensorError, safe_open

    for file in _weight_files(folder):
        try:
            with safe_open(str(file), "pt") as f:
                f.keys()
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{file} cannot be read ({err}): the file is truncated or corrupt (an interrupted save or copy?). "
                "Copy it again, or save the model again."
            ) from err


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError) as err:
            raise ValueError(
                f"{index} is not a valid shard index ({type(err).__name__}: {err}); it must be JSON with a "
                "`weight_map`. Copy the folder again or save the model again."
            ) from err
        files = [path / f for f in files]
    else:
        files = [path / "model.safetensors"]
    for f in files:
        if not f.is_file():
            what = "a shard named in model.safetensors.index.json" if index.exists() else "the weights file"
            raise FileNotFoundError(
                f"{f} is missing ({what}): {path} is not a complete latent model save. Copy the whole folder, or "
                "save the model again."
            )
    return files


def load_folder_state(path: Path) -> dict[str, torch.Tensor]:
    state = {}
    for f in _weight_files(path):
        state.update(load_safetensors(f))
    return state


def read_saved_config(path: Path) -> LatentActionConfig:
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json, so it is not a saved latent model (a save holds config.json and "
            "model.safetensors). Copy the whole folder, or load a folder written by `save_pretrained`."
        )
    if not path.exists() and (path.is_absolute() or str(path).startswith(".") or len(path.parts) > 2):
        raise FileNotFoundError(f"The latent model folder {path} does not exist.")
    return LatentActionConfig.from_pretrained(path)


def saved_base_path(path: Path, config: LatentActionConfig) -> str:
    base = config.base_model_name_or_path
    if not base:
        raise ValueError(f"{path} holds no base weights and its config names no base model: pass `base_model=`.")
    looks_local = os.path.isabs(base) or base.startswith((".", "~")) or len(Path(base).parts) > 2
    if looks_local and not Path(base).expanduser().exists():
        raise FileNotFoundError(
            f"The latent model in {path} was built on the base model folder {base}, which does not exist (moved or "
            "deleted?). Pass the loaded base as `LatentActionModel.from_pretrained(folder, base_model=...)`, or set "
            f"`base_model_name_or_path` in {path / 'config.json'} to where the base now is."
        )
    return base
