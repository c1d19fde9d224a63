"""`modeling.saving`: a truncated or corrupt weight file fails with its name and what to do."""

import pytest
import torch
from safetensors.torch import save_file

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
