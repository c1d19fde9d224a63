"""The images of the dialogue datasets: opening and resizing them, and what happens when one is missing or unreadable.

Both dialogue loaders ([`~trl_latent.data.mmrole.load_mmrole`], [`~trl_latent.data.pcogalign.load_pcogalign`])
take an `images_dir` that record image paths are relative to and an `on_missing_image` policy: `"error"` raises
naming the file, the record and the images folder; `"skip"` leaves the record out (the loader counts it). A missing
file raises `FileNotFoundError` ([`missing_image_error`]); a file that exists but cannot be read (truncated, not an
image) raises the loader's format error ([`unreadable_image_error`], `error_cls`).
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = [
    "check_on_missing_image",
    "load_image",
    "load_image_or_skip",
    "missing_image_error",
    "unreadable_image_error",
]

logger = logging.getLogger(__name__)


def load_image(relative: str, images_dir: Path, image_size: tuple[int, int] | None):
    """Open `images_dir / relative` as RGB, resized to `image_size` = (width, height) unless it is `None`."""
    from PIL import Image

    with Image.open(images_dir / relative) as img:
        img = img.convert("RGB")
        if image_size is not None:
            img = img.resize(tuple(image_size))
        return img


def missing_image_error(relative: str, images_dir: Path, record: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Image {relative!r} of {record} was not found: expected {images_dir / relative} inside the images folder "
        f"{images_dir}. Put the dataset's images there (MMRole: COCO train2017 under images/COCO/train2017/), point "
        f"`images_dir` at the folder that holds them, or pass on_missing_image='skip' to leave such records out."
    )


ON_MISSING_IMAGE = ("error", "skip")


def check_on_missing_image(value: str) -> None:
    if value not in ON_MISSING_IMAGE:
        raise ValueError(f"on_missing_image must be 'error' or 'skip', got {value!r}.")


def unreadable_image_error(
    relative: str, images_dir: Path, record: str, err: Exception, error_cls: type[ValueError] = ValueError
) -> ValueError:
    """The error for an image file that exists but cannot be read, as an `error_cls` (the loader's format error)."""
    return error_cls(
        f"Image {relative!r} of {record} cannot be read ({type(err).__name__}: {err}); the file {images_dir / relative} "
        "is truncated or not an image. Fetch it again, or pass on_missing_image='skip' to leave such records out "
        "(counted)."
    )


def load_image_or_skip(
    relative,
    images_dir: Path,
    image_size,
    on_missing_image: str,
    record: str,
    error_cls: type[ValueError] = ValueError,
):
    """The image (see [`load_image`]), or `None` when it cannot be read and `on_missing_image="skip"`; with
    `"error"`, an unreadable file raises an `error_cls` naming it and the record ([`unreadable_image_error`])."""
    from PIL import UnidentifiedImageError

    try:
        return load_image(relative, images_dir, image_size)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:  # truncated, not an image, corrupt
        if on_missing_image == "error":
            raise unreadable_image_error(relative, images_dir, record, err, error_cls) from err
        logger.warning("Skipping %s: its image %s cannot be read (%s).", record, images_dir / relative, err)
        return None
