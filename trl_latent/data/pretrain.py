"""The data streams that build the latent action space: paired image-text data and text-only data.

Two record formats are read:

- **TRL's conversational VLM format**: `{"messages": [...], "images": [PIL image or path, ...]}` (what
  `trl.SFTTrainer` takes, and what [`synthetic_sft_dataset`] builds); text-only records are `{"messages": [...]}` or a
  plain `{"text": "..."}`.
- **The authors' pretraining JSON format** (docs/architecture.md section 3; a sample in `tests/data/pretrain-format-sample/`):
  a JSON list of `{id, images: [path], messages: [{role, content}], instance_type}`. The first user turn of a paired
  record may hold an `<image>` placeholder where the image goes (without one, the image goes before the first user
  text, as TRL does); text-only records have no `images` key. [`load_pretrain_corpus`] reads such files into a paired
  and a text-only `datasets.Dataset` in TRL's format (image paths kept as strings, opened per batch).

The collator that turns these records into the stages' batches is `trl_latent.data.collator.LatentDataCollator`.

A paired record whose image is missing or unreadable raises [`BadRecordError`] naming the record, or, with
`skip_bad_records=True`, is dropped from its batch and counted.

```python
>>> from trl_latent.data.pretrain import pretrain_messages
>>> pretrain_messages([{"role": "user", "content": "<image>\\nDescribe the picture."}], num_images=1)[0]["content"]
[{'type': 'image', 'text': None}, {'type': 'text', 'text': 'Describe the picture.'}]
```
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .files import DataFileError, read_json_file, read_jsonl_file

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_PLACEHOLDER",
    "BadRecordError",
    "PretrainCorpus",
    "load_pretrain_corpus",
    "pretrain_messages",
    "with_stream_indices",
]

IMAGE_PLACEHOLDER = "<image>"
PAIRED_INDEX, TEXT_INDEX = "paired_index", "text_index"


class BadRecordError(ValueError):
    """A record that cannot be trained on (missing or unreadable image, no text token left after masking, ...).

    Its message names the record; `reason` is a short key used to count skipped records."""

    def __init__(self, message: str, reason: str = "bad_record"):
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------------------------- records
def record_name(record: dict, stream: str, index: int | None = None) -> str:
    """How errors name a record: its `id` when it has one, and its row in the stream's dataset."""
    parts = []
    if record.get("id") is not None:
        parts.append(f"id={record['id']!r}")
    if index is not None:
        parts.append(f"row {index}")
    return f"{stream} record " + (", ".join(parts) if parts else "(no id)")


def pretrain_messages(messages: list[dict], num_images: int, name: str = "record") -> list[dict]:
    """Messages with string contents (the pretraining format) -> TRL's typed parts, images at their `<image>`
    placeholders.

    Without any placeholder, the images go before the first user turn's text (TRL's convention). Every part is a
    `{"type", "text"}` dict (`text=None` for images) so Arrow stores one schema for all turns.
    """
    n_placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages if isinstance(m.get("content"), str))
    if n_placeholders not in (0, num_images):
        raise BadRecordError(
            f"{name} has {num_images} image(s) but {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s); each image "
            f"needs one placeholder, or none at all (then the images go before the first user turn).",
            reason="placeholder_mismatch",
        )
    out, inserted = [], n_placeholders > 0
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant"):
            raise BadRecordError(f"{name} has a message with role {role!r}; expected system, user or assistant.")
        if not isinstance(content, str):
            raise BadRecordError(
                f"{name}: a pretraining-format message's content must be a string (got {type(content).__name__})."
            )
        parts = []
        if role == "user" and not inserted and num_images:
            parts += [{"type": "image", "text": None}] * num_images
            inserted = True
        pieces = content.split(IMAGE_PLACEHOLDER)
        for i, piece in enumerate(pieces):
            if i > 0:
                parts.append({"type": "image", "text": None})
                piece = piece[1:] if piece.startswith("\n") else piece  # "<image>\n" is one unit in the format
            if piece:
                parts.append({"type": "text", "text": piece})
        out.append({"role": role, "content": parts})
    if num_images and not inserted:
        raise BadRecordError(f"{name} has images but no user turn to put them in.", reason="placeholder_mismatch")
    return out


def _read_records(path: Path, skip_bad_records: bool) -> tuple[list[tuple[int, Any]], list[str]]:
    """`(index, record)` pairs of a pretraining file (the index is the 0-based line of a `.jsonl` file or the list
    position), and the bad `.jsonl` lines skipped."""
    what = "Pretraining file"
    if path.suffix == ".jsonl":
        records, skipped = read_jsonl_file(path, what, skip_bad_lines=skip_bad_records)
        return [(number - 1, record) for number, record in records], skipped
    records = read_json_file(path, what, expect="a JSON list of records")
    if not isinstance(records, list):
        raise DataFileError(
            f"{what} {path} must hold a JSON list of records {{id, images, messages}} (got a "
            f"{type(records).__name__}); use a .jsonl file for one record per line."
        )
    return list(enumerate(records)), []


def _check_messages(record: dict, name: str) -> list[dict]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRecordError(f"{name} has no `messages` list.", reason="no_messages")
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRecordError(
                f"{name}: message {position} must be an object with a `role` and a string `content` (got "
                f"{str(message)[:80]!r}).",
                reason="bad_message",
            )
        if not isinstance(message.get("content"), str):
            raise BadRecordError(
                f"{name}: message {position} ({message['role']}) must have a string `content` in the pretraining "
                f"format (got {type(message.get('content')).__name__}).",
                reason="bad_message",
            )
    return messages


@dataclass
class PretrainCorpus:
    """Records read by [`load_pretrain_corpus`].

    Attributes:
        paired (`datasets.Dataset` or `None`): paired records in TRL's format: `id`, `messages` (typed parts),
            `images` (absolute paths), `instance_type`.
        text (`datasets.Dataset` or `None`): text-only records: `id`, `messages` (string contents), `instance_type`.
        skipped (`list[tuple[str, str]]`): `(record name, reason)` of each record dropped with `skip_bad_records`.
    """

    paired: Any = None
    text: Any = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def load_pretrain_corpus(paths, image_root=None, skip_bad_records: bool = False) -> PretrainCorpus:
    """Read pretraining JSON (or JSON-lines) files into a paired and a text-only dataset.

    Records with an `images` key are paired, the others text-only. A record that is not an object, has no
    `messages` list of `{role, content}` objects with string contents, a paired record with no image, a missing image
    file or a placeholder count that does not match its images raises [`BadRecordError`] naming the record and the
    file, unless `skip_bad_records=True` (then it is left out, warned about and listed in `PretrainCorpus.skipped`;
    so is a `.jsonl` line that is not valid JSON). An empty, truncated or non-UTF-8 file raises
    [`~trl_latent.data.files.DataFileError`] naming it, whatever `skip_bad_records` says. Images are only checked to
    exist here; an unreadable image file is caught (and skipped with `skip_bad_records`) when its batch is built
    ([`LatentDataCollator`]).

    Args:
        paths (`str`, `Path` or a list of them): JSON files (a list of records) or `.jsonl` files.
        image_root (`str` or `Path`, *optional*): folder relative image paths are resolved against; defaults to each
            file's own folder.
        skip_bad_records (`bool`, *optional*, defaults to `False`): drop and count bad records instead of raising.

    Returns:
        [`PretrainCorpus`]
    """
    from datasets import Dataset

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("load_pretrain_corpus got no file: pass the paths of the pretraining JSON / JSONL files.")
    paired, text, skipped = [], [], []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"Pretraining file {path} does not exist.")
        root = Path(image_root) if image_root is not None else path.parent
        records, bad_lines = _read_records(path, skip_bad_records)
        skipped += [(line, "bad_json_line") for line in bad_lines]
        if not records and not bad_lines:
            logger.warning("Pretraining file %s holds no record.", path)
        for i, record in records:
            name = f"{record_name(record if isinstance(record, dict) else {}, 'pretraining', i)} of {path}"
            try:
                if not isinstance(record, dict):
                    raise BadRecordError(
                        f"{name} is a {type(record).__name__}, not a record object {{id, images, messages}}.",
                        reason="not_an_object",
                    )
                messages = _check_messages(record, name)
                if "images" in record:
                    paired.append(_paired_pretrain_record(record, root, name))
                else:
                    text.append(
                        {
                            "id": str(record.get("id", i)),
                            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                            "instance_type": _instance_type(record, name),
                        }
                    )
            except BadRecordError as err:
                if not skip_bad_records:
                    raise
                skipped.append((name, err.reason))
                logger.warning("Skipping a bad record: %s", err)
    if skipped:
        logger.warning(
            "Skipped %d bad pretraining record(s) or line(s) of %s (see PretrainCorpus.skipped).",
            len(skipped),
            ", ".join(map(str, paths)),
        )
    if not paired and not text:
        raise ValueError(
            f"No usable pretraining record in {', '.join(map(str, paths))}"
            + (f" ({len(skipped)} skipped as bad)" if skipped else "")
            + ": check the files (a JSON list of {id, images, messages} records, or one per line in .jsonl)."
        )
    return PretrainCorpus(
        paired=Dataset.from_list(paired) if paired else None,
        text=Dataset.from_list(text) if text else None,
        skipped=skipped,
    )


def _instance_type(record: dict, name: str):
    value = record.get("instance_type")
    if value is not None and not isinstance(value, str):
        raise BadRecordError(f"{name}: `instance_type` must be a string (got {value!r}).", reason="bad_field")
    return value


def _paired_pretrain_record(record: dict, root: Path, name: str) -> dict:
    images = record.get("images")
    if not images or not isinstance(images, list) or any(not isinstance(p, str) or not p for p in images):
        raise BadRecordError(
            f"{name} is a paired record without an image (`images` is {images!r}); give each paired record at least "
            f"one image path, or drop the `images` key to make it text-only.",
            reason="no_image",
        )
    resolved = []
    for image in images:
        path = Path(image) if os.path.isabs(image) else root / image
        if not path.is_file():
            raise BadRecordError(
                f"{name}: image {image!r} not found (looked for {path}); pass `image_root=` the folder the image "
                f"paths are relative to.",
                reason="missing_image",
            )
        resolved.append(str(path))
    return {
        "id": str(record.get("id", "")),
        "messages": pretrain_messages(record["messages"], len(resolved), name),
        "images": resolved,
        "instance_type": _instance_type(record, name),
    }


# ------------------------------------------------------------------------------------------------- streams
def with_stream_indices(paired, text=None, seed: int = 0):
    """The trainer's view of the streams: the paired dataset with a `paired_index` column and, when a text-only
    dataset is mixed in, a `text_index` column naming the text-only record that shares its step.

    One epoch covers every record of the larger stream once: the smaller one is cycled (paired rows repeat when the
    text-only stream is larger). Text-only records are assigned in a seeded order, so a paired record does not
    always meet the same text-only one from epoch to epoch.
    """
    n_paired = len(paired)
    if n_paired == 0:
        raise ValueError("The paired (train) dataset is empty.")
    if PAIRED_INDEX in paired.column_names or TEXT_INDEX in paired.column_names:
        paired = paired.remove_columns([c for c in (PAIRED_INDEX, TEXT_INDEX) if c in paired.column_names])
    n_text = len(text) if text is not None else 0
    if text is not None and n_text == 0:
        raise ValueError("The text-only dataset is empty.")
    n_rows = max(n_paired, n_text)
    rows = [i % n_paired for i in range(n_rows)]
    if n_rows > n_paired:
        paired = paired.select(rows)
    paired = paired.add_column(PAIRED_INDEX, rows)
    if text is not None:
        order = torch.randperm(n_text, generator=torch.Generator().manual_seed(seed)).tolist()
        paired = paired.add_column(TEXT_INDEX, [order[i % n_text] for i in range(n_rows)])
    return paired
