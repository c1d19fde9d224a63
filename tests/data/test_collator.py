"""`data.collator`: `LatentDataCollator` builds the streams' batches: the loss mask, 1:1 stream mixing, text-only
records as a text stream, image files opened per batch, and clear errors (or counted skips) for bad records."""

import pytest
import torch
from PIL import Image

from tests.fixtures.bad_input import Case, bad_input_test, collator_truncated_image
from tests.fixtures.images import image
from trl_latent.data.collator import LatentDataCollator
from trl_latent.data.pretrain import BadRecordError, load_pretrain_corpus, with_stream_indices
from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset


@pytest.fixture(scope="module")
def processor(tiny_cache):
    from transformers import AutoProcessor

    from tests.fixtures.models import tiny_vlm_path

    return AutoProcessor.from_pretrained(tiny_vlm_path("tiny", cache_dir=tiny_cache))


def test_loss_mask_covers_text_tokens_only(processor):
    records = [dict(r, paired_index=i) for i, r in enumerate(synthetic_sft_dataset(3))]
    batch = LatentDataCollator(processor)(records)
    paired = batch["paired"]
    assert set(paired) == {
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values",
        "image_grid_thw",
        "loss_mask",
    }
    mask, ids = paired["loss_mask"], paired["input_ids"]
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert not mask[ids == image_id].any()
    assert not mask[paired["attention_mask"] == 0].any()
    assert int((ids == image_id).sum()) == 3 * 4  # 56x56 images: 4 image tokens each
    # Every other real token counts (assistant_only_loss=False).
    assert torch.equal(mask, (paired["attention_mask"] == 1) & (ids != image_id))
    assert int(batch["skipped_records"]) == 0


def test_assistant_only_loss_masks_everything_but_the_answers(processor):
    from trl.chat_template_utils import get_training_chat_template

    dataset = synthetic_sft_dataset(2)
    records = [dict(r, paired_index=i) for i, r in enumerate(dataset)]
    collator = LatentDataCollator(
        processor, assistant_only_loss=True, chat_template=get_training_chat_template(processor)
    )
    paired = collator(records)["paired"]
    for row, record in zip(range(2), dataset):
        kept = processor.tokenizer.decode(paired["input_ids"][row][paired["loss_mask"][row]])
        assert kept.startswith(record["messages"][2]["content"][0]["text"])


def test_text_stream_is_mixed_one_to_one(processor, task):
    paired = load_pretrain_corpus(task.path(task.paired_file), image_root=task.root).paired
    text = load_pretrain_corpus(task.path(task.text_only_file)).text
    mixed = with_stream_indices(paired, text, seed=0)
    # One epoch sees each record of the larger (text) stream once, and cycles the paired one.
    assert len(mixed) == 12
    assert sorted(mixed["text_index"]) == list(range(12))
    assert mixed["paired_index"] == [i % 8 for i in range(12)]
    batch = LatentDataCollator(processor, text_dataset=text, streams=("paired", "text"))([mixed[i] for i in range(4)])
    assert batch["paired"]["input_ids"].shape[0] == batch["text"]["input_ids"].shape[0] == 4
    assert "pixel_values" not in batch["text"]
    first_text = text[mixed[0]["text_index"]]["messages"][2]["content"]
    assert first_text in processor.tokenizer.decode(batch["text"]["input_ids"][0])


def test_plain_text_records_form_a_text_stream(processor):
    from datasets import Dataset

    text = Dataset.from_list([{"text": "A red circle."}, {"text": "Two blue squares."}])
    records = [dict(r, paired_index=i, text_index=i) for i, r in enumerate(synthetic_sft_dataset(2))]
    batch = LatentDataCollator(processor, text_dataset=text, streams=("paired", "text"))(records)
    assert processor.tokenizer.decode(batch["text"]["input_ids"][1][batch["text"]["loss_mask"][1]]) == (
        "Two blue squares."
    )
    renamed = text.rename_column("text", "document")
    collator = LatentDataCollator(
        processor, text_dataset=renamed, streams=("paired", "text"), dataset_text_field="document"
    )
    assert torch.equal(collator(records)["text"]["input_ids"], batch["text"]["input_ids"])


def test_missing_image_in_a_paired_record(processor):
    records = [dict(r, paired_index=i) for i, r in enumerate(synthetic_sft_dataset(3))]
    records[1] = dict(records[1], images=[], id="dialogue-1")
    with pytest.raises(BadRecordError, match=r"paired record id='dialogue-1', row 1 has no image"):
        LatentDataCollator(processor)(records)
    collator = LatentDataCollator(processor, skip_bad_records=True)
    batch = collator(records)
    assert batch["paired"]["input_ids"].shape[0] == 2 and int(batch["skipped_records"]) == 1
    assert collator.skipped["no_image"] == 1
    # Task SFT accepts text-only dialogues, but not an image placeholder without its image.
    with pytest.raises(BadRecordError, match=r"id='dialogue-1', row 1 has 1 image placeholder\(s\) .* but 0 image"):
        LatentDataCollator(processor, paired_requires_image=False)(records)
    records[1]["messages"] = [
        {"role": m["role"], "content": [p for p in m["content"] if p["type"] == "text"]}
        for m in records[1]["messages"]
    ]
    assert LatentDataCollator(processor, paired_requires_image=False)(records)["paired"]["input_ids"].shape[0] == 3


def test_unreadable_or_vanished_image_file(processor, tmp_path):
    records = [dict(r, paired_index=i) for i, r in enumerate(synthetic_sft_dataset(2))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    records[0] = dict(records[0], images=[str(broken)], id="r0")
    with pytest.raises(BadRecordError, match=r"id='r0'.*broken.png.*cannot be read"):
        LatentDataCollator(processor)(records)
    records[0] = dict(records[0], images=[str(tmp_path / "gone.png")])
    with pytest.raises(BadRecordError, match=r"id='r0'.*gone.png.*not found"):
        LatentDataCollator(processor)(records)
    collator = LatentDataCollator(processor, skip_bad_records=True)
    assert int(collator(records)["skipped_records"]) == 1 and collator.skipped["missing_image"] == 1


def test_image_paths_are_opened_per_batch(processor, tmp_path):
    records = [dict(r, paired_index=i) for i, r in enumerate(synthetic_sft_dataset(1))]
    path = image(tmp_path / "a.png", "blue")
    from_path = LatentDataCollator(processor)([dict(records[0], images=[str(path)])])["paired"]
    from_pil = LatentDataCollator(processor)([dict(records[0], images=[Image.open(path)])])["paired"]
    assert torch.equal(from_path["pixel_values"], from_pil["pixel_values"])


def test_text_record_with_an_image_is_an_error(processor):
    from datasets import Dataset

    text = Dataset.from_list(list(synthetic_sft_dataset(1).remove_columns(["images"])))  # keeps its image part
    records = [dict(r, paired_index=0, text_index=0) for r in synthetic_sft_dataset(1)]
    with pytest.raises(BadRecordError, match="text-only record row 0 holds an image"):
        LatentDataCollator(processor, text_dataset=text, streams=("paired", "text"))(records)


def test_record_with_no_text_token_after_masking(processor):
    from trl.chat_template_utils import get_training_chat_template

    records = [dict(r, paired_index=i) for i, r in enumerate(synthetic_sft_dataset(2))]
    records[1] = dict(records[1], messages=records[1]["messages"][:2], id="no-answer")  # no assistant turn
    collator = LatentDataCollator(
        processor, assistant_only_loss=True, chat_template=get_training_chat_template(processor)
    )
    with pytest.raises(BadRecordError, match=r"id='no-answer'.*no text token to train on after masking"):
        collator(records)
    collator.skip_bad_records = True
    batch = collator(records)
    assert batch["paired"]["input_ids"].shape[0] == 1 and int(batch["skipped_records"]) == 1


def test_max_length_that_cuts_image_tokens_is_an_error(processor):
    records = [dict(r, paired_index=i) for i, r in enumerate(synthetic_sft_dataset(2))]
    ids = LatentDataCollator(processor)(records)["paired"]["input_ids"][0]
    first_image_token = int((ids == processor.image_token_id).nonzero()[0])
    cut = first_image_token + 2  # keeps 2 of the 4 image tokens
    with pytest.raises(
        ValueError, match=r"paired batch \(paired record row 0, paired record row 1\).*image. token count"
    ):
        LatentDataCollator(processor, max_length=cut)(records)
    assert LatentDataCollator(processor, max_length=first_image_token + 8)(records)["paired"]["input_ids"].shape[
        1
    ] == (first_image_token + 8)


def test_collator_needs_a_processor_and_the_text_dataset(processor):
    with pytest.raises(TypeError, match="ProcessorMixin"):
        LatentDataCollator(processor.tokenizer)
    with pytest.raises(ValueError, match="no text_dataset"):
        LatentDataCollator(processor, streams=("paired", "text"))


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case(
        "pretrain/truncated_image_in_batch",
        lambda c: collator_truncated_image(c, skip=False),
        BadRecordError,
        ("paired record id='img1', row 0: image", "cannot be read"),
    ),
    Case(
        "pretrain/truncated_image_in_batch_skipped",
        lambda c: collator_truncated_image(c, skip=True),
        fragments=("id='img1'", "cannot be read"),
        count=1,
    ),
]


test_bad_input = bad_input_test(BAD_INPUT, model=True)
