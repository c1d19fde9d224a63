"""Fixtures the test files of `trl_latent.commands` share: a refusal to load any model, the small shapes task, and a
user's folder as the documented commands expect it."""

import json
from pathlib import Path

import pytest
import torch

from tests.fixtures.documented_commands import MY_REWARDS
from tests.fixtures.text_only import SMALL, base_path


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


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_task(root, sessions_per_file=2, ood_sessions_per_character=1, n_paired=8, n_text_only=8)
    return root


@pytest.fixture
def user_folder(tiny_cache, tmp_path, monkeypatch):
    """A user's folder as the documented command expects it: a latent model, prompts.jsonl and my_rewards.py."""
    from trl_latent.modeling import LatentActionModel

    monkeypatch.chdir(tmp_path)
    # an untrained world model whose tokens follow the codes (as conftest's steerable model), so rewards vary in a group
    # The same latent modules in every run (and the caller's random state untouched): an unseeded model made the
    # documented grpo test depend on whatever earlier tests left in torch's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
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
