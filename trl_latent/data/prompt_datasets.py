"""Prompt datasets for RL and dialogue datasets for SFT from wherever a user keeps them, in TRL's formats, checked before
any model loads.

`trl-latent grpo --dataset_name X` reads X as TRL's scripts do, with the local forms a user has first: a JSON, JSON-lines,
Parquet or CSV file; a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`; a folder of data files;
else a dataset name on the Hub (through `datasets.load_dataset`, which needs the network).

[`check_prompt_dataset`] reads every row once, before training, and names the first bad one: TRL itself finds a missing
`prompt`, an empty image or an image placeholder without its image only when that row reaches a generation batch,
with an error that names no row ("Number of images provided (0) does not match number of image placeholders (1)").
Both RL trainers call it on their `train_dataset`. [`check_sft_dataset`] does the same for the SFT formats
(`trl-latent sft --dataset_name X`, stage 5 and token SFT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DATA_FILE_BUILDERS", "SFT_FORMATS", "check_prompt_dataset", "check_sft_dataset", "load_prompt_dataset"]

# file suffix -> the `datasets` builder that reads it
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
CHECK_BATCH = 1024  # rows read at once by the check
_PASSED: set[tuple[str, bool]] = set()  # (fingerprint, takes_images) of the prompt datasets that passed the check
IMAGE_COLUMNS = ("images", "image")  # TRL's names, in the order its trainers look for them
ROLES = ("system", "user", "assistant", "tool")
PROMPT_FORMATS = (
    "TRL's prompt format: a 'prompt' column holding a string (standard) or a list of {'role', 'content'} messages "
    "(conversational), and for images an 'image' column (one per row) or an 'images' column (a list per row)"
)

SFT_FORMATS = (
    "one of TRL's SFT formats: 'messages' (a list of {'role', 'content'} messages with at least one assistant turn), "
    "'prompt' and 'completion' (strings, or lists of messages), or 'text' (a string); for images an 'images' column "
    "(a list per row) or an 'image' column (one per row)"
)


def _saved_with_datasets(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def load_prompt_dataset(name: str, config: str | None = None, split: str = "train"):
    """The `split` of the dataset `name`: a data file (`.json`, `.jsonl`, `.parquet`, `.csv`: one split, `train`), a
    folder saved with `datasets` (`save_to_disk`), a folder of data files, or a Hub dataset name.

    Raises `FileNotFoundError` for a path that does not exist and `ValueError` for a file of another kind or a split the
    dataset does not have, each naming what there is.
    """
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    path = Path(name).expanduser()
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"dataset_name {name}: a data file must be one of {sorted(DATA_FILE_BUILDERS)} (got {path.suffix!r}); "
                "or give a folder saved with `Dataset.save_to_disk`."
            )
        if split != "train":
            raise ValueError(
                f"dataset_name {name} is one file, so its only split is 'train' (asked for {split!r}): set "
                "dataset_train_split train, or give a folder with one file per split."
            )
        try:
            return load_dataset(builder, data_files=str(path), split="train")
        except ValueError as err:  # `datasets` says "Instruction "train" corresponds to no data!" for an empty file
            raise ValueError(
                f"dataset_name {name}: no rows could be read from it ({err}); is the file empty?"
            ) from err
    if path.is_dir() and _saved_with_datasets(path):
        data = load_from_disk(str(path))
        if isinstance(data, Dataset):
            return data
        if split not in data:
            raise ValueError(f"dataset_name {name} has no split {split!r}; its splits: {sorted(data)}.")
        return data[split]
    if path.is_dir():
        data = load_dataset(str(path), name=config)
    elif path.suffix.lower() in DATA_FILE_BUILDERS or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset_name {name} does not exist (a local file or folder was expected).")
    else:
        data = load_dataset(name, name=config)  # a Hub dataset
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"dataset_name {name} has no split {split!r}; its splits: {sorted(data)}.")
        return data[split]
    return data


def _image_placeholders(
    prompt: Any, row: int, where: str, what: str = "prompt", formats: str = PROMPT_FORMATS
) -> tuple[int, bool]:
    """(image placeholders still to fill, whether any message content is already structured) of one prompt (or the
    `what` column of another format)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{where} row {row}: the {what} is empty.")
        return 0, False
    if not isinstance(prompt, list) or not prompt:
        raise ValueError(
            f"{where} row {row}: the {what} is {type(prompt).__name__} {str(prompt)[:80]!r}, neither a string nor a "
            f"non-empty list of messages ({formats})."
        )
    placeholders, structured = 0, False
    for turn, message in enumerate(prompt):
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise ValueError(
                f"{where} row {row}, message {turn}: {str(message)[:80]!r} is not a {{'role', 'content'}} message with "
                f"a role among {list(ROLES)}."
            )
        content = message["content"]
        if isinstance(content, list):
            structured = True
            for block in content:
                if not isinstance(block, dict) or "type" not in block:
                    raise ValueError(
                        f"{where} row {row}, message {turn}: content block {str(block)[:80]!r} has no 'type' "
                        "('text' or 'image')."
                    )
                placeholders += block["type"] == "image" and block.get("image") is None
        elif content is not None and not isinstance(content, str):
            raise ValueError(
                f"{where} row {row}, message {turn}: content is {type(content).__name__}, neither a string nor a list "
                "of {'type': ...} blocks."
            )
    return placeholders, structured


def _image_count(value: Any, column: str, row: int, where: str) -> int:
    if column == "image":
        return 0 if value is None else 1
    if value is None:
        return 0
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} row {row}: 'images' must be a list of images (got {type(value).__name__}).")
    empty = [i for i, image in enumerate(value) if image is None]
    if empty:
        raise ValueError(f"{where} row {row}: images[{empty[0]}] is None; give the image or leave it out of the list.")
    return len(value)


def check_prompt_dataset(dataset, *, takes_images: bool, where: str = "train_dataset") -> None:
    """Check every row of a map-style prompt dataset against TRL's prompt format; raise `ValueError` naming the first
    bad row and what to do. `takes_images` says whether the model reads images (a vision-language base).

    Checked: a `prompt` column; each prompt a non-empty string or a list of role/content messages; no image column for
    a model that reads no images; no empty image; as many images as the prompt has image placeholders when its
    messages are already structured (TRL inserts the placeholders itself into plain-string messages). An iterable
    (streamed) dataset is not read ahead.
    """
    columns = getattr(dataset, "column_names", None)
    if columns is None or not hasattr(dataset, "__len__"):
        return
    # A dataset that passed once is not read again (the `grpo` command checks it before the model loads, the trainer
    # again for users of the Python API): `datasets` gives every version of a dataset its own fingerprint.
    passed = (getattr(dataset, "_fingerprint", None), takes_images)
    if passed[0] is not None and passed in _PASSED:
        return
    if "prompt" not in columns:
        raise ValueError(f"{where} has no 'prompt' column (its columns: {columns}). It needs {PROMPT_FORMATS}.")
    image_column = next((name for name in IMAGE_COLUMNS if name in columns), None)
    if image_column is not None and not takes_images:
        raise ValueError(
            f"{where} has an {image_column!r} column, but the model reads no images (a text-only base). Drop the "
            f"column (`dataset.remove_columns({image_column!r})`) or start from a vision-language base."
        )
    # Arrow batches: the images are counted, never decoded
    view = dataset.select_columns(["prompt", *([image_column] if image_column else [])]).with_format("arrow")
    for start in range(0, len(view), CHECK_BATCH):
        batch = view[start : start + CHECK_BATCH]
        prompts = batch.column("prompt").to_pylist()
        images = batch.column(image_column).to_pylist() if image_column else [None] * len(prompts)
        for offset, (prompt, image) in enumerate(zip(prompts, images, strict=True)):
            _check_row(start + offset, prompt, image, image_column, where)
    if passed[0] is not None:
        _PASSED.add(passed)


def _check_row(row: int, prompt: Any, image: Any, image_column: str | None, where: str) -> None:
    placeholders, structured = _image_placeholders(prompt, row, where)
    images = _image_count(image, image_column, row, where) if image_column else 0
    if structured and placeholders != images:
        raise ValueError(
            f"{where} row {row}: the prompt has {placeholders} image placeholder(s) ({{'type': 'image'}} blocks) but "
            f"the row gives {images} image(s) in {image_column or 'no image column'!r}. Give the row its image(s), "
            "remove the placeholder(s), or drop the row (`dataset.filter`)."
        )


def _sft_columns(columns: list[str], where: str) -> tuple[str, ...]:
    for fmt in (("messages",), ("prompt", "completion"), ("text",)):
        if all(name in columns for name in fmt):
            return fmt
    raise ValueError(f"{where} is in no SFT format (its columns: {columns}). It needs {SFT_FORMATS}.")


def check_sft_dataset(dataset, *, takes_images: bool, where: str = "train_dataset") -> tuple[str, ...]:
    """Check every row of a map-style SFT dataset against TRL's SFT formats; raise `ValueError` naming the first bad
    row and what to do, or return the format's columns (`("messages",)`, `("prompt", "completion")` or `("text",)`).

    Checked: the format's columns; messages with known roles and string or block contents; a `messages` row with an
    assistant turn (the tokens SFT learns); a non-empty completion or text; no image column for a model that reads no
    images; no empty image; as many images as structured messages have image placeholders.
    """
    columns = list(dataset.column_names)
    fmt = _sft_columns(columns, where)
    image_column = next((name for name in IMAGE_COLUMNS if name in columns), None)
    if image_column is not None and not takes_images:
        raise ValueError(
            f"{where} has an {image_column!r} column, but the model reads no images (a text-only base). Drop the "
            f"column (`dataset.remove_columns({image_column!r})`) or start from a vision-language base."
        )
    view = dataset.select_columns([*fmt, *([image_column] if image_column else [])]).with_format("arrow")
    for start in range(0, len(view), CHECK_BATCH):
        batch = view[start : start + CHECK_BATCH]
        values = [batch.column(name).to_pylist() for name in fmt]
        images = batch.column(image_column).to_pylist() if image_column else [None] * batch.num_rows
        for offset, row_values in enumerate(zip(*values, images, strict=True)):
            row = start + offset
            *parts, image = row_values
            placeholders, structured = 0, False
            for name, value in zip(fmt, parts, strict=True):
                if name == "text" or (name == "completion" and isinstance(value, str)):
                    if not isinstance(value, str) or not value.strip():
                        raise ValueError(
                            f"{where} row {row}: the {name} is empty or not a string ({str(value)[:80]!r})."
                        )
                    continue
                if name == "messages" and not isinstance(value, list):
                    raise ValueError(
                        f"{where} row {row}: messages is {type(value).__name__} {str(value)[:80]!r}, not a list of "
                        f"{{'role', 'content'}} messages ({SFT_FORMATS})."
                    )
                count, blocks = _image_placeholders(value, row, where, name, SFT_FORMATS)
                placeholders, structured = placeholders + count, structured or blocks
                if name == "messages" and not any(m.get("role") == "assistant" for m in value):
                    raise ValueError(
                        f"{where} row {row}: the messages hold no assistant turn, so there is nothing to learn; add "
                        "the answer as an assistant message, or drop the row (`dataset.filter`)."
                    )
            count = _image_count(image, image_column, row, where) if image_column else 0
            if structured and placeholders != count:
                raise ValueError(
                    f"{where} row {row}: the messages have {placeholders} image placeholder(s) ({{'type': 'image'}} "
                    f"blocks) but the row gives {count} image(s) in {image_column or 'no image column'!r}. Give the "
                    "row its image(s), remove the placeholder(s), or drop the row (`dataset.filter`)."
                )
    return fmt
