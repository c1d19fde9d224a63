"""`modeling.saving`: a truncated or corrupt weight file fails with its name and what to do."""

import pytest
import torch
from safetensors.torch import save_file

from tests.fixtures.bad_input import (
    Case,
    bad_input_test,
    first_shard,
    load_saved,
    moved_base,
    saved_model,
    truncate_file,
)
from trl_latent.modeling.saving import check_weight_files, load_safetensors


def test_intact_weights_load_and_truncated_ones_are_named(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(folder / "model.safetensors"))
    check_weight_files(folder)
    assert torch.equal(load_safetensors(folder / "model.safetensors")["w"], torch.arange(1000, dtype=torch.float32))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors cannot be read .*truncated or corrupt"):
        check_weight_files(folder)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_safetensors(folder / "model.safetensors")


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case(
        "model/truncated_safetensors",
        lambda c: load_saved(f) if truncate_file((f := saved_model(c)) / "model.safetensors") else None,
        ValueError,
        ("{dir}/saved/model.safetensors cannot be read", "truncated or corrupt"),
    ),
    Case(
        "model/truncated_shard",
        lambda c: load_saved(f) if truncate_file(first_shard(f := saved_model(c, shards=True))) else None,
        ValueError,
        ("{dir}/saved/model-00001-of-", "truncated or corrupt"),
    ),
    Case(
        "model/missing_shard",
        lambda c: load_saved(f) if first_shard(f := saved_model(c, shards=True)).unlink() is None else None,
        FileNotFoundError,
        ("{dir}/saved/model-00001-of-", "is missing (a shard named in model.safetensors.index.json)"),
    ),
    Case(
        "model/no_config_json",
        lambda c: load_saved(f) if (f := saved_model(c)).joinpath("config.json").unlink() is None else None,
        FileNotFoundError,
        ("{dir}/saved has no config.json", "not a saved latent model"),
    ),
    Case(
        "model/base_folder_moved",
        moved_base,
        FileNotFoundError,
        ("{dir}/old_place/base, which does not exist (moved or deleted?)", "base_model=", "base_model_name_or_path"),
    ),
]


test_bad_input = bad_input_test(BAD_INPUT, model=True)
