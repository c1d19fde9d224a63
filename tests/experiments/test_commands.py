"""`experiments.commands`: the embedded job's subcommands; `demo --set` overrides any pipeline field."""


def test_demo_set_overrides_any_pipeline_field():
    import pytest

    from trl_latent.experiments.commands import _field_overrides

    assert _field_overrides(
        ["world_output_schedule=minus_base_then_merge_delta", "world_delta_scale=3", "bc_target=argmax"]
    ) == {
        "world_output_schedule": "minus_base_then_merge_delta",
        "world_delta_scale": 3,
        "bc_target": "argmax",
    }
    with pytest.raises(SystemExit, match="--set takes FIELD=VALUE with a PipelineConfig field"):
        _field_overrides(["no_such_field=1"])
    with pytest.raises(SystemExit, match="got 'bc_target'"):
        _field_overrides(["bc_target"])
