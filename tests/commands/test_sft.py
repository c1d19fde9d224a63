"""`trl-latent sft` (`commands.sft`): the configuration each action space parses into, and the documented commands on
a user's own dialogues, their input checked before any model loads."""

import json
from pathlib import Path

import pytest

from tests.fixtures.commands import refuse_to_load as _no_model
from tests.fixtures.documented_commands import TINY, documented_sft_commands
from tests.fixtures.text import chat as _chat

DIALOGUES = [
    {"messages": _chat(f"Where is the {c} one?", f"The {c} one is on the {p}.")}
    for c in ("red", "blue", "green", "yellow")
    for p in ("left", "right")
]


def test_the_documented_sft_commands_train_on_a_users_dialogues(user_folder, tiny_cache, capsys):
    """Stage 5 moves only the base's last layer (and the tied embeddings and final norm) and lowers the loss; token SFT
    moves the plain model; both from the documented commands, the hub id swapped for the tiny Llama."""
    from tests.fixtures.text_only import base_path
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


def test_each_action_space_parses_into_its_training_config():
    """`make_parser`: a latent stage parses into `LatentSFTConfig`, the token baseline into TRL's `SFTConfig`, both
    beside the script's arguments and TRL's `ModelConfig`; the latent model's own size checks run on the script's
    arguments, before any model is built."""
    from trl import ModelConfig, SFTConfig

    from trl_latent.commands import sft
    from trl_latent.training.latent_sft_config import LatentSFTConfig

    assert sft.make_parser().dataclass_types == [sft.SFTScriptArguments, LatentSFTConfig, ModelConfig]
    assert sft.make_parser("token").dataclass_types == [sft.SFTScriptArguments, SFTConfig, ModelConfig]
    assert sft.SFTScriptArguments().action_space == "latent"
    with pytest.raises(ValueError, match=r"codebook_size must be at least 2 \(got 1\)"):
        sft.SFTScriptArguments(codebook_size=1)
