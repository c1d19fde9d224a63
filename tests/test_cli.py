"""`trl-latent` (`trl_latent.cli`): its help lists every command and field, and every command takes both flag
spellings and shows its own usage."""

import pytest

from trl_latent.cli import main


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
