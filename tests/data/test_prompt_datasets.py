"""Datasets of the user's own (`trl_latent.data.prompt_datasets`): read from files and saved folders, every row checked
before a model loads with the bad row named."""

import json

import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

from tests.fixtures.text import chat as _chat
from trl_latent.data.prompt_datasets import check_prompt_dataset, check_sft_dataset, load_prompt_dataset

IMAGE = Image.new("RGB", (8, 8), "red")


def _user(*content):
    return [{"role": "user", "content": list(content)}]


PLACEHOLDER = {"type": "image"}


TEXT = {"type": "text", "text": "What is it?"}


def test_a_dataset_loads_from_each_local_form(tmp_path):
    rows = [{"prompt": f"Say {i}.", "answer": str(i)} for i in range(5)]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_prompt_dataset(str(jsonl))["prompt"] == [row["prompt"] for row in rows]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    assert load_prompt_dataset(str(tmp_path / "p.parquet"))["answer"] == [row["answer"] for row in rows]
    DatasetDict({"train": Dataset.from_list(rows[:3]), "rl": Dataset.from_list(rows[3:])}).save_to_disk(
        str(tmp_path / "saved")
    )
    assert len(load_prompt_dataset(str(tmp_path / "saved"), split="rl")) == 2
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    assert len(load_prompt_dataset(str(tmp_path / "one"))) == 5
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "train.jsonl").write_text(jsonl.read_text())
    assert len(load_prompt_dataset(str(folder))) == 5

    with pytest.raises(ValueError, match=r"has no split 'test'; its splits: \['rl', 'train'\]"):
        load_prompt_dataset(str(tmp_path / "saved"), split="test")
    with pytest.raises(ValueError, match="is one file, so its only split is 'train'"):
        load_prompt_dataset(str(jsonl), split="rl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt_dataset(str(tmp_path / "missing.jsonl"))
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(ValueError, match=r"must be one of \['.csv', '.json', '.jsonl', '.parquet'\]"):
        load_prompt_dataset(str(tmp_path / "p.txt"))


GOOD = [
    ({"prompt": ["Say hi.", "Name a colour."]}, False),
    ({"prompt": [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]}, False),
    ({"prompt": [_user(PLACEHOLDER, TEXT)], "image": [IMAGE]}, True),
    ({"prompt": [_user(PLACEHOLDER, PLACEHOLDER, TEXT)], "images": [[IMAGE, IMAGE]]}, True),
    ({"prompt": [[{"role": "user", "content": "What is it?"}]], "image": [IMAGE]}, True),  # TRL adds the placeholder
]


@pytest.mark.parametrize("columns, takes_images", GOOD)
def test_rows_in_trls_prompt_formats_pass(columns, takes_images):
    check_prompt_dataset(Dataset.from_dict(columns), takes_images=takes_images)


BAD = {
    "no prompt column": ({"question": ["Hi"]}, True, r"has no 'prompt' column \(its columns: \['question'\]\)"),
    "an empty prompt": ({"prompt": ["Hi", " "]}, False, "row 1: the prompt is empty"),
    "a message without a role": (
        {"prompt": [[{"role": "user", "content": "Hi"}], [{"content": "Hi"}]]},
        False,
        "row 1, message 0: .* is not a {'role', 'content'} message",
    ),
    "an image missing under its placeholder": (
        {"prompt": [_user(PLACEHOLDER, TEXT)] * 3, "image": [IMAGE, IMAGE, None]},
        True,
        r"row 2: the prompt has 1 image placeholder\(s\) .* but the row gives 0 image\(s\) in 'image'",
    ),
    "more images than placeholders": (
        {"prompt": [_user(PLACEHOLDER, TEXT)], "images": [[IMAGE, IMAGE]]},
        True,
        r"row 0: the prompt has 1 image placeholder\(s\) .* gives 2 image\(s\)",
    ),
    "an empty entry in images": (
        {"prompt": [_user(PLACEHOLDER, TEXT)] * 2, "images": [["a.png"], [None]]},  # as read from a JSON file
        True,
        r"row 1: images\[0\] is None",
    ),
    "images for a text-only model": (
        {"prompt": [_user(PLACEHOLDER, TEXT)], "image": [IMAGE]},
        False,
        "has an 'image' column, but the model reads no images",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_row_is_named(case):
    columns, takes_images, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        check_prompt_dataset(Dataset.from_dict(columns), takes_images=takes_images, where="prompts")


def test_the_latent_trainer_names_a_row_without_its_image_before_any_step(steerable_latent_model, tmp_path):
    """Given to the Python API, TRL would fail at the first step with "Number of images provided (0) does not match
    number of image placeholders (1)", naming no row."""
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

    rows = Dataset.from_dict({"prompt": [_user(PLACEHOLDER, TEXT)] * 4, "image": [IMAGE, IMAGE, None, IMAGE]})
    args = LatentGRPOConfig(str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=2,
                            num_generations=2, max_completion_length=2)  # fmt: skip
    with pytest.raises(ValueError, match="train_dataset row 2: the prompt has 1 image placeholder"):
        LatentGRPOTrainer(steerable_latent_model(), reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                          args=args, train_dataset=rows)  # fmt: skip


# ------------------------------------------------------------------------------------------------ SFT dialogues
SFT_GOOD = [
    ({"messages": [_chat("Hi", "Hello.")]}, False, ("messages",)),
    ({"prompt": ["Hi"], "completion": ["Hello."]}, False, ("prompt", "completion")),
    (
        {
            "prompt": [[{"role": "user", "content": "Hi"}]],
            "completion": [[{"role": "assistant", "content": "Hello."}]],
        },
        False,
        ("prompt", "completion"),
    ),
    ({"text": ["Once upon a time."]}, False, ("text",)),
    (
        {
            "messages": [
                [*_user(PLACEHOLDER, TEXT), {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]
            ],
            "images": [[IMAGE]],
        },
        True,
        ("messages",),
    ),
]


@pytest.mark.parametrize("columns, takes_images, fmt", SFT_GOOD)
def test_rows_in_trls_sft_formats_pass(columns, takes_images, fmt):
    assert check_sft_dataset(Dataset.from_dict(columns), takes_images=takes_images) == fmt


SFT_BAD = {
    "no SFT format": ({"question": ["Hi"]}, False, r"is in no SFT format \(its columns: \['question'\]\)"),
    "no assistant turn": (
        {"messages": [_chat("Hi", "Hello."), [{"role": "user", "content": "Hi"}]]},
        False,
        "row 1: the messages hold no assistant turn",
    ),
    "an empty completion": ({"prompt": ["Hi", "Yo"], "completion": ["Hello.", ""]}, False, "row 1: the completion is"),
    "messages as a string": ({"messages": ["Hi"]}, False, "row 0: messages is str 'Hi', not a list"),
    "a message without a role": (
        {"messages": [_chat("Hi", "Hello."), [{"content": "Hi"}, {"role": "assistant", "content": "Hello."}]]},
        False,
        "row 1, message 0: .* is not a {'role', 'content'} message",
    ),
    "an image missing under its placeholder": (
        {
            "messages": [
                [*_user(PLACEHOLDER, TEXT), {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]
            ]
            * 2,
            "images": [[IMAGE], []],
        },
        True,
        r"row 1: the messages have 1 image placeholder\(s\) .* but the row gives 0 image\(s\) in 'images'",
    ),  # fmt: skip
    "images for a text-only model": (
        {"messages": [_chat("Hi", "Hello.")], "images": [[IMAGE]]},
        False,
        "has an 'images' column, but the model reads no images",
    ),
}


@pytest.mark.parametrize("case", sorted(SFT_BAD))
def test_each_bad_sft_row_is_named(case):
    columns, takes_images, message = SFT_BAD[case]
    with pytest.raises(ValueError, match=message):
        check_sft_dataset(Dataset.from_dict(columns), takes_images=takes_images, where="dialogues")


def test_a_dataset_that_passed_is_not_read_again_and_a_changed_one_is(monkeypatch):
    """The `grpo` command checks the prompts before the model loads and the trainer checks them again: the second
    check of the same dataset (same fingerprint) reads no row; a mapped dataset is a new one and is read."""
    from trl_latent.data import prompt_datasets

    dataset = Dataset.from_dict({"prompt": ["Say hi.", "Name a colour."]})
    check_prompt_dataset(dataset, takes_images=False)
    rows = []
    monkeypatch.setattr(prompt_datasets, "_check_row", lambda row, *args: rows.append(row))
    check_prompt_dataset(dataset, takes_images=False)
    assert rows == []
    check_prompt_dataset(dataset, takes_images=True)  # another question: read again
    assert rows == [0, 1]
    emptied = dataset.map(lambda row, i: {"prompt": "" if i else row["prompt"]}, with_indices=True)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="row 1: the prompt is empty"):
        check_prompt_dataset(emptied, takes_images=False)
