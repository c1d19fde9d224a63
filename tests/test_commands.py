"""The stage commands: help, YAML + command-line parsing, bad input (a clear error before any model is loaded), the
synthetic task with the offline rubric, and `inspect`. The recipes themselves run in tests/test_recipes.py."""

import json
import math
from pathlib import Path

import pytest
import yaml

from trl_latent.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "recipes" / "qwen2.5-vl-3b"
CPU = ["--use_cpu", "true", "--bf16", "false"]  # the recipes train in bf16 on GPUs


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any model load fails the test: bad input must be refused before."""
    import transformers

    from trl_latent.modeling.model import LatentActionModel

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(LatentActionModel, "from_base", classmethod(refuse))
    monkeypatch.setattr(LatentActionModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", classmethod(refuse))


def fails(argv, capsys) -> str:
    """Run a command that must fail on its input; returns its error message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    return " ".join(err.split())


def write_yaml(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def fake_latent_model(folder: Path) -> str:
    """A folder that passes the saved-latent-model check (config.json only): enough for input checks."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "latent_action"}))
    return str(folder)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_task(root, sessions_per_file=2, ood_sessions_per_character=1, n_paired=8, n_text_only=8)
    return root


# ------------------------------------------------------------------------------------------------ help, parsing
def test_help_lists_the_commands_and_every_field(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("sft", "grpo", "eval", "inspect", "demo"):
        assert command in out

    def help_of(argv):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        return capsys.readouterr().out

    sft = help_of(["sft", "--help"])
    assert "usage: trl-latent sft" in sft
    assert "--config FILE.yaml" in sft
    for flag in ("--stage", "--base_model", "--paired_files", "--task_root", "--learning_rate",
                 "--entropy_weight", "--use_cycle_loss", "--world_sft_last_layers"):  # fmt: skip
        assert flag in sft, flag
    assert "{inverse_warmup,projector_warmup,joint,policy_bc,world_sft}" in sft
    token_sft = help_of(["sft", "--action_space", "token", "--help"])
    assert "--assistant_only_loss" in token_sft and "--stage" not in token_sft
    grpo = help_of(["grpo", "-h"])
    for flag in (
        "--loss",
        "--code_top_k",
        "--num_generations",
        "--beta",
        "--judge_base_url",
        "--reward_funcs",
        "--dataset_name",
        "--dataset_train_split",
    ):
        assert flag in grpo, flag
    assert "--code_top_k" not in help_of(["grpo", "--action_space", "token", "--help"])
    assert "--num_generations" in help_of(["eval", "--help"])
    assert "--code_source" in help_of(["inspect", "--help"])


def test_argparse_commands_take_both_flag_spellings_and_show_their_own_usage(capsys):
    """`plan`, `demo`, `study`, `text-study` and `write-synthetic` take `--num_gpus` as `--num-gpus` (the stage
    commands' TRL parsers take both), and a bad flag shows the command's usage, not the top level's."""
    plan = ["plan", "Qwen/Qwen2.5-VL-3B-Instruct", "--stage", "grpo", "--zero", "3"]
    assert main([*plan, "--num-gpus", "8", "--gpu-memory", "40"]) == 0
    dashed = capsys.readouterr().out
    assert main([*plan, "--num_gpus", "8", "--gpu_memory", "40"]) == 0
    assert capsys.readouterr().out == dashed and "8 GPU" in dashed
    for command in (
        ["plan", "x", "--stage", "1"],
        ["demo"],
        ["study"],
        ["text-study", "run"],
        ["write-synthetic", "x"],
    ):
        with pytest.raises(SystemExit) as info:
            main([*command, "--no-such-flag"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1].endswith("error: unrecognized arguments: --no-such-flag"), err
        assert f"usage: trl-latent {command[0]}" in err
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "The embedded end-to-end job on the shapes role-play task" in capsys.readouterr().out


def test_yaml_values_and_command_line_overrides():
    from trl_latent.commands import parsing, sft

    argv = ["--config", str(RECIPE / "3_joint.yaml"), "--learning_rate", "3e-5", "--use_cycle_loss", "false", *CPU]
    script_args, training_args, model_args = parsing.parse(sft.make_parser(), argv, "trl-latent sft")
    assert training_args.stage == "joint" and training_args.num_train_epochs == 1  # from the YAML
    assert training_args.learning_rate == 3e-5 and training_args.use_cycle_loss is False  # the command line wins
    assert model_args.model_name_or_path == "outputs/qwen2.5-vl-3b/2_projector_warmup"  # TRL's ModelConfig field
    assert script_args.text_only_files == ["data/pretrain/text_only.jsonl"]


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_config_file(capsys, no_model_loading):
    message = fails(["sft", "--config", "no/such/stage.yaml"], capsys)
    assert "config file no/such/stage.yaml not found" in message and "examples/recipes" in message


def test_unknown_key_and_unknown_stage_in_yaml(tmp_path, capsys, no_model_loading):
    config = yaml.safe_load((RECIPE / "1_inverse_warmup.yaml").read_text())
    typo = dict(config, learnin_rate=1e-4)
    message = fails(["sft", "--config", write_yaml(tmp_path / "typo.yaml", typo)], capsys)
    assert "unknown key(s) 'learnin_rate' (did you mean 'learning_rate'?)" in message and "--help" in message

    stage = dict(config, stage="stage_7")
    message = fails(["sft", "--config", write_yaml(tmp_path / "stage.yaml", stage)], capsys)
    assert "stage: 'stage_7' is not one of ['inverse_warmup', 'projector_warmup', 'joint'" in message

    # A latent-only key in a token-baseline config: that parser is GRPOConfig's, which has no such field.
    token = yaml.safe_load((RECIPE / "mmrole" / "token_grpo.yaml").read_text())
    token["code_top_k"] = 32
    message = fails(["grpo", "--config", write_yaml(tmp_path / "token.yaml", token)], capsys)
    assert "unknown key(s) 'code_top_k'" in message

    with pytest.raises(SystemExit):  # on the command line, argparse names the valid choices itself
        main(["sft", "--config", str(RECIPE / "1_inverse_warmup.yaml"), "--stage", "stage_7"])
    assert "invalid choice: 'stage_7'" in capsys.readouterr().err


def test_model_paths_that_do_not_exist(tmp_path, capsys, no_model_loading, monkeypatch, tiny_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = fails(["sft", "--config", str(RECIPE / "2_projector_warmup.yaml"), *CPU], capsys)
    assert "model_name_or_path outputs/qwen2.5-vl-3b/1_inverse_warmup is not a saved latent action model" in message
    assert "run that stage first" in message

    base = ["sft", "--config", str(RECIPE / "1_inverse_warmup.yaml"), *CPU, "--base_model"]
    message = fails([*base, "Qwen/Not-A-Real-Model-VL"], capsys)
    assert "neither a local model folder nor a model in the local hub cache" in message
    assert "hf download Qwen/Not-A-Real-Model-VL" in message and "HF_HUB_OFFLINE=0" in message
    message = fails([*base, str(tmp_path / "models" / "missing" / "vlm")], capsys)
    assert "neither a local model folder" in message and "must exist before this command runs" in message

    from trl_latent.experiments.shapes.models import tiny_vlm_path

    tiny = str(tiny_vlm_path("tiny", cache_dir=tiny_cache))
    message = fails(
        ["sft", "--config", str(RECIPE / "2_projector_warmup.yaml"), *CPU, "--model_name_or_path", tiny], capsys
    )
    assert "holds a 'qwen2_5_vl' model, not a latent action model" in message and "base_model" in message
    message = fails([*base, tiny, "--model_name_or_path", tiny], capsys)
    assert "exactly one of base_model" in message
    # grpo does not have base_model: it says what latent RL starts from, or how to run token RL instead.
    grpo = ["grpo", "--config", str(RECIPE / "mmrole" / "6_grpo.yaml"), *CPU, "--model_name_or_path", tiny]
    message = fails(grpo, capsys)
    assert "not a latent action model" in message and "base_model" not in message
    assert "stage 5 (world_sft)" in message and "action_space: token" in message


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


def test_judge_and_reward_problems(tmp_path, capsys, no_model_loading, shapes):
    model = fake_latent_model(tmp_path / "stage5")
    rl = ["grpo", "--config", str(RECIPE / "mmrole" / "6_grpo.yaml"), *CPU, "--model_name_or_path", model]
    rl += ["--task_root", str(shapes), "--image_size", "56", "56"]
    message = fails([*rl, "--judge_base_url", "http://127.0.0.1:9/v1", "--judge_timeout", "2"], capsys)
    assert "Cannot reach the judge at http://127.0.0.1:9/v1" in message
    message = fails([*rl, "--reward_funcs", "rubric"], capsys)
    assert "reward_funcs: 'rubric' is neither 'judge' nor a dotted import path" in message
    message = fails([*rl, "--reward_funcs", "think_format_reward", "no_such_package.reward"], capsys)
    assert "reward_funcs: cannot import module 'no_such_package'" in message
    message = fails([*rl, "--reward_funcs", "trl_latent.experiments.shapes.reward.no_such_reward"], capsys)
    assert "has no 'no_such_reward'" in message
    evaluation = ["eval", "--task", "mmrole", "--task_root", str(shapes), "--models", model]
    message = fails(evaluation, capsys)
    assert "the judge needs judge_base_url" in message and "my_judges.KeywordJudge" in message
    message = fails([*evaluation, "--reward", "trl_latent.paper.CODEBOOK_SIZE"], capsys)
    assert "is neither a judge nor a reward function" in message


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--codebook_size", "0"], "codebook_size must be at least 2 (got 0)"),
        (["--codebook_size", "-4"], "codebook_size must be at least 2 (got -4)"),
        (["--policy_layers", "0"], "policy_layers must be at least 1 (got 0)"),
        (["--max_samples", "0"], "max_samples must be at least 1"),
    ],
)
def test_out_of_range_sizes_are_refused_before_any_model(flags, fragment, capsys, no_model_loading):
    message = fails(["sft", "--config", str(RECIPE / "1_inverse_warmup.yaml"), *CPU, *flags], capsys)
    assert "invalid configuration" in message and fragment in message


def test_a_truncated_weights_file_is_named(tmp_path, capsys, no_model_loading, shapes):
    import torch
    from safetensors.torch import save_file

    model = fake_latent_model(tmp_path / "stage5")
    save_file({"w": torch.zeros(64, 64)}, str(tmp_path / "stage5" / "model.safetensors"))
    data = (tmp_path / "stage5" / "model.safetensors").read_bytes()
    (tmp_path / "stage5" / "model.safetensors").write_bytes(data[: len(data) // 2])  # an interrupted copy
    rl = ["grpo", "--config", str(RECIPE / "mmrole" / "6_grpo.yaml"), *CPU, "--model_name_or_path", model]
    message = fails(rl, capsys)
    assert f"model_name_or_path {model}: model.safetensors cannot be read" in message and "truncated" in message
    message = fails(["inspect", "--model_name_or_path", model, "--task", "mmrole", "--task_root", str(shapes)], capsys)
    assert "model.safetensors cannot be read" in message
    message = fails(["eval", "--task", "mmrole", "--task_root", str(shapes), "--models", model], capsys)
    assert f"models {model}: model.safetensors cannot be read" in message


def test_grpo_max_samples_zero_is_refused(tmp_path, capsys, no_model_loading):
    model = fake_latent_model(tmp_path / "stage5")
    rl = ["grpo", "--config", str(RECIPE / "mmrole" / "6_grpo.yaml"), *CPU, "--model_name_or_path", model]
    assert "max_samples must be at least 1" in fails([*rl, "--max_samples", "0"], capsys)


# ------------------------------------------------------------------------------------------------ working runs
def test_eval_on_the_synthetic_task_with_the_rubric(tmp_path, shapes, tiny_cache, capsys, monkeypatch):
    """`eval` with the offline rubric: the reported score is the rubric recomputed from the stored generations."""
    from trl_latent.experiments.shapes.models import tiny_vlm_path
    from trl_latent.experiments.shapes.reward import rubric_scores

    monkeypatch.chdir(tmp_path)
    tiny = str(tiny_vlm_path("tiny", cache_dir=tiny_cache))
    argv = ["eval", "--task", "mmrole", "--task_root", str(shapes), "--models", tiny]
    argv += ["--reward", "trl_latent.experiments.shapes.reward.RubricJudge"]
    argv += ["--image_size", "56", "56", "--max_samples", "3", "--num_generations", "2", "--max_new_tokens", "8"]
    argv += ["--temperature", "1.0", "--embedder", "none", "--output_dir", "out"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    name = Path(tiny).name
    saved = json.loads((tmp_path / "out" / name / "evaluation.json").read_text())
    assert (tmp_path / "out" / "evaluation.md").read_text() in printed
    from trl_latent.data.mmrole import load_mmrole

    tests = load_mmrole(shapes, splits=("id_test", "ood_test"), image_size=(56, 56))
    for split in ("id_test", "ood_test"):
        rows = tests[split].select(range(min(3, len(tests[split]))))
        samples = saved["samples"][split]
        assert [s["id"] for s in samples] == rows["id"]
        per_round = []
        for k in range(2):
            metrics = []
            for sample, row in zip(samples, rows):
                scores = rubric_scores(sample["generations"][k], row["reference"], row["character"], row["question"])
                metrics.append(sum(scores["response"][d] / scores["reference"][d] for d in scores["response"]) / 4)
                assert sample["judge_metric"][k] == pytest.approx(metrics[-1])
            per_round.append(sum(metrics) / len(metrics))
        summary = saved["summary"][split]
        mean = sum(per_round) / 2
        assert summary["judge_mean"] == pytest.approx(mean)
        # Sample std over the 2 rounds (divisor n - 1 = 1).
        assert summary["judge_std"] == pytest.approx(math.sqrt(sum((r - mean) ** 2 for r in per_round) / (2 - 1)))
        assert f"| {name} | {split} | {len(rows)} | {summary['judge_mean']:.3f} ± " in printed


def test_inspect_reports_usage_top_tokens_and_examples(tmp_path, shapes, tiny_cache, capsys):
    from transformers import AutoProcessor

    from trl_latent.experiments.shapes.models import tiny_vlm_path
    from trl_latent.modeling.model import LatentActionModel

    tiny = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    model = LatentActionModel.from_base(str(tiny), codebook_size=8, inverse_layers=1, policy_layers=1)
    model.save_pretrained(tmp_path / "latent")
    AutoProcessor.from_pretrained(tiny).save_pretrained(tmp_path / "latent")

    argv = ["inspect", "--model_name_or_path", str(tmp_path / "latent"), "--task", "mmrole"]
    argv += ["--task_root", str(shapes), "--image_size", "56", "56", "--max_records", "3", "--batch_size", "2"]
    argv += ["--code_source", "policy", "--examples", "2", "--output_dir", str(tmp_path / "codes")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "codes" / "codes.json").read_text())
    assert [row["code"] for row in report] == list(range(8))
    used = [row for row in report if row["count"] > 0]
    assert used and sum(row["frequency"] for row in report) == pytest.approx(1.0)
    for row in report:
        assert len(row["examples"]) == min(2, row["count"])
        assert all(isinstance(ex["context"], str) and ex["context"] for ex in row["examples"])
        assert len(row["top_tokens"]) <= 5 and all(0 < share <= 1 for _, share in row["top_tokens"])
    assert f"{len(used)} of 8 codes used on 3 records (policy codes)" in printed
    assert printed.count("\n| ") >= len(used)  # one table row per used code


def test_a_reward_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    """As TRL's scripts do: `--reward my_rewards.length_reward` finds ./my_rewards.py without PYTHONPATH."""
    import sys

    from trl_latent.commands.rewards import import_reward
    from trl_latent.commands.running import CommandError

    (tmp_path / "my_rewards_for_test.py").write_text(
        "def length_reward(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    reward = import_reward("my_rewards_for_test.length_reward")
    assert reward(["ab", "abc"]) == [2.0, 3.0]
    with pytest.raises(CommandError, match=f"searched the working directory {tmp_path}"):
        import_reward("no_such_module_here.reward")
    sys.modules.pop("my_rewards_for_test", None)


def test_grpo_takes_trls_model_flags_and_eval_reloads_the_adapter(tmp_path, shapes, tiny_cache, capsys, monkeypatch):
    """`grpo --use_peft --lora_r 4 ...` (TRL's ModelConfig flags) trains a LoRA adapter on the policy of a saved latent
    model, whose output folder `eval --models` then loads (the adapter merged) with no other flag; `--dtype` reaches
    the loader; flags that cannot apply to a latent model are refused."""
    from trl_latent.experiments.shapes.models import tiny_vlm, tiny_vlm_path
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
