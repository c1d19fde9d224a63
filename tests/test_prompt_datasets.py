"""Datasets of the user's own (`trl_latent.data.prompt_datasets`): read from files and saved folders, every row checked
before a model loads with the bad row named; `trl-latent grpo --dataset_name ... --reward_funcs ...` and `trl-latent
sft --dataset_name ...` as docs/recipes.md documents them."""

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from PIL import Image

from trl_latent.data.prompt_datasets import check_prompt_dataset, check_sft_dataset, load_prompt_dataset

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


def _documented_commands(heading: str) -> list[list[str]]:
    """The commands of a section of docs/recipes.md, one per line, continuation lines joined."""
    page = (ROOT / "docs" / "recipes.md").read_text()
    section = page.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def documented_dataset_command() -> list[str]:
    """The `trl-latent grpo --dataset_name ...` command of docs/recipes.md."""
    return _documented_commands("Your own prompts and rewards")[0]


def documented_eval_command() -> list[str]:
    """The `trl-latent eval --dataset_name ...` command of docs/recipes.md."""
    return _documented_commands("Your own prompts and rewards")[1]


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


def test_the_documented_eval_command_scores_with_a_reward_function(user_folder, capsys):
    """`eval --dataset_name ... --reward my_rewards.keyword_reward`: the reward function is the score (here the keyword
    rate of each model's answers, recomputed from the written generations), one row per model."""
    from trl_latent.cli import main

    command = documented_eval_command()
    assert command[:2] == ["trl-latent", "eval"]
    models = command[command.index("--models") + 1 : command.index("--dataset_name")]
    assert main(["grpo", *documented_dataset_command()[2:], *TINY]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(command[1:]) == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    keywords = [json.loads(line)["keyword"] for line in Path("prompts.jsonl").read_text().splitlines()]
    for model in models:
        name = Path(model).name
        result = json.loads(Path(f"outputs/my-eval/{name}/evaluation.json").read_text())
        (samples,) = result["samples"].values()
        rates = [sum(k in s["generations"][r] for s, k in zip(samples, keywords)) / len(keywords) for r in range(2)]
        assert result["summary"]["train"]["judge_per_generation"] == pytest.approx(rates)
        assert result["config"]["judge_counters"] == {"judge/judgements": 8.0, "judge/failed": 0.0}
        assert f"| {name} | train | 4 |" in table
    Path("p2.jsonl").write_text(json.dumps({"prompt": "Hi", "keyword": "a"}) + "\n")
    assert main(["eval", "--models", models[0], "--dataset_name", "p2.jsonl", "--splits", "train"]) == 2
    assert "reward 'judge' scores with a task's rubric" in " ".join(capsys.readouterr().err.split())
    assert (
        main(["eval", "--models", models[0], "--dataset_name", "p2.jsonl", "--reward", "my_rewards.keyword_reward"])
        == 2
    )
    assert "is one file, so its only split is 'train'" in capsys.readouterr().err


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


# ------------------------------------------------------------------------------------------------ SFT dialogues
def _chat(question, answer):
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


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


def documented_sft_commands() -> list[list[str]]:
    """The two `trl-latent sft --dataset_name ...` commands of docs/recipes.md."""
    return _documented_commands("Your own dialogues")


DIALOGUES = [
    {"messages": _chat(f"Where is the {c} one?", f"The {c} one is on the {p}.")}
    for c in ("red", "blue", "green", "yellow")
    for p in ("left", "right")
]


def test_the_documented_sft_commands_train_on_a_users_dialogues(user_folder, tiny_cache, capsys):
    """Stage 5 moves only the base's last layer (and the tied embeddings and final norm) and lowers the loss; token SFT
    moves the plain model; both from the documented commands, the hub id swapped for the tiny Llama."""
    from test_text_only_base import base_path

    from trl_latent.cli import main
    from trl_latent.modeling import LatentActionModel

    Path("dialogues.jsonl").write_text("".join(json.dumps(row) + "\n" for row in DIALOGUES))
    world, token = documented_sft_commands()
    assert world[:3] == ["trl-latent", "sft", "--stage"] and token[:3] == ["trl-latent", "sft", "--action_space"]
    tiny = [*TINY, "--learning_rate", "2e-3", "--world_sft_last_layers", "1"]
    assert main(world[1:] + tiny) == 0, capsys.readouterr().err
    assert "stage world_sft, 8 records" in capsys.readouterr().out
    start = LatentActionModel.from_pretrained("outputs/my-latent-model").state_dict()
    trained = LatentActionModel.from_pretrained("outputs/my-world-sft").state_dict()
    moved = {name for name in start if not start[name].equal(trained[name])}
    assert any(name.startswith("base.model.layers.1.") for name in moved)
    assert all(name.startswith("base.") and "layers.0." not in name for name in moved)
    state = json.loads(Path("outputs/my-world-sft/checkpoint-8/trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), losses

    hub_id = token[token.index("--base_model") + 1]
    token[token.index("--base_model") + 1] = str(base_path(tiny_cache, "llama"))
    assert hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    token_tiny = [*TINY, "--learning_rate", "2e-3"]
    assert main(token[1:] + token_tiny) == 0, capsys.readouterr().err
    state = json.loads(Path("outputs/my-token-sft/checkpoint-8/trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), losses


def test_sft_dataset_problems_stop_before_the_model_loads(user_folder, capsys, monkeypatch):
    from trl_latent.cli import main

    monkeypatch.setattr("trl_latent.training.latent_sft_trainer.LatentSFTTrainer.__init__", _no_model)
    base = ["sft", "--model_name_or_path", "outputs/my-latent-model", "--output_dir", "out", *TINY]
    Path("bad.jsonl").write_text(
        "".join(json.dumps({"messages": m}) + "\n" for m in (_chat("Hi", "Yo"), _chat("Hi", "Yo")[:1]))
    )
    assert main([*base, "--stage", "world_sft", "--dataset_name", "bad.jsonl"]) == 2
    assert "dataset_name bad.jsonl row 1: the messages hold no assistant turn" in capsys.readouterr().err
    assert main([*base, "--stage", "joint", "--dataset_name", "bad.jsonl"]) == 2
    assert "stage joint reads the pretraining corpus: set paired_files" in " ".join(capsys.readouterr().err.split())
    assert (
        main([*base, "--stage", "world_sft", "--dataset_name", "bad.jsonl", "--task", "mmrole", "--task_root", "."])
        == 2
    )
    assert "set either task (with task_root) or dataset_name, not both" in " ".join(capsys.readouterr().err.split())
