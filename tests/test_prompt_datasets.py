"""Prompt datasets of the user's own (`trl_latent.data.prompt_datasets`): read from files and saved folders, every row
checked before a model loads with the bad row named, and `trl-latent grpo --dataset_name ... --reward_funcs ...` as
docs/recipes.md documents it."""

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from PIL import Image

from trl_latent.data.prompt_datasets import check_prompt_dataset, load_prompt_dataset

ROOT = Path(__file__).resolve().parents[1]
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


# ------------------------------------------------------------------------------------------------ the command
MY_REWARDS = """
def length_reward(completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def keyword_reward(completions, keyword, **kwargs):
    return [float(k in c) for c, k in zip(completions, keyword)]
"""
TINY = [
    "--use_cpu",
    "true",
    "--bf16",
    "false",
    "--logging_steps",
    "1",
    "--save_strategy",
    "steps",
    "--save_steps",
    "2",
]


def documented_dataset_command() -> list[str]:
    """The `trl-latent grpo --dataset_name ...` command of docs/recipes.md, continuation lines joined."""
    page = (ROOT / "docs" / "recipes.md").read_text()
    section = page.split("## Your own prompts and rewards", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return shlex.split(block.replace("\\\n", " "))


@pytest.fixture
def user_folder(tiny_cache, tmp_path, monkeypatch):
    """A user's folder as the documented command expects it: a latent model, prompts.jsonl and my_rewards.py."""
    from test_text_only_base import SMALL, base_path

    from trl_latent.modeling import LatentActionModel

    monkeypatch.chdir(tmp_path)
    # an untrained world model whose tokens follow the codes (as conftest's steerable model), so rewards vary in a group
    model = LatentActionModel.from_base(
        str(base_path(tiny_cache, "llama")), world_output="residual_minus_base", **SMALL
    )
    with torch.no_grad():
        model.codebook.proj.weight.mul_(100.0)
    model.save_pretrained("outputs/my-latent-model")
    rows = [{"prompt": f"Where is the {c} one?", "keyword": c} for c in ("red", "blue", "green", "star")]
    Path("prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    Path("my_rewards.py").write_text(MY_REWARDS)
    yield tmp_path
    import sys

    sys.modules.pop("my_rewards", None)


def test_the_documented_dataset_command_trains_with_two_weighted_rewards(user_folder, capsys):
    from trl_latent.cli import main
    from trl_latent.modeling import LatentActionModel

    command = documented_dataset_command()
    assert command[:2] == ["trl-latent", "grpo"]
    assert main(command[1:] + TINY) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert (
        "latent RL on 4 prompts of prompts.jsonl, rewards ['my_rewards.length_reward', 'my_rewards.keyword_reward']"
        in out
    )
    state = json.loads(Path("outputs/my-latent-grpo/checkpoint-2/trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "reward" in entry]
    assert len(logs) == 2
    for entry in logs:  # GRPO's reward is the weighted sum of the two, as reward_weights 1.0 0.5 say
        parts = entry["rewards/length_reward/mean"] * 1.0 + entry["rewards/keyword_reward/mean"] * 0.5
        assert entry["reward"] == pytest.approx(parts, abs=1e-5)
    start = LatentActionModel.from_pretrained("outputs/my-latent-model").state_dict()
    trained = LatentActionModel.from_pretrained("outputs/my-latent-grpo").state_dict()
    moved = {name for name in start if not start[name].equal(trained[name])}
    assert moved and all(name.startswith("policy.") for name in moved)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--reward_weights", "1.0"], r"reward_weights has 1 weight\(s\) for 2 reward_funcs"),
        (["--task", "mmrole", "--task_root", "."], "set either task .* or dataset_name, not both"),
        (["--dataset_train_split", "rl"], "is one file, so its only split is 'train'"),
    ],
)
def test_dataset_command_problems_stop_before_the_model_loads(user_folder, capsys, extra, message, monkeypatch):
    from trl_latent.cli import main

    command = documented_dataset_command()[1:]
    command[command.index("--reward_weights") : command.index("--reward_weights") + 3] = []
    monkeypatch.setattr("trl_latent.training.latent_grpo_trainer.LatentGRPOTrainer.__init__", _no_model)
    assert main(command + TINY + extra) == 2
    assert re.search(message, " ".join(capsys.readouterr().err.split()))


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")


def test_a_bad_row_and_a_judge_without_a_task_are_named(user_folder, capsys, monkeypatch):
    from trl_latent.cli import main

    monkeypatch.setattr("trl_latent.training.latent_grpo_trainer.LatentGRPOTrainer.__init__", _no_model)
    Path("bad.jsonl").write_text(json.dumps({"prompt": "Hi"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    base = ["grpo", "--model_name_or_path", "outputs/my-latent-model", "--output_dir", "out", *TINY]
    assert main([*base, "--dataset_name", "bad.jsonl", "--reward_funcs", "my_rewards.length_reward"]) == 2
    assert "dataset_name bad.jsonl row 1: the prompt is empty" in capsys.readouterr().err
    assert main([*base, "--dataset_name", "prompts.jsonl"]) == 2  # reward_funcs defaults to the judge
    assert "reward_funcs 'judge' scores with a task's rubric" in " ".join(capsys.readouterr().err.split())
    Path("images.jsonl").write_text(json.dumps({"prompt": "Hi", "image": "a.png"}) + "\n")
    assert main([*base, "--dataset_name", "images.jsonl", "--reward_funcs", "think_format_reward"]) == 2
    assert "has an 'image' column, but the model reads no images" in capsys.readouterr().err


def test_an_empty_reward_list_is_refused():
    from trl_latent.commands.rewards import RewardFuncsArguments, build_reward_funcs
    from trl_latent.commands.running import CommandError

    with pytest.raises(CommandError, match="reward_funcs is empty: give at least one reward"):
        build_reward_funcs(RewardFuncsArguments(reward_funcs=[]), task=None, reward_weights=None)
    rewards = build_reward_funcs(RewardFuncsArguments(reward_funcs=["think_format_reward"]), None, [2.0])
    assert [reward.__name__ for reward in rewards] == ["think_format_reward"]


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
