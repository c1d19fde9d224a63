"""The data helpers both task loaders share: `data.splits`, `data.images`, `data.formats` and `data.mmrole_prompts`."""

import random

import pytest
from datasets import Dataset
from PIL import Image

from trl_latent.data.formats import to_sft
from trl_latent.data.images import (
    ON_MISSING_IMAGE,
    check_on_missing_image,
    load_image,
    load_image_or_skip,
    missing_image_error,
)
from trl_latent.data.mmrole_prompts import PROFILE_FIELDS, TEMPLATES, build_mmrole_prompt, format_history
from trl_latent.data.splits import fraction_bounds, split_by_fractions


# ------------------------------------------------------------------------------------------------------ splits
def test_fraction_bounds_are_exact_where_float_products_are_not():
    assert int(0.29 * 100) == 28  # what naive float arithmetic gives
    assert fraction_bounds(100, 0.0, 0.29) == (0, 29)
    assert fraction_bounds(36, 0.5, 0.9) == (18, 32)
    with pytest.raises(ValueError, match="0 <= start <= end <= 1"):
        fraction_bounds(10, 0.6, 0.5)


def test_split_by_fractions_shuffles_as_the_authors_do_and_cuts_without_overlap():
    items = list(range(36))
    splits = split_by_fractions(items, {"sft": (0.0, 0.5), "rl": (0.5, 0.9), "test": (0.9, 1.0)})
    expected = list(items)
    random.Random(42).shuffle(expected)  # the authors' random.seed(42); random.shuffle
    assert splits["sft"] + splits["rl"] + splits["test"] == expected
    assert [len(v) for v in splits.values()] == [18, 14, 4]
    assert split_by_fractions(items, {"all": (0.0, 1.0)}, seed=1)["all"] != expected


# ------------------------------------------------------------------------------------------------------ images
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


# ------------------------------------------------------------------------------------------------------ formats
def test_to_sft_appends_the_reference_as_the_assistant_turn():
    prompt = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Hi?"}]}]
    dataset = Dataset.from_list(
        [{"prompt": prompt, "image": Image.new("RGB", (8, 8)), "reference": "Hello.", "id": 1}]
    )
    (row,) = to_sft(dataset)
    assert set(row) == {"messages", "images", "reference", "id"}
    assert row["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}
    assert row["messages"][0]["content"][1]["text"] == "Hi?" and len(row["images"]) == 1


# ------------------------------------------------------------------------------------------------------ prompts
PROFILE = {field: f"The {field}." for field in PROFILE_FIELDS}


def test_the_paper_prompt_holds_profile_history_and_the_character_cue():
    messages = build_mmrole_prompt("Rolo", PROFILE, "What is that?", history=[("human", "Ahoy"), ("Rolo", "Hi")])
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user[0]["type"] == "image" and user[1]["type"] == "text"
    text = user[1]["text"]
    assert all(f"The {field}." in text for field in PROFILE_FIELDS)
    assert "[human]: Ahoy\n[Rolo]: Hi" in text and text.rstrip().endswith("[Rolo]:")
    assert format_history([]) == ""


def test_every_template_builds_and_an_unknown_one_is_refused():
    for template in TEMPLATES:
        profile = dict(PROFILE, profile="A pirate.") if template == "mmrole_eval" else PROFILE
        messages = build_mmrole_prompt("Rolo", profile, "What is that?", template=template)
        assert messages[-1]["content"][-1]["text"].strip()
    with pytest.raises((ValueError, KeyError)):
        build_mmrole_prompt("Rolo", PROFILE, "What is that?", template="chatml")
