"""`trl-latent plan` (`commands.plan`): its exit statuses, its errors on bad input, and the output docs/plan.md shows."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.paths import ROOT
from trl_latent import cli

IDS = {"3b": "Qwen/Qwen2.5-VL-3B-Instruct", "7b": "Qwen/Qwen2.5-VL-7B-Instruct"}


# ------------------------------------------------------------------------------------------------- bad input
def run_cli(capsys, *argv):
    code = cli.main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_stage_is_a_clear_error(capsys):
    code, out, err = run_cli(capsys, IDS["3b"], "--stage", "stage7")
    assert code == 2 and out == ""
    assert "Unknown stage 'stage7'" in err and "5 (world_sft)" in err and "grpo" in err


def test_missing_model_path_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, str(tmp_path / "no-such-model"), "--stage", "1")
    assert code == 2 and "not found" in err and "no-such-model" in err and "config.json" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, str(tmp_path / "empty"), "--stage", "1")
    assert code == 2 and "holds no config.json" in err


def test_a_plan_that_does_not_fit_exits_nonzero_with_what_to_try(capsys):
    code, out, err = run_cli(
        capsys, IDS["7b"], "--stage", "5", "--zero", "ddp", "--num-gpus", "1", "--gpu-memory", "24"
    )
    assert code == 1
    assert err.strip() == "trl-latent plan: DDP does not fit 1 GPU(s) of 24 GiB. What to try is printed above."
    assert "ZeRO-3 fits on" in out and "--num-gpus" in out  # more GPUs with ZeRO-3
    assert "ZeRO-3 + CPU offload" in out and "LoRA" in out and "--lora-r 16" in out
    assert out.count("--lora-r 16") == 1  # the advice is printed once
    assert "DDP does not fit" in out  # the table is printed too


@pytest.mark.parametrize("flag", [["--codebook-size", "0"], ["--codebook-size", "-4"], ["--policy-layers", "-1"]])
def test_a_bad_latent_size_is_a_clear_error(capsys, flag):
    code, out, err = run_cli(capsys, IDS["3b"], "--stage", "grpo", *flag)
    assert code == 2 and out == "" and err.startswith("trl-latent plan: error: ") and len(err.splitlines()) == 1


def test_a_plan_that_fits_exits_zero(capsys):
    code, out, err = run_cli(capsys, IDS["3b"], "--stage", "grpo", "--zero", "3", "--num-gpus", "8")
    assert code == 0 and err == "" and "ZeRO-3 fits." in out


# ------------------------------------------------------------------------------------------------- docs
def test_docs_example_output_is_what_the_command_prints(capsys):
    doc = (ROOT / "docs" / "plan.md").read_text()
    examples = re.findall(r"```console\n\$ trl-latent (plan .*?)\n(.*?)```", doc, flags=re.S)
    assert examples, "docs/plan.md shows no `trl-latent plan` example"
    for command, shown in examples:
        code = cli.main(command.split())
        out, _ = capsys.readouterr()
        assert out == shown, f"docs/plan.md is out of date for `trl-latent {command}`:\n{out}"
        assert code in (0, 1)


def test_the_registered_parser_runs_make_plan_with_its_defaults(capsys):
    """`add_parser` registers `plan` with `run` as its function and `make_plan`'s own defaults; `run` prints the table
    and gives exit status 0 when the chosen strategy fits."""
    import argparse
    import inspect

    from trl_latent.commands import plan as plan_command
    from trl_latent.planning import make_plan

    root = argparse.ArgumentParser(prog="trl-latent")
    plan_command.add_parser(root.add_subparsers())
    args = root.parse_args(["plan", IDS["3b"], "--stage", "grpo", "--zero", "3", "--num-gpus", "8"])
    assert args.func is plan_command.run
    defaults = inspect.signature(make_plan).parameters
    for name in ("batch_size", "seq_len", "image_tokens", "precision"):
        assert getattr(args, name) == defaults[name].default, name
    assert plan_command.run(args) == 0
    out, err = capsys.readouterr()
    assert "ZeRO-3 fits." in out and "<- chosen" in out and err == ""
