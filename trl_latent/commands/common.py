"""What the stage commands share: TRL-style argument parsing with clear errors, input checks that run before any
model is loaded, the task datasets, the reward, and the processor.

Every check here raises [`CommandError`], whose message says what is wrong and what to do; the command prints it
(`trl-latent sft: error: ...`) and exits with status 2 before a model is loaded or a step runs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import mmrole, pcogalign
from ..data.images import ON_MISSING_IMAGE
from ..data.mmrole_prompts import TEMPLATES

TASKS = ("mmrole", "pcogalign")
# The splits each task's loader builds. Any dataset written in the MMRole release layout (the embedded shapes task of
# `trl-latent write-synthetic`, say) is `task: mmrole`.
TASK_SPLITS = {"mmrole": mmrole.SPLITS, "pcogalign": pcogalign.SPLITS}
TEST_SPLITS = {"mmrole": mmrole.TEST_SPLITS, "pcogalign": pcogalign.TEST_SPLITS}
ACTION_SPACES = ("latent", "token")


class CommandError(Exception):
    """Bad input to a command: the message says what is wrong and what to do."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM: the message says where its checkpoint is and how to resume. Exit status
    130, as a shell gives a process stopped by Ctrl-C."""


class RunError(Exception):
    """A run that started and then stopped on a problem the user can fix (e.g. a judge that failed every judgement of
    several batches): the message says what happened, where the checkpoint is and how to resume. Exit status 1."""


# ------------------------------------------------------------------------------------------------ registration
def register(subparsers, name: str, help: str, main: Callable[[list[str]], int]) -> None:
    """Add `name` to the `trl-latent` subcommands. The command parses its own arguments with `TrlParser`, so this
    parser takes every token after the name as is (no option of its own, `-h` included)."""
    parser = subparsers.add_parser(name, help=help, add_help=False, prefix_chars="+")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(func=lambda args: main(args.argv))


# bitsandbytes' start-up line that says nothing about a trl-latent command (see `quiet_import_notices`).
BITSANDBYTES_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
BITSANDBYTES_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropBitsandbytesKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return BITSANDBYTES_KERNEL_NOTICE not in record.getMessage()


def quiet_import_notices() -> None:
    """Drop bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'"
    line, which every training command would print at start-up. Called by the commands (the CLI process), never on
    import of the library: a library must not change its users' logging. Idempotent.

    Where it comes from: transformers' training stack imports peft whenever peft is installed (a trl-latent
    dependency; `transformers.trainer_utils` does `from peft import PeftModel`), `import peft` imports bitsandbytes
    whenever that is installed (`peft/helpers.py`), and bitsandbytes' CPU backend, on a CPU with AVX512-BF16, looks for
    the optional `kernels` package (a faster 4-bit matmul *on the CPU*) at import and logs this line when it is
    missing. No supported switch avoids that chain: both imports are eager, and importing only peft's submodules still
    runs `peft/__init__`. trl-latent itself imports neither peft nor bitsandbytes until a run needs them (help and the
    parsers never import them), and no command loads a quantised base, the only case the kernel concerns; so this one
    message of this one logger is dropped, and every other message still shows.
    """
    logger = logging.getLogger(BITSANDBYTES_KERNEL_LOGGER)  # created now if bitsandbytes is not imported yet
    if not any(isinstance(f, _DropBitsandbytesKernelNotice) for f in logger.filters):
        logger.addFilter(_DropBitsandbytesKernelNotice())


def run(prog: str, body: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Run a command body; a [`CommandError`] is printed as `prog: error: message` and gives exit status 2, a
    [`RunError`] the same way with exit status 1."""
    quiet_import_notices()  # before the body's heavy imports
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except CommandError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        print(f"{prog}: stopped at once; the work since the last checkpoint is lost.", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------------------ parsing
CONFIG_HELP = (
    "Options come from a YAML file, --config FILE.yaml (its keys are the option names below, without the dashes), "
    "and from the command line, which wins over the file. Launch under accelerate with "
    "`accelerate launch --config_file ACCELERATE.yaml -m trl_latent.cli {command} --config FILE.yaml`."
)


def trl_parser(dataclass_types: tuple, prog: str, summary: str):
    """A `TrlParser` whose help says how the YAML config and the command line combine."""
    from trl import TrlParser

    command = prog.split()[-1]
    return TrlParser(dataclass_types, prog=prog, description=f"{summary} {CONFIG_HELP.format(command=command)}")


def _config_path(argv: list[str]) -> Path | None:
    if "--config" not in argv:
        return None
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise CommandError("--config needs the path of a YAML file, e.g. --config examples/recipes/.../stage.yaml.")
    return Path(argv[index + 1])


def read_config(argv: list[str]) -> tuple[Path | None, dict]:
    """The `--config` YAML file named in `argv` (path and mapping), checked to exist and hold a mapping."""
    import yaml

    path = _config_path(argv)
    if path is None:
        return None, {}
    if not path.is_file():
        raise CommandError(
            f"config file {path} not found (working directory {Path.cwd()}). Pass --config the path of a YAML "
            "file, e.g. one of the recipes under examples/recipes/."
        )
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CommandError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise CommandError(f"{path} must hold a YAML mapping of option: value lines, got {type(config).__name__}.")
    return path, config


def peek(argv: list[str], key: str, default: str) -> str:
    """The value of `key` from the command line (`--key value`) or else the YAML config, before full parsing (it
    decides which configuration class the parser is built from)."""
    flag = f"--{key}"
    for index, token in enumerate(argv):
        if token == flag and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    _, config = read_config(argv)
    return str(config.get(key, default))


def _check_keys(parser, config: dict, path: Path, prog: str) -> None:
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    unknown = [key for key in config if key not in actions and key != "env"]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise CommandError(
            f"{path}: unknown key(s) {', '.join(hints)}. Remove or rename them; `{prog} --help` lists every valid key."
        )
    for key, value in config.items():
        choices = getattr(actions.get(key), "choices", None)
        if choices and value not in choices:
            raise CommandError(f"{path}: {key}: {value!r} is not one of {list(choices)}.")


def parse(parser, argv: list[str], prog: str) -> tuple:
    """`TrlParser.parse_args_and_config` with clear errors for a missing or malformed config file, unknown keys or
    values outside their choices, and invalid field combinations (a configuration class's own checks)."""
    path, config = read_config(argv)
    if path is not None:
        _check_keys(parser, config, path, prog)
    try:
        return parser.parse_args_and_config(argv)
    except (ValueError, TypeError, NotImplementedError) as err:
        where = f" ({path} with the command-line overrides)" if path is not None else ""
        raise CommandError(f"invalid configuration{where}: {err}") from err


# ------------------------------------------------------------------------------------------------ models
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
    `command` needs instead."""
    config = read_model_config(name)
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


# ------------------------------------------------------------------------------------------------ data
@dataclass
class TaskArguments:
    """Where the task's dialogues are: MMRole, PCogAlignBench or the embedded synthetic shapes task."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "The task: 'mmrole' (the MMRole release layout, or any dataset written in it, such as the embedded "
            "shapes task of `trl-latent write-synthetic ROOT`) or 'pcogalign' (PCogAlignBench files).",
            "choices": list(TASKS),
        },
    )
    task_root: str | None = field(
        default=None,
        metadata={
            "help": "The task's folder: MMRole's (dialogues/, profiles/, images/), PCogAlignBench's "
            "(HCMAS-golden-train.json, HCMAS-golden-test.json, HCSHR-golden-test.json) or a written synthetic task."
        },
    )
    images_dir: str | None = field(
        default=None,
        metadata={"help": "Folder the records' image paths are relative to (default: task_root/images for MMRole, "
                  "task_root for PCogAlignBench)."},
    )  # fmt: skip
    image_size: list[int] = field(
        default_factory=lambda: list(mmrole.DEFAULT_IMAGE_SIZE),
        metadata={"help": "Width and height every task image is resized to (the authors' 280 420)."},
    )
    on_missing_image: str = field(
        default="error",
        metadata={"help": "A record whose image is missing: 'error' (name it) or 'skip' (leave it out, counted).",
                  "choices": list(ON_MISSING_IMAGE)},
    )  # fmt: skip
    template: str = field(
        default="paper",
        metadata={"help": "MMRole prompt: 'paper' (the paper's) or 'mmrole_eval' (MMRole's evaluation prompt).",
                  "choices": list(TEMPLATES)},
    )  # fmt: skip
    max_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many samples of each split (quick runs)."}
    )

    def __post_init__(self):
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(
                f"max_samples must be at least 1, or left unset for every sample (got {self.max_samples})."
            )


def check_task(args: TaskArguments, what: str) -> None:
    """The task is named and its folder exists (the loaders then check the files in it)."""
    if args.task is None or args.task_root is None:
        raise CommandError(
            f"{what} needs task dialogues: set task ({', '.join(TASKS)}) and task_root (the dataset folder)."
        )
    if not Path(args.task_root).is_dir():
        raise CommandError(
            f"task_root {args.task_root} does not exist; point it at the {args.task} dataset folder (the embedded "
            "shapes task is written by `trl-latent write-synthetic ROOT`, in the MMRole layout)."
        )
    if len(args.image_size) != 2:
        raise CommandError(f"image_size takes two numbers, width and height (got {args.image_size}).")


def load_task(args: TaskArguments, splits: Sequence[str]):
    """The task's splits as TRL prompt datasets (`prompt`, `image`, `reference`, plus the reward's columns)."""
    from ..data.mmrole import load_mmrole
    from ..data.pcogalign import load_pcogalign

    unknown = [split for split in splits if split not in TASK_SPLITS[args.task]]
    if unknown:
        raise CommandError(f"{args.task} has no split(s) {unknown}; choose from {list(TASK_SPLITS[args.task])}.")
    options = dict(
        splits=tuple(splits),
        images_dir=args.images_dir,
        image_size=tuple(args.image_size),
        on_missing_image=args.on_missing_image,
    )
    try:
        if args.task == "pcogalign":
            datasets = load_pcogalign(args.task_root, **options)
        else:
            datasets = load_mmrole(args.task_root, template=args.template, **options)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(f"cannot load the {args.task} data under {args.task_root}: {err}") from err
    missing = [split for split in splits if split not in datasets]
    if missing:
        raise CommandError(
            f"the {args.task} data under {args.task_root} gave no samples for split(s) {missing} (see the warnings "
            "above); add the files that split is built from, or leave it out."
        )
    if args.max_samples is not None:
        for name in splits:
            datasets[name] = datasets[name].select(range(min(args.max_samples, len(datasets[name]))))
    return datasets


@dataclass
class DatasetArguments:
    """A prompt dataset of your own instead of a task, in TRL's prompt format (the names of TRL's `ScriptArguments`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A prompt dataset instead of task/task_root: a .json, .jsonl, .parquet or .csv file, a folder saved "
            "with `datasets` (save_to_disk), a folder of data files, or a Hub dataset name. Rows in TRL's prompt "
            "format: 'prompt' (a string or a list of role/content messages), 'image' or 'images' for a "
            "vision-language model, and any columns the rewards read."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "The dataset configuration name (`datasets.load_dataset`'s `name`)."}
    )
    dataset_train_split: str | None = field(
        default=None,
        metadata={"help": "The split RL trains on (default: 'rl' for a task, 'train' for a dataset_name)."},
    )


def load_prompts(args, takes_images: bool, what: str):
    """The prompts RL trains on: the task's split, or the split of `dataset_name`, every row checked up front."""
    from ..data.prompt_datasets import check_prompt_dataset, load_prompt_dataset

    if args.dataset_name is not None and args.task is not None:
        raise CommandError(
            f"{what}: set either task (with task_root) or dataset_name, not both (task {args.task!r}, dataset_name "
            f"{args.dataset_name!r})."
        )
    if args.dataset_name is None:
        check_task(args, what + " (or set dataset_name)")
        split = args.dataset_train_split or "rl"
        dataset = load_task(args, [split])[split]
    else:
        split = args.dataset_train_split or "train"
        try:
            dataset = load_prompt_dataset(args.dataset_name, args.dataset_config, split)
        except (FileNotFoundError, ValueError) as err:
            raise CommandError(str(err)) from err
        except Exception as err:  # the Hub unreachable, a folder `datasets` cannot read
            raise CommandError(
                f"cannot load dataset_name {args.dataset_name!r}: {type(err).__name__}: {err}. Give a local file or "
                "folder (offline), or check the name and the network."
            ) from err
        if args.max_samples is not None:
            dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    if len(dataset) == 0:
        raise CommandError(f"{what}: split {split!r} holds no prompts; check the dataset's path, split and filters.")
    where = f"dataset_name {args.dataset_name}" if args.dataset_name else f"the {args.task} {split} split"
    try:
        check_prompt_dataset(dataset, takes_images=takes_images, where=where)
    except ValueError as err:
        raise CommandError(str(err)) from err
    return dataset


def check_files(paths: Sequence[str] | None, field_name: str) -> list[str]:
    """Pretraining corpus files: each must exist and be `.json` (a list of records) or `.jsonl`."""
    paths = list(paths or [])
    for path in paths:
        if not Path(path).is_file():
            raise CommandError(
                f"{field_name}: {path} does not exist. Give the pretraining corpus as JSON (a list of records) or "
                "JSON-lines files of {id, images, messages} records (docs/recipes.md, 'Data')."
            )
        if Path(path).suffix not in (".json", ".jsonl"):
            raise CommandError(f"{field_name}: {path} must be a .json or .jsonl file of pretraining records.")
    return paths


# ------------------------------------------------------------------------------------------------ rewards
@dataclass
class JudgeArguments:
    """Where the LLM judge is: an OpenAI-compatible endpoint (the paper's reward and evaluation)."""

    judge_base_url: str | None = field(
        default=None, metadata={"help": "The judge's endpoint, e.g. http://localhost:8000/v1 (a vLLM server)."}
    )
    judge_model: str | None = field(default=None, metadata={"help": "The judge model name the endpoint expects."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the judge's API key."}
    )
    judge_timeout: float = field(default=120.0, metadata={"help": "Seconds to wait for one judgement."})
    judge_max_concurrency: int = field(default=8, metadata={"help": "Most judge requests in flight at once."})


@dataclass
class RewardArguments(JudgeArguments):
    """How `eval` scores answers: the LLM judge, or a judge of your own."""

    reward: str = field(
        default="judge",
        metadata={
            "help": "'judge': an LLM judge compares each answer with the reference on the benchmark's dimensions "
            "(OpenAI-compatible endpoint). Or the dotted import path of a judge of your own (an object or class with "
            "`judge(prompts, completions, **columns)`), e.g. my_judges.KeywordJudge for a my_judges.py in the current "
            "folder."
        },
    )


# TRL's reward functions that take no settings, by the names TRL's `grpo` script gives them
TRL_REWARD_FUNCS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward")


@dataclass
class RewardFuncsArguments(JudgeArguments):
    """How `grpo` scores completions: a list of rewards, summed with GRPOConfig's `reward_weights`."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["judge"],
        metadata={
            "help": "The rewards, summed (weighted by reward_weights when set): 'judge' (the task's LLM judge on an "
            f"OpenAI-compatible endpoint), TRL's {', '.join(TRL_REWARD_FUNCS)}, or the dotted import path of a "
            "function with TRL's reward signature, e.g. my_rewards.length_reward for a my_rewards.py in the current "
            "folder."
        },
    )


def build_judge(args: JudgeArguments, task: str):
    """The task's [`JudgeReward`] on the configured endpoint. An unreachable endpoint, and a judge that refuses or
    cannot answer a test judgement (bad key, unknown model, unreadable answer), fail here, at start-up."""
    from ..rewards.judge import JudgeConnectionError, JudgeReward, OpenAIJudgeBackend

    if not args.judge_base_url or not args.judge_model:
        raise CommandError(
            "the judge needs judge_base_url (an OpenAI-compatible endpoint, e.g. a vLLM server at "
            "http://localhost:8000/v1) and judge_model; or score offline with your own, by dotted import path: "
            "reward_funcs for grpo (a function with TRL's reward signature, e.g. my_rewards.length_reward), reward for "
            "eval (a judge, e.g. my_judges.KeywordJudge)."
        )
    try:
        backend = OpenAIJudgeBackend(
            args.judge_base_url, args.judge_model, api_key_env=args.judge_api_key_env, timeout=args.judge_timeout
        )
    except ImportError as err:
        raise CommandError(str(err)) from err
    try:
        return JudgeReward(
            "pcogalign" if task == "pcogalign" else "mmrole", backend, max_concurrency=args.judge_max_concurrency
        )
    except JudgeConnectionError as err:
        raise CommandError(str(err)) from err


def import_reward(path: str, field_name: str = "reward"):
    """The object a dotted import path names (`package.module.name`), as TRL's scripts resolve `reward_funcs`: the
    working directory is searched first, so `my_rewards.length_reward` finds `./my_rewards.py`. A path that does not
    import is a clear error."""
    import importlib
    import sys

    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise CommandError(
            f"{field_name}: {path!r} is neither 'judge' nor a dotted import path (package.module.function), e.g. "
            "my_rewards.length_reward."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CommandError(
            f"{field_name}: cannot import module {module_name!r} of {path!r} (searched the working directory "
            f"{Path.cwd()} and the installed packages): {err}"
        ) from err
    if not hasattr(module, attribute):
        raise CommandError(f"{field_name}: module {module_name!r} has no {attribute!r} (from {path!r}).")
    return getattr(module, attribute)


def build_reward_funcs(args: RewardFuncsArguments, task: str | None, reward_weights: list[float] | None) -> list:
    """`reward_funcs` as the reward objects GRPO sums: the task's judge (reached and test-asked now, before any model
    loads), TRL's named rewards, and imported functions; their count checked against `reward_weights`."""
    names = list(args.reward_funcs or [])
    if not names:
        raise CommandError(
            "reward_funcs is empty: give at least one reward ('judge', one of TRL's "
            f"{', '.join(TRL_REWARD_FUNCS)}, or a dotted import path such as my_rewards.length_reward)."
        )
    if reward_weights is not None and len(reward_weights) != len(names):
        raise CommandError(
            f"reward_weights has {len(reward_weights)} weight(s) for {len(names)} reward_funcs {names}: give one "
            "weight per reward, in the same order, or leave reward_weights unset (every weight 1)."
        )
    rewards = []
    for name in names:
        if name == "judge":
            if task is None:
                raise CommandError(
                    "reward_funcs 'judge' scores with a task's rubric (mmrole or pcogalign), so it needs task and "
                    "task_root; for a dataset_name, give reward functions of your own (dotted import paths)."
                )
            rewards.append(build_judge(args, task))
        elif name in TRL_REWARD_FUNCS:
            import trl.rewards

            rewards.append(getattr(trl.rewards, name))
        else:
            rewards.append(import_reward(name, "reward_funcs"))
    return rewards


def say(message: str) -> None:
    """Print once per job: on the main process only when launched with several processes."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(message, flush=True)


def summary_line(items: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in items.items())


def resume_argument(value):
    """`resume_from_checkpoint` as the trainers take it: `true` (from the command line or YAML) means the newest
    complete checkpoint of output_dir, `false` none; anything else is a checkpoint folder."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false") and not Path(value).exists():
        return value.strip().lower() == "true"
    return value


def train_and_save(trainer, processor, output_dir: str, resume_from_checkpoint, metric: str) -> dict[str, Any]:
    """Train (resuming from a checkpoint folder, or with `true` from the newest complete one of output_dir), save the
    model with its processor beside it (the next stage finds it there), and return the run's step count with the
    first and last logged `metric`. Ctrl-C or SIGTERM finishes the step, saves a checkpoint and raises
    [`Interrupted`] (`trl_latent.training.interrupt`); the finished model is then not saved."""
    from ..training.checkpointing import CheckpointError, resolve_resume_checkpoint

    # Resolved here too (the latent trainers and TokenGRPOTrainer do it in `train`) so that a stock TRL trainer (the
    # token baseline's SFT) also skips a broken last checkpoint, and a broken one is this command's error, not a trace.
    required = getattr(trainer, "_required_checkpoint_files", dict)()
    try:
        resume = resolve_resume_checkpoint(resume_argument(resume_from_checkpoint) or None, output_dir, required)
    except (FileNotFoundError, CheckpointError) as err:
        raise CommandError(str(err)) from err
    from ..training.interrupt import SaveOnInterruptCallback

    interrupt = SaveOnInterruptCallback()
    trainer.add_callback(interrupt)
    trainer.train(resume_from_checkpoint=resume)
    if interrupt.interrupted:  # not saved as the finished model: a recipe that skips finished stages must rerun it
        raise Interrupted(
            f"interrupted: saved checkpoint-{interrupt.step} in {output_dir}. Resume with the same command and "
            "--resume_from_checkpoint true."
        )
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(output_dir)
    values = [entry[metric] for entry in trainer.state.log_history if metric in entry]
    result: dict[str, Any] = {"steps": trainer.state.global_step}
    if values:
        result.update({f"{metric}_first": float(values[0]), f"{metric}_last": float(values[-1])})
    return result
