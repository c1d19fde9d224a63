"""The model a command trains or evaluates: TRL's `ModelConfig` options (LoRA, 4/8-bit, dtype) turned into the
trainers' arguments, checks that a model path exists and is the right kind before anything loads, adapter folders,
and the processor."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .parsing import peek
from .running import CommandError

ACTION_SPACES = ("latent", "token")


def model_loading(model_args, training_args, latent: bool, argv: list[str]):
    """TRL's `ModelConfig` flags (`--use_peft`, `--lora_r`, `--lora_target_modules`, `--dtype`, `--load_in_4bit`, ...)
    as the trainers take them: returns `(peft_config, quantization_config)` (both trainer arguments) and puts the
    loading keywords into `training_args.model_init_kwargs` (the user's own `model_init_kwargs` win), as TRL's scripts
    do.

    A latent model is loaded by trl-latent (its base with `dtype` and the quantisation; the new modules in full
    precision), so only those two and the PEFT flags apply to it: `dtype` only when given (a latent model otherwise
    keeps the dtype its base was saved in), and `attn_implementation` / `model_revision` are refused. For a plain
    model every flag goes to TRL's loader, exactly as in TRL's `grpo.py` / `sft.py`."""
    from trl import get_peft_config, get_quantization_config

    peft_config = get_peft_config(model_args)
    quantization_config = get_quantization_config(model_args)
    if latent:
        unsupported = [
            flag
            for flag, value, default in (
                ("attn_implementation", model_args.attn_implementation, None),
                ("model_revision", model_args.model_revision, "main"),
            )
            if value != default
        ]
        if unsupported:
            raise CommandError(
                f"{', '.join(unsupported)} cannot be set for a latent action model (its base is loaded from the "
                "folder the latent model names); remove the flag, or set it when the latent model is built."
            )
        if peek(argv, "dtype", "") and model_args.dtype is not None:
            kwargs = {"dtype": model_args.dtype}
            training_args.model_init_kwargs = {**kwargs, **(training_args.model_init_kwargs or {})}
        return peft_config, quantization_config
    kwargs = dict(
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    training_args.model_init_kwargs = {**kwargs, **(training_args.model_init_kwargs or {})}
    return peft_config, quantization_config


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def read_model_config(path: str) -> dict | None:
    """The `config.json` of a local model folder, or `None` when `path` is not one."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text())


def adapter_start(name: str) -> str | None:
    """For a folder holding only a PEFT adapter (what a LoRA run saves), the model the adapter loads onto
    (`base_model_name_or_path` of its `adapter_config.json`, `""` when it names none); `None` for anything else."""
    folder = Path(name)
    if not (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file():
        return None
    return json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""


def check_model(name: str, field_name: str) -> None:
    """A base model given as a folder (holding `config.json`, or a PEFT adapter naming such a model) or a hub id that
    can be resolved now."""
    path = Path(name).expanduser()
    start = adapter_start(name)
    if start is not None:
        if not start:
            raise CommandError(
                f"{field_name} {name} holds a PEFT adapter whose adapter_config.json names no model to load it onto "
                "(base_model_name_or_path is empty): set base_model_name_or_path there to the model the run started "
                "from."
            )
        check_model(start, f"{field_name} {name}: its adapter's base_model_name_or_path")
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CommandError(
                f"{field_name} {name} is a folder without config.json; point it at a model folder written by "
                "save_pretrained, or at a hub id."
            )
        return
    if path.exists():
        raise CommandError(f"{field_name} {name} is a file; point it at a model folder or a hub id.")
    from huggingface_hub import try_to_load_from_cache

    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if looks_like_hub_id and isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if looks_like_hub_id and not _offline():
        return  # downloaded when loaded
    raise CommandError(
        f"{field_name} {name} is neither a local model folder nor a model in the local hub cache. Fix the path"
        + (
            f", or download the model first (`hf download {name}`): trl-latent runs with HF_HUB_OFFLINE=1 unless "
            "HF_HUB_OFFLINE=0 is set."
            if looks_like_hub_id
            else " (it must exist before this command runs; a later stage reads the output_dir of the one before)."
        )
    )


# What to do instead, per command, when a path is not a saved latent action model.
LATENT_MODEL_HINTS = {
    "sft": "To start from a base VLM (stage 1), set base_model instead.",
    "grpo": "Latent RL starts from the model stage 5 (world_sft) saved: build one with `trl-latent sft` (stages 1-5), "
    "or set action_space: token for RL over a plain VLM's tokens.",
    "inspect": "Point it at the output_dir of any latent stage.",
}


def check_latent_model(name: str, field_name: str = "model_name_or_path", command: str = "sft") -> None:
    """A saved latent action model: a folder whose config.json has `model_type: latent_action`. The error says what
    `command` needs instead. A PEFT adapter folder stands for the model it was trained from (its adapter config names
    it), as `LatentActionModel.from_pretrained` loads it."""
    start = adapter_start(name)
    config = read_model_config(start if start else name)
    hint = LATENT_MODEL_HINTS[command]
    if config is None:
        raise CommandError(
            f"{field_name} {name} is not a saved latent action model (no folder with config.json). It should be the "
            f"output_dir of the previous stage: run that stage first, or fix the path. {hint}"
        )
    if config.get("model_type") != "latent_action":
        raise CommandError(
            f"{field_name} {name} holds a {config.get('model_type')!r} model, not a latent action model. {hint}"
        )
    check_weight_files(name, field_name)


def check_weight_files(name: str, field_name: str = "model_name_or_path") -> None:
    """Every safetensors file of a local model folder has a readable header that covers the file: a copy cut short
    (an interrupted download or save) is refused here, with its name, instead of failing inside the loader."""
    from safetensors import SafetensorError, safe_open

    folder = Path(name)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CommandError(
                f"{field_name} {name}: {path.name} cannot be read ({err}). The file looks truncated or corrupted (an "
                "interrupted save or copy): save or copy the model again."
            ) from err


def is_latent_model(name: str) -> bool:
    """A saved latent action model, or a PEFT adapter folder whose model is one."""
    start = adapter_start(name)
    if start:
        return is_latent_model(start)
    config = read_model_config(name)
    return config is not None and config.get("model_type") == "latent_action"


def is_text_only_model(name: str) -> bool:
    """Whether `name` (a base model, or a saved latent model: its base) is a text-only causal LM (Qwen2, Llama)."""
    from ..modeling.backbone import CAUSAL_LM_MODEL_TYPES

    start = adapter_start(name)
    if start:
        return is_text_only_model(start)
    config = read_model_config(name)
    if config is None:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(name).to_dict()
        except (OSError, ValueError):
            return False
    if config.get("model_type") == "latent_action":
        config = config.get("base_config") or {}
    return config.get("model_type") in CAUSAL_LM_MODEL_TYPES


def load_processor(source: str, padding_side: str | None = None):
    """The model's processor (e.g. `Qwen2_5_VLProcessor`), loaded from `source` (a folder or hub id); for a text-only
    base (Qwen2, Llama), its tokenizer."""
    from transformers import AutoProcessor, PreTrainedTokenizerBase, ProcessorMixin

    processor = AutoProcessor.from_pretrained(source)
    if isinstance(processor, PreTrainedTokenizerBase) and is_text_only_model(source):
        if padding_side is not None:
            processor.padding_side = padding_side
        if processor.pad_token is None:  # as TRL's trainers do for a tokenizer without one
            processor.pad_token = processor.eos_token
        return processor
    if not isinstance(processor, ProcessorMixin):
        raise CommandError(
            f"{source} gave a {type(processor).__name__}, not a vision-language processor; AutoProcessor falls back to "
            "a bare tokenizer when it cannot build the processor (for Qwen2.5-VL: `pip install torchvision`)."
        )
    if padding_side is not None:
        processor.tokenizer.padding_side = padding_side  # batched generation pads on the left
    return processor


def processor_source(model: str) -> str:
    """Where a model's processor lives: the model folder (every command saves it there), else a latent model's base."""
    folder = Path(model)
    if any((folder / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")):
        return model
    if (folder / "tokenizer_config.json").is_file() and is_text_only_model(model):
        return model  # a text-only base's tokenizer, saved beside the model
    start = adapter_start(model)
    if start:  # an adapter folder without a saved processor: the processor of the model it loads onto
        return processor_source(start)
    config = read_model_config(model) or {}
    return config.get("base_model_name_or_path") or model
