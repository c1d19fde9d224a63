"""`commands.parsing`: YAML values and command-line overrides, and a missing file, an unknown key or stage and an
invalid configuration refused before any model loads."""

import pytest
import yaml

from tests.fixtures.commands import CPU, RECIPE, fails, write_yaml
from trl_latent.cli import main


def test_yaml_values_and_command_line_overrides():
    from trl_latent.commands import parsing, sft

    argv = ["--config", str(RECIPE / "3_joint.yaml"), "--learning_rate", "3e-5", "--use_cycle_loss", "false", *CPU]
    script_args, training_args, model_args = parsing.parse(sft.make_parser(), argv, "trl-latent sft")
    assert training_args.stage == "joint" and training_args.num_train_epochs == 1  # from the YAML
    assert training_args.learning_rate == 3e-5 and training_args.use_cycle_loss is False  # the command line wins
    assert model_args.model_name_or_path == "outputs/qwen2.5-vl-3b/2_projector_warmup"  # TRL's ModelConfig field
    assert script_args.text_only_files == ["data/pretrain/text_only.jsonl"]


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


# ------------------------------------------------------------------------------------------------ extends
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_config_extends_another_and_the_command_line_wins(tmp_path):
    """`extends` (relative to the extending file) merges the other file's keys under this one's, chains, and merges
    `env` key by key; the command line still wins over both, and a key unknown to the command is named even when it
    comes from the extended file."""
    from trl_latent.commands.grpo import make_parser
    from trl_latent.commands.parsing import load_config, parse
    from trl_latent.commands.running import CommandError

    _write(tmp_path / "base" / "a.yaml", "learning_rate: 1.0e-5\nbeta: 0.02\nenv:\n  A: '1'\n  B: '1'\n")
    _write(tmp_path / "mid.yaml", "extends: base/a.yaml\nbeta: 0.03\nseed: 7\n")
    child = _write(tmp_path / "deep" / "child.yaml", "extends: ../mid.yaml\nseed: 8\nenv:\n  B: '2'\n")
    assert load_config(child) == {"learning_rate": 1e-5, "beta": 0.03, "seed": 8, "env": {"A": "1", "B": "2"}}

    argv = ["--config", str(child), "--output_dir", str(tmp_path / "out"), "--beta", "0.05", "--use_cpu", "true"]
    script_args, training_args, _ = parse(make_parser("latent"), argv, "trl-latent grpo")
    assert (training_args.learning_rate, training_args.beta, training_args.seed) == (1e-5, 0.05, 8)

    _write(tmp_path / "base" / "a.yaml", "learning_rte: 1.0e-5\n")
    with pytest.raises(CommandError, match=r"unknown key\(s\) 'learning_rte' \(did you mean 'learning_rate'\?\)"):
        parse(make_parser("latent"), argv, "trl-latent grpo")


@pytest.mark.parametrize(
    "files, message",
    [
        ({"c.yaml": "extends: missing.yaml\n"}, r"c.yaml: extends .*missing.yaml, which does not exist"),
        (
            {"c.yaml": "extends: d.yaml\n", "d.yaml": "extends: c.yaml\n"},
            r"extends c.yaml makes a loop \(.*c.yaml -> .*d.yaml -> .*c.yaml\)",
        ),
        ({"c.yaml": "extends: [a.yaml]\n"}, r"extends takes the path of another YAML config, got \['a.yaml'\]"),
        ({"c.yaml": "extends: d.yaml\n", "d.yaml": "- a\n- b\n"}, "d.yaml must hold a YAML mapping"),
    ],
)
def test_a_bad_extends_is_named(tmp_path, files, message):
    from trl_latent.commands.parsing import load_config
    from trl_latent.commands.running import CommandError

    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(CommandError, match=message):
        load_config(tmp_path / "c.yaml")
