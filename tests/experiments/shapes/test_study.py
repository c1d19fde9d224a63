"""The study: a resumable grid of latent vs token RL cells with shared prefixes, its tables and plots."""

import json
import math

import pytest
from PIL import Image

import trl_latent.experiments.shapes.pipeline as pipeline
from trl_latent.cli import main
from trl_latent.experiments.shapes.pipeline import PipelineConfig
from trl_latent.experiments.shapes.reports import FIGURE_SIZE, PLOTS
from trl_latent.experiments.shapes.study import STUDY_VERSION, Cell, finished, grid, load_cells, select

CELLS = ["grpo-token-s0", "grpo-latent-s0"]


def test_default_grid_names_every_loss_seed_arm_and_ablation():
    cells = grid()
    names = [c.name for c in cells]
    assert len(names) == len(set(names)) == 4 * 3 * 2 + 3 * 3
    assert {"dr_grpo-token-s2", "bnpo-latent-s0", "grpo-latent-no_projector-s1"} <= set(names)
    assert [c.name for c in select(cells, ["grpo-latent-*-s0"])] == [
        "grpo-latent-no_cycle_loss-s0",
        "grpo-latent-no_projector-s0",
        "grpo-latent-no_text_only-s0",
    ]
    assert [c.name for c in select(cells, ["dapo-token-s1,bnpo-latent-s2"])] == ["dapo-token-s1", "bnpo-latent-s2"]
    with pytest.raises(ValueError, match="match no cell"):
        select(cells, ["ppo-*"])
    ablated = Cell("grpo", "latent", 1, "no_cycle_loss").config(PipelineConfig.quick())
    assert (ablated.seed, ablated.loss, ablated.use_cycle_loss, ablated.use_projector) == (1, "grpo", False, True)


def test_quick_study_two_cells_report_and_resume(tmp_path, tiny_cache, monkeypatch, capsys):
    trained: list[str] = []
    real_train = pipeline.train_with_progress

    def counting_train(trainer, title):
        trained.append(title)
        return real_train(trainer, title)

    monkeypatch.setattr(pipeline, "train_with_progress", counting_train)
    study = tmp_path / "study"
    argv = ["study", "--quick", "--study-dir", str(study), "--cells-dir", str(study / "cells"), "--seeds", "0"]
    argv += ["--cells", *CELLS]
    argv += ["--cache-dir", str(tiny_cache)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # A heading per cell and a progress bar per phase (stderr), not the Trainer's dict per logging step.
    assert "== cell grpo-latent-s0" in out and "{'loss'" not in out and "'train_runtime'" not in out
    config = PipelineConfig.quick(cache_dir=str(tiny_cache))
    # Both cells share one pretrained base; every phase trained exactly once.
    assert sorted(trained) == sorted(
        [
            "pretraining the base VLM",
            "token arm: task SFT",
            "token arm: grpo over tokens",
            "baseline: task SFT + text-only corpus",  # the more-data baseline, in the token cell
            *(f"latent arm: {s}" for s in ("inverse_warmup", "projector_warmup", "joint", "policy_bc", "world_sft")),
            "latent arm: grpo over latent actions",
        ]
    )

    cells = {name: json.loads((study / "cells" / f"{name}.json").read_text()) for name in CELLS}
    for name, cell in cells.items():
        assert (cell["name"], cell["loss"], cell["seed"], cell["ablation"]) == (name, "grpo", 0, "full")
        assert cell["study_version"] == STUDY_VERSION
        assert cell["config"] == {**config.__dict__}
        assert len(cell["reward_curve"]) == cell["rl"]["steps"] == config.rl_steps
        assert cell["rl"]["seconds_per_step"] > 0
        assert set(cell["eval"]) == set(cell["eval_start"]) == {"id", "ood", "held_out"}
        for split in ("id", "ood", "held_out"):
            ev = cell["eval"][split]
            assert 0.0 <= ev["all"] <= 1.0 and math.isfinite(ev["reward"])
            assert ev["all_std"] >= 0.0 and ev["eval_generations"] == config.eval_generations
            assert 0.0 <= ev["diversity/distinct_2"] <= 1.0 and 0.0 <= ev["diversity/self_bleu"] <= 1.0
            assert ev["diversity/embedding"] >= 1.0 - 1e-4  # reciprocal of a mean cosine similarity <= 1
            assert set(cell["eval_start"][split]) == set(ev)
        assert isinstance(cell["health"], dict) and cell["environment"]["versions"]["torch"]
    assert cells["grpo-token-s0"]["codes"] is None and cells["grpo-token-s0"]["method"] == "token"
    # The more-data baseline (SFT with the text-only corpus, no RL) rides in the token cell, on every split.
    baseline = cells["grpo-token-s0"]["baseline"]
    assert (
        set(baseline["eval_sft"]) == {"id", "ood", "held_out"} and 0.0 <= baseline["sft"]["answer_token_accuracy"] <= 1
    )
    assert cells["grpo-latent-s0"]["baseline"] is None
    assert 0.0 <= cells["grpo-token-s0"]["base"]["pretrain"]["answer_token_accuracy"] <= 1.0
    codes = cells["grpo-latent-s0"]["codes"]
    assert len(codes["histogram"]) == codes["num_codes"] == config.codebook_size
    assert sum(codes["histogram"]) == codes["steps"] > 0
    assert codes["used"] == sum(1 for c in codes["histogram"] if c)
    assert 0.0 <= codes["entropy"] <= math.log(codes["used"]) + 1e-9
    assert "latent/code_entropy" in cells["grpo-latent-s0"]["rl"]["curves"]
    assert not (study / "work").exists()

    # The report: the main table holds each cell's numbers (one seed: std 0), the plots are PNGs of the set size.
    report = (study / "results.md").read_text()
    assert "Smoke-size numbers" in report
    for method in ("token", "latent"):
        ev = cells[f"grpo-{method}-s0"]["eval"]
        row = next(line for line in report.splitlines() if line.startswith(f"| grpo | {method} | 1 |"))
        for split in ("id", "ood", "held_out"):
            assert f"{ev[split]['reward']:.3f} ± 0.000" in row
        assert f"{ev['id']['diversity/embedding']:.3f} ± 0.000" in row
    held_out_reward = baseline["eval_sft"]["held_out"]["reward"]
    row = next(line for line in report.splitlines() if line.startswith("| token: SFT with the text-only corpus"))
    assert f"{held_out_reward:.3f} ± 0.000" in row and row.split(" | ")[1] == "1"
    assert "| held-out combos accuracy | held-out combos reward |" in report
    assert "| RL has room: token SFT's ID all-correct between 0.2 and 0.7 |" in report
    for name in PLOTS:
        assert f"![{name}](results/{name}.png)" in report
        with Image.open(study / "results" / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == FIGURE_SIZE
            image.verify()

    # A rerun skips the finished cells: nothing trains and their JSONs are untouched.
    stamps = {name: (study / "cells" / f"{name}.json").stat().st_mtime_ns for name in CELLS}
    trained.clear()
    capsys.readouterr()
    assert main(argv) == 0
    assert trained == []
    assert "0 cells run, 2 already finished" in capsys.readouterr().out
    assert {name: (study / "cells" / f"{name}.json").stat().st_mtime_ns for name in CELLS} == stamps

    # A lost cell reruns from its cached prefix (only RL trains) and reproduces its numbers exactly.
    (study / "cells" / "grpo-latent-s0.json").unlink()
    assert main(argv) == 0
    assert trained == ["latent arm: grpo over latent actions"]
    again = json.loads((study / "cells" / "grpo-latent-s0.json").read_text())
    for key in ("reward_curve", "eval", "eval_start", "codes"):
        assert again[key] == cells["grpo-latent-s0"][key], key

    # The same study dir with another size is refused, naming the cell file and the differing field.
    with pytest.raises(ValueError, match=r"grpo-token-s0\.json was run with another config .*rl_steps"):
        main([*argv, "--rl-steps", "3"])
    # A cell run before a config field existed counts as run with the field's default; any other value differs.
    path = study / "cells" / "grpo-token-s0.json"
    saved = json.loads(path.read_text())
    del saved["config"]["world_sft_bc_weight"]
    saved["config"]["extra"] = {}  # a field since removed from PipelineConfig (never read) no longer matters
    path.write_text(json.dumps(saved))
    assert finished(study / "cells", Cell("grpo", "token", 0), PipelineConfig.quick())
    with pytest.raises(ValueError, match=r"another config \(differs in \['world_sft_bc_weight'\]\)"):
        finished(study / "cells", Cell("grpo", "token", 0), PipelineConfig.quick(world_sft_bc_weight=1.0))
    # A cell of the previous study version (no `study_version`) is never counted as finished nor reported.
    del saved["study_version"]
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"grpo-token-s0\.json is a cell of study version 1, this code's is 2"):
        finished(study / "cells", Cell("grpo", "token", 0), PipelineConfig.quick())
    with pytest.raises(ValueError, match="study version 1"):
        load_cells(study / "cells")
    saved["study_version"] = STUDY_VERSION
    path.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(["study", "--quick", "--cells-dir", str(study / "cells"), "--seeds", "0", "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 4 * 2 + 3
    assert "grpo-token-s0" in listing[0] and listing[0].endswith("finished")
    assert next(line for line in listing if line.startswith("bnpo-latent-s0")).endswith("to run")


def test_report_without_cells_says_what_to_run(tmp_path, capsys):
    assert main(["study", "--report", "--cells-dir", str(tmp_path / "cells")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"trl-latent study: No finished cells in {tmp_path / 'cells'}: run `trl-latent study` (all cells) or "
        "`trl-latent study --cells ...` first; `trl-latent study --list` shows the grid."
    ]
