"""`commands.task_data`: the commands' datasets: the task's data roots, a dataset of the user's own (prompts cut to
`max_samples`, prompt-completion rows as one conversation), each problem named before a model loads."""

import json
from pathlib import Path

import pytest
from datasets import Dataset

from tests.fixtures.commands import CPU, RECIPE, fails, fake_latent_model
from tests.fixtures.text import chat as _chat


def test_the_commands_prompts_keep_max_samples_and_name_an_empty_split(tmp_path):
    """`load_prompts` (grpo's prompts): a `dataset_name` split cut to `max_samples`, and an empty file refused."""
    from trl_latent.commands.running import CommandError
    from trl_latent.commands.task_data import load_prompts

    class Args:
        task = None
        dataset_name = str(tmp_path / "p.jsonl")
        dataset_config = None
        dataset_train_split = None
        max_samples = 2

    Path(Args.dataset_name).write_text("".join(json.dumps({"prompt": f"Say {i}."}) + "\n" for i in range(5)))
    assert load_prompts(Args, takes_images=False, what="grpo")["prompt"] == ["Say 0.", "Say 1."]
    from datasets import Features, Value

    empty = tmp_path / "empty.parquet"
    Dataset.from_dict({"prompt": []}, features=Features({"prompt": Value("string")})).to_parquet(str(empty))
    Args.dataset_name, Args.max_samples = str(empty), None
    with pytest.raises(CommandError, match="empty.parquet: no rows could be read from it .*; is the file empty"):
        load_prompts(Args, takes_images=False, what="grpo")


def test_stage_5_reads_prompt_completion_rows_as_one_conversation(tmp_path):
    """Stage 5 reads `messages` only: prompt-completion rows (string or conversational) become the conversation a
    `messages` row would be; plain `text` rows are refused for it and kept for token SFT."""
    from trl_latent.commands.running import CommandError
    from trl_latent.commands.task_data import load_dialogues

    class Args:
        task = None
        dataset_name = str(tmp_path / "d.jsonl")
        dataset_config = None
        dataset_train_split = None
        max_samples = None

    rows = [{"prompt": "Where is it?", "completion": "On the left."}]
    Path(Args.dataset_name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_dialogues(Args, False, "world_sft", conversational=True)["messages"] == [
        _chat("Where is it?", "On the left.")
    ]
    assert load_dialogues(Args, False, "token SFT", conversational=False)["completion"] == ["On the left."]
    Path(Args.dataset_name).write_text(json.dumps({"text": "Once."}) + "\n")
    with pytest.raises(CommandError, match="holds plain 'text' rows"):
        load_dialogues(Args, False, "world_sft", conversational=True)
    assert load_dialogues(Args, False, "token SFT", conversational=False)["text"] == ["Once."]


def test_dataset_roots_without_the_expected_files(tmp_path, capsys, no_model_loading):
    model = fake_latent_model(tmp_path / "stage4")
    (tmp_path / "empty").mkdir()
    world = ["sft", "--config", str(RECIPE / "mmrole" / "5_world_sft.yaml"), *CPU, "--model_name_or_path", model]
    message = fails([*world, "--task_root", str(tmp_path / "empty")], capsys)
    assert f"cannot load the mmrole data under {tmp_path / 'empty'}" in message
    assert "No in-distribution 'comment' dialogues" in message and "MMRole dataset folder" in message
    message = fails([*world, "--task_root", str(tmp_path / "nowhere")], capsys)
    assert f"task_root {tmp_path / 'nowhere'} does not exist" in message

    pcog = ["sft", "--config", str(RECIPE / "pcogalign" / "5_world_sft.yaml"), *CPU, "--model_name_or_path", model]
    message = fails([*pcog, "--task_root", str(tmp_path / "empty")], capsys)
    assert "HCMAS-golden-train.json (or .jsonl); it was not found" in message

    paired = ["sft", "--config", str(RECIPE / "1_inverse_warmup.yaml"), *CPU, "--base_model", model]
    message = fails([*paired, "--paired_files", str(tmp_path / "paired.jsonl")], capsys)
    assert f"paired_files: {tmp_path / 'paired.jsonl'} does not exist" in message

    # A synthetic root that exists but lacks the pretraining corpus's images.
    (tmp_path / "corpus.json").write_text(json.dumps([{"id": "p0", "images": ["img/0.png"], "messages": [
        {"role": "user", "content": "<image>\nDescribe."}, {"role": "assistant", "content": "A dot."}]}]))  # fmt: skip
    message = fails([*paired, "--paired_files", str(tmp_path / "corpus.json")], capsys)
    assert "id='p0'" in message and "image 'img/0.png' not found" in message
