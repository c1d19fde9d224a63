"""The prompts and dialogues a command reads: the task datasets (MMRole, PCogAlignBench, the synthetic task written in
MMRole's layout), a prompt dataset of the user's own (`dataset_name`), and pretraining corpus files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data import mmrole, pcogalign
from ..data.images import ON_MISSING_IMAGE
from ..data.mmrole_prompts import TEMPLATES
from .running import CommandError

TASKS = ("mmrole", "pcogalign")
# The splits each task's loader builds. Any dataset written in the MMRole release layout (the embedded shapes task of
# `trl-latent write-synthetic`, say) is `task: mmrole`.
TASK_SPLITS = {"mmrole": mmrole.SPLITS, "pcogalign": pcogalign.SPLITS}
TEST_SPLITS = {"mmrole": mmrole.TEST_SPLITS, "pcogalign": pcogalign.TEST_SPLITS}


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
class DatasetSourceArguments:
    """A dataset of your own instead of a task, in TRL's formats (the names of TRL's `ScriptArguments`): prompts for
    `grpo` and `eval`, dialogues for `sft` (stage 5 or token SFT)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A dataset instead of task/task_root: a .json, .jsonl, .parquet or .csv file, a folder saved with "
            "`datasets` (save_to_disk), a folder of data files, or a Hub dataset name. grpo and eval read TRL's prompt "
            "format "
            "('prompt': a string or a list of role/content messages); sft reads TRL's SFT formats ('messages', "
            "'prompt' + 'completion', or 'text'); for a vision-language model an 'image' or 'images' column; plus "
            "any columns the rewards read."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "The dataset configuration name (`datasets.load_dataset`'s `name`)."}
    )


@dataclass
class DatasetArguments(DatasetSourceArguments):
    """A dataset of your own and the split trained on."""

    dataset_train_split: str | None = field(
        default=None,
        metadata={
            "help": "The split trained on (default: a task's 'rl' split for grpo and 'sft' split for sft; 'train' for "
            "a dataset_name)."
        },
    )


def check_data_source(args, what: str) -> None:
    """Exactly one of a task (its folder existing) and `dataset_name`."""
    if args.dataset_name is not None and args.task is not None:
        raise CommandError(
            f"{what}: set either task (with task_root) or dataset_name, not both (task {args.task!r}, dataset_name "
            f"{args.dataset_name!r})."
        )
    if args.dataset_name is None:
        check_task(args, what + " (or set dataset_name)")


def _load_dataset_name(args, split: str):
    from ..data.prompt_datasets import load_prompt_dataset

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
    return dataset


def _split_of(args, task_split: str) -> tuple[str, object]:
    """The split trained on and its rows: the task's split, or the split of `dataset_name`."""
    if args.dataset_name is None:
        split = args.dataset_train_split or task_split
        return split, load_task(args, [split])[split]
    split = args.dataset_train_split or "train"
    return split, _load_dataset_name(args, split)


def load_prompts(args, takes_images: bool, what: str):
    """The prompts RL trains on: the task's split, or the split of `dataset_name`, every row checked up front."""
    check_data_source(args, what)
    split, dataset = _split_of(args, "rl")
    return check_prompts(args, split, dataset, takes_images, what)


def load_test_prompts(args, splits: Sequence[str], takes_images: bool, what: str) -> dict:
    """The test prompts `eval` scores: the task's test splits, or the named splits of `dataset_name` (default
    `test`), every row of a `dataset_name` checked up front."""
    check_data_source(args, what)
    if args.dataset_name is None:
        return load_task(args, list(splits or TEST_SPLITS[args.task]))
    return {
        split: check_prompts(args, split, _load_dataset_name(args, split), takes_images, what)
        for split in (splits or ["test"])
    }


def check_prompts(args, split: str, dataset, takes_images: bool, what: str):
    """`dataset` (the `split` of the task or of `dataset_name`) in TRL's prompt format, or a `CommandError` naming
    the first bad row."""
    from ..data.prompt_datasets import check_prompt_dataset

    if len(dataset) == 0:
        raise CommandError(f"{what}: split {split!r} holds no prompts; check the dataset's path, split and filters.")
    where = f"dataset_name {args.dataset_name}" if args.dataset_name else f"the {args.task} {split} split"
    try:
        check_prompt_dataset(dataset, takes_images=takes_images, where=where)
    except ValueError as err:
        raise CommandError(str(err)) from err
    return dataset


def load_dialogues(args, takes_images: bool, what: str, conversational: bool):
    """The dialogues SFT trains on: the task's `sft` split in TRL's conversational form (`messages` + `images`), or
    the split of `dataset_name` in any of TRL's SFT formats, every row checked up front. `conversational`: the trainer
    reads `messages` only (stage 5), so prompt-completion rows are joined into messages."""
    from ..data.formats import to_sft
    from ..data.prompt_datasets import check_sft_dataset

    check_data_source(args, what)
    split, dataset = _split_of(args, "sft")
    if len(dataset) == 0:
        raise CommandError(f"{what}: split {split!r} holds no rows; check the dataset's path, split and filters.")
    if args.dataset_name is None:
        return to_sft(dataset)
    try:
        fmt = check_sft_dataset(dataset, takes_images=takes_images, where=f"dataset_name {args.dataset_name}")
    except ValueError as err:
        raise CommandError(str(err)) from err
    if conversational and fmt == ("text",):
        raise CommandError(
            f"{what} learns answers to dialogues: dataset_name {args.dataset_name} holds plain 'text' rows. Give "
            "'messages' (with assistant turns) or 'prompt' + 'completion' rows."
        )
    if conversational and fmt == ("prompt", "completion"):
        dataset = dataset.map(_joined, remove_columns=["prompt", "completion"])
    return dataset


def _joined(row: dict) -> dict:
    """A prompt-completion row as one conversation: a string prompt is the user's turn, a string completion the
    assistant's."""
    prompt, completion = row["prompt"], row["completion"]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    completion = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else list(completion)
    return {"messages": prompt + completion}


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
