"""`planning.counting`: stage and strategy names, and the modules counted on the `meta` model."""

from __future__ import annotations

import pytest


def test_stage_and_strategy_names_resolve_and_bad_ones_name_the_choices():
    from trl_latent.planning.counting import PlanError, resolve_plan_stage
    from trl_latent.planning.memory import resolve_strategy

    assert [resolve_plan_stage(s) for s in ("1", "joint", "RL", "6", "grpo")] == [
        "inverse_warmup",
        "joint",
        "grpo",
        "grpo",
        "grpo",
    ]
    with pytest.raises(PlanError, match=r"Unknown stage '9'.*1 \(inverse_warmup\)"):
        resolve_plan_stage("9")
    assert [resolve_strategy(z) for z in (None, 0, "2", "zero-3", "zero3_offload")] == [
        None,
        "ddp",
        "zero2",
        "zero3",
        "zero3_offload",
    ]
    with pytest.raises(PlanError, match="Unknown ZeRO setting 1: choose one of ddp, zero2, zero3, zero3_offload"):
        resolve_strategy(1)


def test_counted_modules_add_up_to_the_meta_model():
    from trl_latent.planning.counting import build_meta_model, count_modules, load_model_config, set_stage_trainable
    from trl_latent.planning.memory import layer_values

    config, _ = load_model_config("Qwen/Qwen2.5-VL-3B-Instruct", codebook_size=16, inverse_layers=1, policy_layers=1)
    model = build_meta_model(config)
    set_stage_trainable(model, "policy_bc")
    counts = count_modules(model)
    assert sum(c.params for c in counts) == sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable == sum(c.trainable for c in counts) < sum(c.params for c in counts) / 10
    assert layer_values(2048, 256, 11008) == 8 * 2048 + 2 * 256 + 4 * 11008
