"""The collator of the latent stages: [`LatentDataCollator`] turns a batch of paired records (and, for the stages
that mix them 1:1, as many text-only records) into one sub-batch per stream, with the processor's outputs
(`input_ids`, `attention_mask`, `pixel_values`, `image_grid_thw`, `mm_token_type_ids`) and a `loss_mask` of the
tokens the losses cover: text tokens only (no padding, no image tokens; only assistant tokens with
`assistant_only_loss=True`). Also here: how records' images are opened, and the chat-template helpers the mask is
built with ([`assistant_token_mask`], [`training_chat_template`]). The records themselves are read by
`trl_latent.data.pretrain`.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .pretrain import PAIRED_INDEX, TEXT_INDEX, BadRecordError, record_name

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- images
def _load_image(image, name: str):
    """A PIL image from a PIL image, a path, or a `datasets` image dict (`{"bytes", "path"}`)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image
    if image is None:
        raise BadRecordError(f"{name} has an empty image entry (None).", reason="no_image")
    source = image
    if isinstance(image, dict):
        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise BadRecordError(f"{name}: image file {str(source)!r} not found.", reason="missing_image")
    try:
        with Image.open(source) as opened:
            return opened.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise BadRecordError(
            f"{name}: image {str(image)[:200]!r} cannot be read ({err}).", reason="unreadable_image"
        ) from err


# ------------------------------------------------------------------------------------------------- chat templates
def text_messages(messages: list[dict], name: str = "record") -> list[dict]:
    """Messages with string contents, as a text-only base's chat template takes them: typed text parts
    (`[{"type": "text", "text": ...}]`) are joined; an image part is an error naming the record."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            if any(isinstance(part, dict) and part.get("type") in ("image", "video") for part in content):
                raise BadRecordError(
                    f"{name} holds an image part, but a text-only base reads text only; drop the image parts or use a "
                    "vision-language base.",
                    reason="image_in_text_record",
                )
            content = "".join(part.get("text") or "" for part in content if isinstance(part, dict))
        out.append({"role": message["role"], "content": content if content is not None else ""})
    return out


def _chat_text(tokenizer, messages: list[dict], chat_template, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _chat_ids(tokenizer, messages: list[dict], chat_template) -> list[int]:
    # The rendered text already holds the template's special tokens: tokenise it without adding more (as
    # `apply_chat_template(tokenize=True)` does).
    return list(tokenizer(_chat_text(tokenizer, messages, chat_template), add_special_tokens=False)["input_ids"])


def assistant_token_mask(tokenizer, messages: list[dict], chat_template=None, name: str = "record"):
    """Token ids of a conversation and a mask of its assistant tokens, for any chat template.

    With a template that has `{% generation %}` markers (or TRL's training version of the tokenizer's template, passed
    as `chat_template`), transformers' `return_assistant_tokens_mask` gives the mask. Otherwise (real instruct models
    often ship a template TRL does not know, e.g. SmolLM2's ChatML) each assistant turn's text is found by rendering
    the conversation up to the turn with the generation prompt and up to its end: the characters in between (the
    answer and its end-of-turn tokens) are the turn's, and the tokens that start there are masked in. The template must
    render a conversation's prefixes as prefixes of it (every ChatML and Llama template does); one that does not
    raises naming the record.

    Returns:
        `(ids, mask)`: two lists of the conversation's length (`mask[i]` is 1 for an assistant token).
    """
    from trl.chat_template_utils import has_generation_markers

    template = chat_template or tokenizer.chat_template
    if has_generation_markers(template):
        out = tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(out["input_ids"]), list(out["assistant_masks"])
    full = _chat_text(tokenizer, messages, template)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _chat_text(tokenizer, messages[:i], template, add_generation_prompt=True) if i else ""
        through = _chat_text(tokenizer, messages[: i + 1], template)
        if not (through.startswith(before) and full.startswith(through)):
            raise ValueError(
                f"{name}: the chat template does not render the conversation's prefixes as prefixes of it, so the "
                "assistant tokens cannot be found; give the tokenizer a template with {% generation %} markers or set "
                "assistant_only_loss=False."
            )
        spans.append((len(before), len(through)))
    if not getattr(tokenizer, "is_fast", True):
        raise TypeError(f"assistant-only masks need a fast tokenizer (offsets), got {type(tokenizer).__name__}.")
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(lo <= start < hi for lo, hi in spans)) for start, _ in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), mask


def training_chat_template(processing_class) -> str | None:
    """The chat template to mask assistant tokens with: `None` when the processing class's own has `{% generation %}`
    markers, else TRL's training version of it. A tokenizer whose template TRL does not know gets `None` too: its
    assistant tokens are then found from the template's rendering ([`assistant_token_mask`]); a processor's is an
    error (TRL's)."""
    from transformers import ProcessorMixin
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(processing_class.chat_template):
        return None
    try:
        return get_training_chat_template(processing_class)
    except ValueError:
        if isinstance(processing_class, ProcessorMixin):
            raise
        return None


# ------------------------------------------------------------------------------------------------- collator
def _image_parts(messages) -> int:
    """Image placeholders among typed message parts (`{"type": "image"}`)."""
    count = 0
    for message in messages or []:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image")
    return count


@dataclass
class LatentDataCollator:
    """Collates the latent-space stages' data streams into `{"paired": {...}, "text": {...}}`.

    Each example is a paired record (with `paired_index` and, when the text stream is on, `text_index` columns added
    by [`with_stream_indices`]); the text-only record that shares its step is read from `text_dataset`. Each stream is
    tokenised with TRL's `DataCollatorForVisionLanguageModeling` (the processor's chat template, right padding), and
    gets a `loss_mask`: labelled tokens (`labels != -100`) that are not image or video tokens.

    Args:
        processing_class (`ProcessorMixin`): the base model's processor (e.g. `Qwen2_5_VLProcessor`).
        text_dataset (`datasets.Dataset`, *optional*): text-only records (`messages` or `text`).
        streams (`tuple[str, ...]`, *optional*, defaults to `("paired",)`): streams to build.
        paired_requires_image (`bool`, *optional*, defaults to `True`): whether a paired record without an image is
            an error (`False` for task SFT, where text-only dialogues are fine).
        max_length (`int`, *optional*): truncation length (image tokens must survive it).
        assistant_only_loss (`bool`, *optional*, defaults to `False`): only assistant tokens of conversational
            records count in `loss_mask` (plain `text` records always count every token).
        chat_template (`str`, *optional*): a chat template with `{% generation %}` markers for `assistant_only_loss`.
        pad_to_multiple_of (`int`, *optional*): pad lengths to a multiple of this.
        skip_bad_records (`bool`, *optional*, defaults to `False`): drop bad records (counted in `skipped` and in the
            batch's `skipped_records`) instead of raising [`BadRecordError`].
        dataset_text_field (`str`, *optional*, defaults to `"text"`): the column of plain-text records.
    """

    processing_class: Any
    text_dataset: Any = None
    streams: tuple[str, ...] = ("paired",)
    paired_requires_image: bool = True
    max_length: int | None = None
    assistant_only_loss: bool = False
    chat_template: str | None = None
    pad_to_multiple_of: int | None = None
    skip_bad_records: bool = False
    dataset_text_field: str = "text"
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self):
        from transformers import PreTrainedTokenizerBase, ProcessorMixin
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling, DataCollatorForVisionLanguageModeling

        # A bare tokenizer serves a text-only base, whose records hold no image (`paired_requires_image=False`).
        self._tokenizer_only = isinstance(self.processing_class, PreTrainedTokenizerBase)
        if not isinstance(self.processing_class, ProcessorMixin) and not (
            self._tokenizer_only and not self.paired_requires_image
        ):
            raise TypeError(
                "LatentDataCollator needs the base model's processor (a `ProcessorMixin`, e.g. Qwen2_5_VLProcessor), "
                f"got {type(self.processing_class).__name__}. Load it with the processor class itself: "
                "`AutoProcessor` silently returns a bare tokenizer when it cannot build the processor. (A tokenizer "
                "serves a text-only base: pass `paired_requires_image=False`.)"
            )
        if "text" in self.streams and self.text_dataset is None:
            raise ValueError("The text stream is on but no text_dataset was given.")
        if self._tokenizer_only:
            tokenizer = self.processing_class
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            if pad_id is None:
                raise ValueError(
                    f"The tokenizer ({type(tokenizer).__name__}) has neither a pad token nor an EOS token to pad with; "
                    "set `tokenizer.pad_token`."
                )
            self._padder = DataCollatorForLanguageModeling(
                pad_token_id=pad_id, pad_to_multiple_of=self.pad_to_multiple_of
            )
            self._non_text_ids = []
            return

        def make(assistant_only: bool):
            return DataCollatorForVisionLanguageModeling(
                processor=self.processing_class,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
                dataset_text_field=self.dataset_text_field,
                assistant_only_loss=assistant_only,
                chat_template=self.chat_template if assistant_only else None,
            )

        self._conversational = make(self.assistant_only_loss)
        self._plain = make(False)
        tokenizer = self.processing_class.tokenizer
        non_text = {
            getattr(self.processing_class, "image_token", None),
            getattr(self.processing_class, "video_token", None),
        }
        self._non_text_ids = sorted(
            tokenizer.convert_tokens_to_ids(t) for t in non_text if t is not None and t in tokenizer.get_vocab()
        )

    # ---------------------------------------------------------------------------------------------- records
    def _paired(self, example: dict) -> dict:
        name = record_name(example, "paired", example.get(PAIRED_INDEX))
        images = example.get("images")
        if images is None and "image" in example:
            images = [example["image"]]
        images = list(images or [])
        if self._tokenizer_only and (images or _image_parts(example.get("messages"))):
            raise BadRecordError(
                f"{name} holds an image (or an image placeholder), but the base is text-only (a tokenizer is its "
                "processing class): drop the record's images, or use a vision-language base.",
                reason="image_in_text_record",
            )
        if self.paired_requires_image and not images:
            raise BadRecordError(
                f"{name} has no image; the {'/'.join(self.streams)} stream needs one image per paired record. Put "
                "text-only records in `text_dataset`, or pass skip_bad_records=True to drop such records.",
                reason="no_image",
            )
        placeholders = _image_parts(example.get("messages"))
        if placeholders and placeholders != len(images):
            raise BadRecordError(
                f"{name} has {placeholders} image placeholder(s) in its messages but {len(images)} image(s).",
                reason="no_image" if not images else "placeholder_mismatch",
            )
        return self._conversation(example, name, [_load_image(image, name) for image in images])

    def _text(self, example: dict) -> dict:
        name = record_name(example, "text-only", example.get("_row"))
        images = example.get("images") or ([example["image"]] if example.get("image") is not None else [])
        if images or _image_parts(example.get("messages")):
            raise BadRecordError(
                f"{name} holds an image (or an image placeholder); a text-only record must not. Put it in the paired "
                "(train) dataset, or drop its image parts.",
                reason="image_in_text_record",
            )
        return self._conversation(example, name, [])

    def _conversation(self, example: dict, name: str, images: list) -> dict:
        if example.get("messages"):
            return {"messages": example["messages"], "images": images, "_name": name}
        field_name = self.dataset_text_field
        if example.get(field_name):
            return {field_name: example[field_name], "images": images, "_name": name}
        raise BadRecordError(
            f"{name} has neither a non-empty `messages` list nor a `{field_name}` string.", reason="no_text"
        )

    def _guard(self, build, example):
        try:
            return build(example)
        except BadRecordError as err:
            if not self.skip_bad_records:
                raise
            self.skipped[err.reason] += 1
            logger.warning("Skipping a bad record: %s", err)
            return None

    # ---------------------------------------------------------------------------------------------- encoding
    def _encode(self, records: list[dict], stream: str) -> dict:
        conversational = "messages" in records[0]
        if any(("messages" in r) != conversational for r in records):
            raise ValueError(
                f"The {stream} stream mixes `messages` and `text` records in one batch; use one format per dataset."
            )
        if self._tokenizer_only:
            out = self._encode_with_tokenizer(records, conversational)
        else:
            collator = self._conversational if conversational else self._plain
            try:
                out = collator.torch_call([{k: v for k, v in r.items() if k != "_name"} for r in records])
            except ValueError as err:  # e.g. the processor's own check that truncation kept every image token
                names = ", ".join(r["_name"] for r in records)
                raise ValueError(f"Could not tokenise the {stream} batch ({names}): {err}") from err
        labels = out.pop("labels")
        loss_mask = labels != -100
        for token_id in self._non_text_ids:
            loss_mask &= out["input_ids"] != token_id
        out["loss_mask"] = loss_mask
        return dict(out)

    def _encode_with_tokenizer(self, records: list[dict], conversational: bool) -> dict:
        """A text-only base's batch: each record through the tokenizer's chat template (or, for plain `text`, the
        tokenizer with an EOS appended, as TRL's SFT does), truncated to `max_length`, padded on the right by TRL's
        `DataCollatorForLanguageModeling`. With `assistant_only_loss`, conversational records count their assistant
        tokens only ([`assistant_token_mask`])."""
        tokenizer = self.processing_class
        examples = []
        for record in records:
            if conversational:
                messages = text_messages(record["messages"], record["_name"])
                if self.assistant_only_loss:
                    ids, mask = assistant_token_mask(tokenizer, messages, self.chat_template, record["_name"])
                else:
                    ids = _chat_ids(tokenizer, messages, None)
                    mask = [1] * len(ids)
            else:
                ids = list(tokenizer(record[self.dataset_text_field])["input_ids"])
                if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
                    ids.append(tokenizer.eos_token_id)
                mask = [1] * len(ids)
            if self.max_length is not None:
                ids, mask = ids[: self.max_length], mask[: self.max_length]
            examples.append({"input_ids": ids, "labels": [i if m else -100 for i, m in zip(ids, mask, strict=True)]})
        return dict(self._padder.torch_call(examples))

    def _encode_checked(self, records: list[dict], stream: str) -> tuple[dict | None, int]:
        """Encode, then drop (or fail on) records left with no token to train on after masking."""
        dropped = 0
        while records:
            out = self._encode(records, stream)
            # A step t trains on token t+1: a record needs a loss token after its first position.
            empty = [i for i, row in enumerate(out["loss_mask"][:, 1:]) if not bool(row.any())]
            if not empty:
                return out, dropped
            names = [records[i]["_name"] for i in empty]
            message = (
                f"{', '.join(names)} has no text token to train on after masking (padding, image tokens"
                + (", non-assistant tokens with assistant_only_loss=True" if self.assistant_only_loss else "")
                + (f", truncation to max_length={self.max_length}" if self.max_length else "")
                + "); fix the record or pass skip_bad_records=True to drop it."
            )
            if not self.skip_bad_records:
                raise BadRecordError(message, reason="no_text_tokens")
            logger.warning("Skipping: %s", message)
            self.skipped["no_text_tokens"] += len(empty)
            dropped += len(empty)
            records = [r for i, r in enumerate(records) if i not in set(empty)]
        return None, dropped

    def __call__(self, examples: list[dict]) -> dict:
        batch, skipped = {}, 0
        paired = [self._guard(self._paired, ex) for ex in examples]
        skipped += sum(r is None for r in paired)
        paired = [r for r in paired if r is not None]
        out, dropped = self._encode_checked(paired, "paired")
        skipped += dropped
        if out is None:
            raise BadRecordError(
                "Every paired record of a batch was skipped as bad; check the dataset (see the warnings above).",
                reason="empty_batch",
            )
        batch["paired"] = out
        if "text" in self.streams:
            texts = []
            for ex in examples:
                record = dict(self.text_dataset[int(ex[TEXT_INDEX])])
                record["_row"] = int(ex[TEXT_INDEX])
                texts.append(self._guard(self._text, record))
            skipped += sum(r is None for r in texts)
            texts = [r for r in texts if r is not None]
            out, dropped = self._encode_checked(texts, "text")
            skipped += dropped
            if out is None:
                raise BadRecordError(
                    "Every text-only record of a batch was skipped as bad; check the text-only dataset.",
                    reason="empty_batch",
                )
            batch["text"] = out
        batch["skipped_records"] = torch.tensor(skipped)
        return batch
