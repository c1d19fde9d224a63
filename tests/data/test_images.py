"""`data.images`: images loaded resized, missing or unreadable ones named (or skipped, counted)."""

import pytest
from PIL import Image

from tests.fixtures.bad_input import (
    Case,
    bad_input_test,
    mmrole_with_truncated_image,
    pcog_truncated_image_skipped,
)
from trl_latent.data.images import (
    ON_MISSING_IMAGE,
    check_on_missing_image,
    load_image,
    load_image_or_skip,
    missing_image_error,
)
from trl_latent.data.mmrole import MMRoleFormatError, load_mmrole


def test_images_load_resized_and_missing_ones_are_named(tmp_path):
    Image.new("RGBA", (30, 20), "red").save(tmp_path / "a.png")
    image = load_image("a.png", tmp_path, (56, 28))
    assert image.mode == "RGB" and image.size == (56, 28)
    assert load_image("a.png", tmp_path, None).size == (30, 20)
    error = missing_image_error("b.png", tmp_path, "session 3")
    assert isinstance(error, FileNotFoundError)
    assert "'b.png' of session 3" in str(error) and str(tmp_path / "b.png") in str(error)
    assert "on_missing_image='skip'" in str(error)


def test_unreadable_images_raise_or_are_skipped(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")

    class FormatError(ValueError):
        pass

    with pytest.raises(FormatError, match="'bad.png' of record 7 cannot be read"):
        load_image_or_skip("bad.png", tmp_path, None, "error", "record 7", FormatError)
    assert load_image_or_skip("bad.png", tmp_path, None, "skip", "record 7") is None
    assert ON_MISSING_IMAGE == ("error", "skip")
    check_on_missing_image("skip")
    with pytest.raises(ValueError, match="'error' or 'skip', got 'ignore'"):
        check_on_missing_image("ignore")


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case(
        "mmrole/truncated_image",
        lambda c: load_mmrole(mmrole_with_truncated_image(c), image_size=(8, 8)),
        MMRoleFormatError,
        ("cannot be read", "of session 'Albus_Dumbledore", "images/COCO", "on_missing_image='skip'"),
    ),
    Case(
        "pcogalign/truncated_image_skipped",
        pcog_truncated_image_skipped,
        fragments=("cannot be read",),
        count=2,
    ),
]


test_bad_input = bad_input_test(BAD_INPUT)
