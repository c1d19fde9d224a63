"""`data.pretrain`: the pretraining JSON format (placeholders, images, the shared sample), the synthetic task's
corpora, and clear errors (or counted skips) for bad records."""

import json
from pathlib import Path

import pytest

from tests.fixtures.bad_input import (
    TEXT_RECORD,
    Case,
    bad_input_test,
    pretrain_skip,
    train_on_empty,
    write,
)
from tests.fixtures.images import image
from tests.fixtures.paths import TEST_DATA
from trl_latent.data.pretrain import BadRecordError, load_pretrain_corpus, pretrain_messages

SAMPLE = TEST_DATA / "pretrain-format-sample"


# --------------------------------------------------------------------------------------------- pretraining format
def test_placeholder_becomes_an_image_part_where_it_stands():
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "<image>\nWhat colour?"},
        {"role": "assistant", "content": "Red."},
    ]
    out = pretrain_messages(messages, num_images=1)
    assert out[1]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": "What colour?"}]
    assert out[0]["content"] == [{"type": "text", "text": "sys"}]
    assert out[2]["content"] == [{"type": "text", "text": "Red."}]
    middle = pretrain_messages([{"role": "user", "content": "Look: <image> now"}], num_images=1)
    assert middle[0]["content"] == [
        {"type": "text", "text": "Look: "},
        {"type": "image", "text": None},
        {"type": "text", "text": " now"},
    ]


def test_without_placeholder_the_image_goes_before_the_first_user_text():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Complete the news."}]
    out = pretrain_messages(messages, num_images=1)
    assert out[1]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": "Complete the news."}]


def test_placeholder_count_mismatch_names_the_record():
    with pytest.raises(BadRecordError, match="rec-7 has 2 image.*1 <image> placeholder"):
        pretrain_messages([{"role": "user", "content": "<image> hi"}], num_images=2, name="rec-7")


def test_shared_sample_missing_images_error_names_the_record():
    with pytest.raises(BadRecordError, match=r"id='000000033471'.*paired.json.*not found.*image_root"):
        load_pretrain_corpus(SAMPLE / "paired.json")


def test_shared_sample_missing_images_skipped_and_counted():
    corpus = load_pretrain_corpus([SAMPLE / "paired.json", SAMPLE / "text_only.json"], skip_bad_records=True)
    assert corpus.paired is None
    assert corpus.num_skipped == 4 and {reason for _, reason in corpus.skipped} == {"missing_image"}
    assert "id='00000001'" in corpus.skipped[3][0]
    assert len(corpus.text) == 2 and corpus.text[1]["id"] == "HelpSteer3_0"
    assert corpus.text[1]["messages"][1] == {"role": "user", "content": "lets do python coding"}


def test_shared_sample_loads_with_images_under_image_root(tmp_path):
    for record in json.loads((SAMPLE / "paired.json").read_text()):
        image(tmp_path / record["images"][0])
    corpus = load_pretrain_corpus(SAMPLE / "paired.json", image_root=tmp_path)
    assert len(corpus.paired) == 4 and corpus.text is None and corpus.num_skipped == 0
    conversation, wiki = corpus.paired[0], corpus.paired[1]
    assert conversation["images"] == [str(tmp_path / "lmms-lab/LLaVA-NeXT-Data/images/000000033471.jpg")]
    assert conversation["messages"][1]["content"][0] == {"type": "image", "text": None}
    assert conversation["messages"][1]["content"][1]["text"].startswith("What are the colors of the bus")
    assert len(conversation["messages"]) == 7  # every turn of the multi-turn conversation is kept
    assert wiki["messages"][1]["content"] == [
        {"type": "image", "text": None},
        {"type": "text", "text": "Complete the wiki pages."},
    ]
    assert corpus.paired["instance_type"] == ["mm_conversation", "mm_wiki_pages", "mm_news", "image_caption"]


def test_paired_record_without_image_is_an_error_or_skipped(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": "x1", "images": [], "messages": [{"role": "user", "content": "hi"}]}]))
    with pytest.raises(BadRecordError, match=r"id='x1'.*paired record without an image"):
        load_pretrain_corpus(path)
    # Nothing left after skipping: an error, not an empty corpus.
    with pytest.raises(ValueError, match=r"No usable pretraining record in .*bad\.json \(1 skipped as bad\)"):
        load_pretrain_corpus(path, skip_bad_records=True)
    good = {"id": "t1", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    path.write_text(json.dumps([{"id": "x1", "images": [], "messages": [{"role": "user", "content": "hi"}]}, good]))
    corpus = load_pretrain_corpus(path, skip_bad_records=True)
    assert corpus.skipped[0][1] == "no_image" and len(corpus.text) == 1


def test_synthetic_task_corpora_load(task):
    paired = load_pretrain_corpus(task.path(task.paired_file), image_root=task.root).paired
    text = load_pretrain_corpus(task.path(task.text_only_file)).text
    assert len(paired) == 8 and len(text) == 12
    assert all(Path(p).is_file() for row in paired["images"] for p in row)


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case("pretrain/no_files", lambda c: load_pretrain_corpus([]), ValueError, ("got no file",)),
    Case(
        "pretrain/record_not_an_object",
        lambda c: load_pretrain_corpus(write(c, "p.json", json.dumps([TEXT_RECORD, 7]))),
        BadRecordError,
        ("pretraining record row 1 of {dir}/p.json is a int, not a record object",),
    ),
    Case(
        "pretrain/record_not_an_object_skipped",
        lambda c: pretrain_skip(c, json.dumps([TEXT_RECORD, 7]), "p.json"),
        fragments=("row 1 of", "not a record object"),
        count=1,
    ),
    Case(
        "pretrain/message_without_role",
        lambda c: load_pretrain_corpus(write(c, "p.json", json.dumps([{"id": "m1", "messages": [{"content": "x"}]}]))),
        BadRecordError,
        ("id='m1', row 0 of {dir}/p.json: message 0 must be an object with a `role`",),
    ),
    Case(
        "pretrain/content_not_a_string",
        lambda c: load_pretrain_corpus(
            write(c, "p.json", json.dumps([{"id": "m2", "messages": [{"role": "user", "content": [1]}]}]))
        ),
        BadRecordError,
        ("id='m2'", "message 0 (user) must have a string `content`"),
    ),
    Case(
        "pretrain/instance_type_of_mixed_types",
        lambda c: load_pretrain_corpus(
            write(c, "p.json", json.dumps([TEXT_RECORD, {**TEXT_RECORD, "instance_type": 3}]))
        ),
        BadRecordError,
        ("row 1 of {dir}/p.json: `instance_type` must be a string",),
    ),
    Case(
        "sft/empty_dataset",
        lambda c: train_on_empty(c, "sft"),
        ValueError,
        ("The paired (train) dataset is empty",),
    ),
]


test_bad_input = bad_input_test(BAD_INPUT, model=True)
