"""`trl-latent grpo` (`commands.grpo`): latent RL on a dataset of the user's own with reward functions of the user's
own, as docs/recipes.md documents it, TRL's model flags, and its input checks before any model loads."""

import json
import re
from pathlib import Path

import pytest

from tests.fixtures.commands import CPU, RECIPE, fails, fake_latent_model
from tests.fixtures.commands import refuse_to_load as _no_model
from tests.fixtures.documented_commands import TINY, documented_dataset_command
from trl_latent.cli import main


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
    assert any(entry["frac_reward_zero_std"] < 1 for entry in logs), "no group's rewards varied: nothing to learn"
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


def test_grpo_max_samples_zero_is_refused(tmp_path, capsys, no_model_loading):
    model = fake_latent_model(tmp_path / "stage5")
    rl = ["grpo", "--config", str(RECIPE / "mmrole" / "6_grpo.yaml"), *CPU, "--model_name_or_path", model]
    assert "max_samples must be at least 1" in fails([*rl, "--max_samples", "0"], capsys)


def test_grpo_takes_trls_model_flags_and_eval_reloads_the_adapter(tmp_path, shapes, tiny_cache, capsys, monkeypatch):
    """`grpo --use_peft --lora_r 4 ...` (TRL's ModelConfig flags) trains a LoRA adapter on the policy of a saved latent
    model, whose output folder `eval --models` then loads (the adapter merged) with no other flag; `--dtype` reaches
    the loader; flags that cannot apply to a latent model are refused."""
    from tests.fixtures.models import tiny_vlm, tiny_vlm_path
    from trl_latent.modeling import LatentActionModel

    monkeypatch.chdir(tmp_path)
    start = tmp_path / "stage5"
    LatentActionModel.from_base(
        str(tiny_vlm_path("tiny", cache_dir=tiny_cache)), codebook_size=8, inverse_layers=1, policy_layers=1
    ).save_pretrained(start)
    tiny_vlm("tiny", cache_dir=tiny_cache)[1].save_pretrained(start)
    rl = ["grpo", "--config", str(RECIPE / "mmrole" / "6_grpo.yaml"), *CPU, "--model_name_or_path", str(start)]
    rl += ["--task_root", str(shapes), "--image_size", "56", "56", "--max_samples", "4", "--max_steps", "2"]
    rl += [
        "--reward_funcs",
        "trl_latent.experiments.shapes.reward.rubric_reward",
        "--per_device_train_batch_size",
        "4",
    ]
    rl += ["--num_generations", "2", "--gradient_accumulation_steps", "1", "--max_completion_length", "6"]
    rl += ["--code_top_k", "8", "--learning_rate", "1e-2", "--save_strategy", "no", "--output_dir", "rl"]
    assert main([*rl, "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--dtype", "float32"]) == 0
    adapter = json.loads((tmp_path / "rl" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(start)
    assert r"\bpolicy\.layers" in adapter["target_modules"]  # TRL's default targets, put on the policy

    capsys.readouterr()
    argv = ["eval", "--task", "mmrole", "--task_root", str(shapes), "--models", "rl", "--splits", "id_test"]
    argv += ["--reward", "trl_latent.experiments.shapes.reward.RubricJudge", "--image_size", "56", "56"]
    argv += ["--max_samples", "2", "--num_generations", "1", "--max_new_tokens", "4", "--embedder", "none"]
    assert main([*argv, "--output_dir", "ev"]) == 0
    assert "| rl | id_test | 2 |" in capsys.readouterr().out
    # `inspect` takes the adapter folder too: the codes' report of the adapted policy
    argv = ["inspect", "--model_name_or_path", "rl", "--task", "mmrole", "--task_root", str(shapes)]
    argv += ["--image_size", "56", "56", "--max_records", "2", "--batch_size", "2", "--output_dir", "codes"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sum(row["count"] for row in json.loads((tmp_path / "codes" / "codes.json").read_text())) > 0

    message = fails([*rl, "--attn_implementation", "eager"], capsys)
    assert "attn_implementation cannot be set for a latent action model" in message

    # `--load_in_4bit`: the frozen base loads in 4 bits (bitsandbytes, on the CPU here) and RL still trains the policy.
    # sampled tokens make a group's answers differ, so the two steps have advantages to follow (as the recipe test)
    assert (
        main(
            [*rl, "--load_in_4bit", "true", "--dtype", "float32", "--token_strategy", "sample", "--output_dir", "rl4"]
        )
        == 0
    )
    trained = LatentActionModel.from_pretrained("rl4").state_dict()
    begun = LatentActionModel.from_pretrained(str(start)).state_dict()
    moved = {name.split(".")[0] for name in begun if name in trained and not begun[name].equal(trained[name])}
    assert moved == {"policy"}, moved

    # The same flags on `sft`: stage 5 with a LoRA adapter on the base, saved beside the latent modules.
    world = ["sft", "--config", str(RECIPE / "mmrole" / "5_world_sft.yaml"), *CPU, "--model_name_or_path", str(start)]
    world += ["--task_root", str(shapes), "--image_size", "56", "56", "--max_samples", "4", "--max_steps", "1"]
    world += [
        "--world_sft_last_layers",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
    ]
    world += ["--save_strategy", "no", "--output_dir", "world", "--use_peft", "true", "--lora_r", "4"]
    assert main([*world, "--lora_target_modules", "q_proj", "v_proj", "--dtype", "float32"]) == 0
    adapter = json.loads((tmp_path / "world" / "base_adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}


def test_each_action_space_parses_into_its_rl_config():
    """`make_parser`: latent RL parses into `LatentGRPOConfig`, the token baseline into `TokenGRPOConfig`, both beside
    the script's arguments and TRL's `ModelConfig`."""
    from trl import ModelConfig

    from trl_latent.commands import grpo
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.token_grpo_config import TokenGRPOConfig

    assert grpo.make_parser().dataclass_types == [grpo.GRPOScriptArguments, LatentGRPOConfig, ModelConfig]
    assert grpo.make_parser("token").dataclass_types == [grpo.GRPOScriptArguments, TokenGRPOConfig, ModelConfig]
