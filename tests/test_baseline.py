"""The more-data baseline (`pipeline.run_text_mix_baseline`): token SFT on the task's dialogues with the latent stages'
text-only corpus mixed in, so that a latent win cannot be just more data. What it trains on is checked record by
record against the text-only file the latent stages read."""

import json

import pytest

from trl_latent.data.pretrain import load_pretrain_corpus
from trl_latent.experiments.shapes import pipeline
from trl_latent.experiments.shapes.models import tiny_vlm_path
from trl_latent.experiments.shapes.pipeline import PipelineConfig, prepare_task, run_text_mix_baseline
from trl_latent.experiments.shapes.task_data import write_synthetic_task


def _key(messages) -> str:
    """A record's dialogue with every content as typed text parts (the form the SFT data holds), as a string."""
    typed = []
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        typed.append({"role": m["role"], "content": [{"type": p["type"], "text": p.get("text")} for p in parts]})
    return json.dumps(typed, sort_keys=True)


@pytest.fixture(scope="module")
def baseline(tiny_cache, tmp_path_factory):
    """The baseline at the quick size (one SFT step), the datasets `prepare_task` built, and every dataset the
    baseline's SFT was given."""
    root = tmp_path_factory.mktemp("baseline")
    config = PipelineConfig.quick(cache_dir=str(tiny_cache), task_sft_steps=1)
    data, eval_sets, processor = prepare_task(config, root / "data")
    trained_on = []
    stock_sft = pipeline._stock_sft

    def recording(model, processor, dataset, *args, **kwargs):
        trained_on.append(dataset)
        return stock_sft(model, processor, dataset, *args, **kwargs)

    pipeline._stock_sft = recording
    try:
        result = run_text_mix_baseline(
            tiny_vlm_path(config.size, seed=config.seed, cache_dir=config.cache_dir),
            processor,
            data,
            eval_sets,
            config,
            root / "text",
            evaluate=lambda model, processor, eval_sets, config: {split: {"evaluated": True} for split in eval_sets},
        )
    finally:
        pipeline._stock_sft = stock_sft
    # The text-only corpus the latent stages read, loaded again from the file the task wrote.
    task = write_synthetic_task(
        root / "data", seed=config.seed, image_size=config.image_size, n_paired=config.n_paired,
        n_text_only=config.n_text_only,
    )  # fmt: skip
    text_file = load_pretrain_corpus(task.path(task.text_only_file)).text
    return {"config": config, "data": data, "result": result, "trained_on": trained_on, "text_file": text_file}


def test_the_baseline_trains_on_every_text_only_record_and_every_task_dialogue(baseline):
    (dataset,) = baseline["trained_on"]  # one SFT run
    data, text_file = baseline["data"], baseline["text_file"]
    assert len(text_file) > 0 and len(data["task_sft"]) > 0
    keys = [_key(row["messages"]) for row in dataset]
    text_keys = [_key(messages) for messages in text_file["messages"]]
    task_keys = [_key(messages) for messages in data["task_sft"]["messages"]]
    # Every record of both, and nothing else: as many rows as the two together (measured: 64 dialogues + 32 texts).
    assert len(dataset) == len(text_keys) + len(task_keys)
    assert sorted(keys) == sorted(text_keys + task_keys)
    # The text-only records carry no image; the task dialogues keep theirs.
    images = {key: len(row["images"]) for key, row in zip(keys, dataset)}
    assert all(images[k] == 0 for k in text_keys) and all(images[k] == 1 for k in task_keys)
    # Mixed, not appended: the first batch already holds both kinds.
    first = keys[: baseline["config"].batch_size]
    assert set(first) & set(text_keys) and set(first) & set(task_keys)


def test_the_token_arm_and_the_baseline_differ_only_by_the_text_only_corpus(baseline):
    data, text_file = baseline["data"], baseline["text_file"]
    text_keys = {_key(messages) for messages in text_file["messages"]}
    assert not text_keys & {_key(messages) for messages in data["task_sft"]["messages"]}
    result = baseline["result"]
    assert result["sft"]["steps"] == 1 and 0.0 < result["sft"]["answer_token_accuracy"] <= 1.0
    assert result["eval_sft"] == {split: {"evaluated": True} for split in ("id", "ood", "held_out")}
