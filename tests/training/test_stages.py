"""The stage table (`training.stages`): rows, ablation switches, weights, and what a config cannot run. No model,
milliseconds."""

import pytest

from tests.fixtures.configs import sft_config as config
from trl_latent.modeling.model import MODULE_GROUPS
from trl_latent.training.stages import STAGE_NAMES, STAGES, STREAMS, resolve_stage

ALL_ON = {
    "inverse_warmup": {"world/ce_paired": 1.0, "inverse/entropy": -1e-3},
    "projector_warmup": {"projector/nll_paired": 1.0, "projector/nll_inverse": 1.0},
    "joint": {
        "world/ce_paired": 1.0,
        "world/ce_text": 1.0,
        "inverse/entropy": -1e-3,
        "inverse/entropy_text": -1e-3,
        "projector/nll_paired": 1e-5,
        "projector/nll_inverse": 1e-5,
        "projector/cycle": 1e-5,
    },
    "policy_bc": {"policy/bc_paired": 1.0, "policy/bc_text": 1.0},
    "world_sft": {"world/ce_paired": 1.0},
}


def test_stage_names_and_rows_match_the_design():
    assert STAGE_NAMES == ("inverse_warmup", "projector_warmup", "joint", "policy_bc", "world_sft")
    assert STAGES["inverse_warmup"].trainable == ("inverse_dynamics", "codebook", "world_merge")
    assert STAGES["projector_warmup"].trainable == ("projector", "inverse_projector")
    assert set(STAGES["joint"].trainable) == {
        "inverse_dynamics",
        "codebook",
        "world_merge",
        "projector",
        "inverse_projector",
    }
    assert STAGES["policy_bc"].trainable == ("policy",)
    # world_sft: the base; the policy too only with world_sft_bc_weight > 0 (test_default_plan_weights_and_streams).
    assert STAGES["world_sft"].trainable == ("policy",) and STAGES["world_sft"].base_trainable
    assert STAGES["world_sft"].group_weights == {"policy": "world_sft_bc_weight"}
    assert not any(STAGES[s].base_trainable for s in STAGE_NAMES if s != "world_sft")
    assert STAGES["world_sft"].code_source == "policy" and STAGES["joint"].code_source == "inverse"
    for stage in STAGES.values():
        assert set(stage.trainable) <= set(MODULE_GROUPS)
        assert {t.stream for t in stage.terms} <= set(STREAMS)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_default_plan_weights_and_streams(stage):
    plan = resolve_stage(config(stage=stage))
    assert plan.weights == pytest.approx(ALL_ON[stage])
    expected_streams = ("paired", "text") if stage in ("joint", "policy_bc") else ("paired",)
    assert plan.streams == expected_streams
    assert plan.trainable == (() if stage == "world_sft" else STAGES[stage].trainable)


@pytest.mark.parametrize(
    "switch, removed",
    [
        ("use_cycle_loss", {"projector/cycle"}),
        ("use_projector", {"projector/cycle", "projector/nll_paired", "projector/nll_inverse"}),
        ("use_text_only", {"world/ce_text", "inverse/entropy_text", "projector/cycle"}),
    ],
)
def test_each_ablation_switch_removes_exactly_its_terms_in_joint(switch, removed):
    plan = resolve_stage(config(stage="joint", **{switch: False}))
    assert set(ALL_ON["joint"]) - set(plan.weights) == removed
    if switch == "use_projector":
        assert "projector" not in plan.trainable and "inverse_projector" not in plan.trainable
        assert plan.streams == ("paired", "text")  # text-only data still feeds the IDM, as raw e^T
    else:
        assert "projector" in plan.trainable
    if switch == "use_text_only":
        assert plan.streams == ("paired",)


def test_ablation_switches_in_policy_bc():
    assert set(resolve_stage(config(stage="policy_bc", use_text_only=False)).weights) == {"policy/bc_paired"}
    # Without the projector the policy still clones on text-only data (fed raw e^T): no term goes.
    assert set(resolve_stage(config(stage="policy_bc", use_projector=False)).weights) == set(ALL_ON["policy_bc"])
    assert set(resolve_stage(config(stage="policy_bc", use_cycle_loss=False)).weights) == set(ALL_ON["policy_bc"])


def test_loss_weights_come_from_the_config():
    plan = resolve_stage(config(stage="joint", entropy_weight=0.5, projector_weight=0.25, cycle_weight=2.0))
    assert plan.weights["inverse/entropy"] == -0.5 and plan.weights["inverse/entropy_text"] == -0.5
    assert plan.weights["projector/nll_paired"] == 0.25 and plan.weights["projector/cycle"] == 2.0
    # The projector warm-up always weighs its NLLs 1, whatever projector_weight says.
    assert resolve_stage(config(stage="projector_warmup", projector_weight=0.25)).weights["projector/nll_paired"] == 1


def test_unknown_stage_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown stage 'pretrain'.*inverse_warmup"):
        config(stage="pretrain")


def test_projector_warmup_without_projector_has_nothing_to_train():
    with pytest.raises(ValueError, match="nothing left to train.*skip it"):
        config(stage="projector_warmup", use_projector=False)
