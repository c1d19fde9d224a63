"""The embedded end-to-end job at its quick size: every arm runs, results are written and the table is complete."""

import json
import math

from PIL import Image

from trl_latent.cli import main
from trl_latent.experiments.pipeline import PipelineConfig, format_results
from trl_latent.experiments.reports import FIGURE_SIZE, PLOTS
from trl_latent.training.stages import PRETRAIN_STAGE_NAMES


def test_quick_pipeline_end_to_end_through_the_cli(tmp_path, tiny_cache, capsys):
    # `make demo` runs `trl-latent demo`; `--quick` is the same job at a seconds-long size.
    code = main(["demo", "--quick", "--output-dir", str(tmp_path), "--cache-dir", str(tiny_cache)])
    out = capsys.readouterr().out
    assert code == 0
    config = PipelineConfig.quick(cache_dir=str(tiny_cache))
    saved = json.loads((tmp_path / "results.json").read_text())
    results = saved
    assert saved["config"] == {**config.__dict__}
    assert saved["config"]["loss"] == "grpo"
    # The latent arm ran every stage, each for its configured steps, saving and reloading between them.
    stages = results["latent"]["stages"]
    assert list(stages) == [*PRETRAIN_STAGE_NAMES, "world_sft"]
    for name, stage in stages.items():
        assert (tmp_path / "latent" / name / "config.json").exists(), name
        assert math.isfinite(stage["loss_first"]) and math.isfinite(stage["loss_last"])
    assert "projector/cycle" in stages["joint"] and "policy/bc_accuracy" in stages["policy_bc"]
    # Both RL arms ran the same number of steps with the same reward.
    for arm in ("token", "latent"):
        rl = results[arm]["rl"]
        assert rl["steps"] == config.rl_steps
        assert all(0.0 <= r <= 2.0 for r in rl["reward_curve"])
        for split in ("id", "ood"):
            ev = results[arm]["eval_rl"][split]
            assert 0.0 <= ev["all"] <= 1.0 and math.isfinite(ev["reward"])
            assert "diversity/distinct_2" in ev and "diversity/self_bleu" in ev
    # The saved latent model after world-model SFT holds the fine-tuned base (the base changed in stage 5).
    assert json.loads((tmp_path / "latent" / "world_sft" / "config.json").read_text())["base_weights_saved"]
    table = (tmp_path / "results.md").read_text()
    assert table.strip() == format_results(results)
    comparison, health = table.split("\n\n")[:2]
    rows = [line for line in comparison.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| base (pretrained stand-in)",
        "| token: SFT",
        "| token: SFT + grpo",
        "| latent: stages 1-5",
        "| latent: stages 1-5 + grpo",
    ]
    # The latent-space health after every stage, in the form that stage trained under (merge-delta by default).
    health_rows = [line.split(" | ") for line in health.splitlines()[2:]]
    assert [r[0] for r in health_rows] == [f"| {stage}" for stage in stages]
    assert {r[1] for r in health_rows} == {"merge_delta"}
    for row in health_rows:
        accuracies = [float(v) for v in row[2:6]]
        assert all(0.0 <= a <= 1.0 for a in accuracies) and accuracies[2] >= max(accuracies[:2])  # best >= any
        assert float(row[6]) >= 1.0  # controllability
    assert "latent/token" in table
    assert format_results(results) in out
    # The demo explains its columns and writes the study's plots for its own run.
    assert "Columns:" in out and "- self-BLEU:" in out
    for name in PLOTS:
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == FIGURE_SIZE


def test_demo_set_overrides_any_pipeline_field():
    import pytest

    from trl_latent.experiments.commands import _field_overrides

    assert _field_overrides(["world_output_schedule=authors", "world_delta_scale=3", "bc_target=argmax"]) == {
        "world_output_schedule": "authors",
        "world_delta_scale": 3,
        "bc_target": "argmax",
    }
    with pytest.raises(SystemExit, match="--set takes FIELD=VALUE with a PipelineConfig field"):
        _field_overrides(["no_such_field=1"])
    with pytest.raises(SystemExit, match="got 'bc_target'"):
        _field_overrides(["bc_target"])
