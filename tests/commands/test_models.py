"""`commands.models`: model folders checked before any model loads (paths that do not exist, a folder of the wrong
kind, a truncated weights file, a PEFT adapter standing for its model)."""

import json

import pytest

from tests.fixtures.commands import CPU, RECIPE, fails, fake_latent_model


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

    from tests.fixtures.models import tiny_vlm_path

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


def test_a_latent_model_is_told_by_its_config_and_an_adapter_by_the_model_it_names(tmp_path):
    """`is_latent_model` and `check_latent_model` read a folder's config.json (no model loads); a folder holding a PEFT
    adapter stands for the model its adapter_config.json names."""
    from trl_latent.commands.models import adapter_start, check_latent_model, is_latent_model
    from trl_latent.commands.running import CommandError

    latent = fake_latent_model(tmp_path / "latent")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": latent}))
    assert adapter_start(str(adapter)) == latent and adapter_start(latent) is None
    assert is_latent_model(latent) and is_latent_model(str(adapter)) and not is_latent_model(str(plain))
    check_latent_model(latent)
    with pytest.raises(CommandError, match="holds a 'qwen2_5_vl' model, not a latent action model. To start from"):
        check_latent_model(str(plain))
    with pytest.raises(CommandError, match=r"is not a saved latent action model \(no folder with config.json\)"):
        check_latent_model(str(tmp_path / "missing"), command="grpo")
