"""`LatentSFTConfig`: the per-stage defaults and the validation of its fields. No model, milliseconds."""

import pytest

from tests.fixtures.configs import sft_config as config
from trl_latent.training.latent_sft_config import LatentSFTConfig


def test_config_defaults_follow_the_stage():
    assert config(stage="inverse_warmup").learning_rate == 1e-4
    assert config(stage="projector_warmup").learning_rate == 1e-3
    assert config(stage="world_sft").learning_rate == 5e-5
    assert config(stage="world_sft").num_train_epochs == 3
    assert config(stage="joint").num_train_epochs == 1
    assert config(stage="joint", learning_rate=3e-3).learning_rate == 3e-3
    c = config(stage="joint")
    assert (c.entropy_weight, c.projector_weight, c.cycle_weight) == (1e-3, 1e-5, 1e-5)
    assert c.world_sft_last_layers == 8 and not c.skip_bad_records
    assert c.remove_unused_columns is False and c.dataset_kwargs["skip_prepare_dataset"] is True
    assert not c.activation_checkpointing


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"entropy_weight": -1.0}, "entropy_weight must be >= 0"),
        ({"cycle_weight": -1e-5}, "cycle_weight must be >= 0"),
        ({"world_sft_last_layers": -1}, "world_sft_last_layers must be >= 0"),
        ({"remove_unused_columns": True}, "remove_unused_columns"),
        ({"packing": True}, "packing and padding_free are not supported"),
        ({"gradient_checkpointing": True}, "checkpointing is not supported"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(**kwargs)


def test_the_health_check_settings_are_checked():
    with pytest.raises(ValueError, match=r"health_samples must be >= 0 \(got -1\)"):
        LatentSFTConfig("out", use_cpu=True, report_to="none", health_samples=-1)
    with pytest.raises(ValueError, match=r"health_logits_budget must be >= 0 \(got -5\)"):
        LatentSFTConfig("out", use_cpu=True, report_to="none", health_logits_budget=-5)
