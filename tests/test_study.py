"""The study: a resumable grid of latent vs token RL cells with shared prefixes, its tables and plots."""

import json
import math

import pytest
from PIL import Image

import trl_latent.experiments.pipeline as pipeline
from trl_latent.cli import main
from trl_latent.experiments.pipeline import PipelineConfig
from trl_latent.experiments.prefix_cache import PrefixCache
from trl_latent.experiments.reports import FIGURE_SIZE, PLOTS
from trl_latent.experiments.study import Cell, finished, grid, select

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


def test_prefix_keys_follow_what_determines_each_prefix(tmp_path):
    cache, config = PrefixCache(tmp_path, tag="t"), PipelineConfig.quick()
    other_loss = Cell("dapo", "token", 0).config(config)
    no_cycle = Cell("grpo", "latent", 0, "no_cycle_loss").config(config)
    # The loss never changes a prefix; latent switches change the latent stages only; the seed changes everything.
    for phase in ("base", "token_sft", "latent/joint", "latent/world_sft"):
        assert cache.entry(phase, other_loss).path == cache.entry(phase, config).path
    assert cache.entry("token_sft", no_cycle).path == cache.entry("token_sft", config).path
    assert cache.entry("latent/joint", no_cycle).path != cache.entry("latent/joint", config).path
    assert cache.entry("base", Cell("grpo", "token", 1).config(config)).path != cache.entry("base", config).path
    # Stages 1-4 do not read the task-SFT budget; stage 5 does.
    longer_sft = PipelineConfig.quick(task_sft_steps=9)
    assert cache.entry("latent/policy_bc", longer_sft).path == cache.entry("latent/policy_bc", config).path
    assert cache.entry("latent/world_sft", longer_sft).path != cache.entry("latent/world_sft", config).path
    assert PrefixCache(tmp_path, tag="u").entry("base", config).path != cache.entry("base", config).path


def test_quick_study_two_cells_report_and_resume(tmp_path, tiny_cache, monkeypatch, capsys):
    trained: list[str] = []
    real_train = pipeline.train_with_progress

    def counting_train(trainer, title):
        trained.append(title)
        return real_train(trainer, title)

    monkeypatch.setattr(pipeline, "train_with_progress", counting_train)
    study = tmp_path / "study"
    argv = ["study", "--quick", "--study-dir", str(study), "--seeds", "0", "--cells", *CELLS]
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
            *(f"latent arm: {s}" for s in ("inverse_warmup", "projector_warmup", "joint", "policy_bc", "world_sft")),
            "latent arm: grpo over latent actions",
        ]
    )

    cells = {name: json.loads((study / "cells" / f"{name}.json").read_text()) for name in CELLS}
    for name, cell in cells.items():
        assert (cell["name"], cell["loss"], cell["seed"], cell["ablation"]) == (name, "grpo", 0, "full")
        assert cell["config"] == {**config.__dict__}
        assert len(cell["reward_curve"]) == cell["rl"]["steps"] == config.rl_steps
        assert cell["rl"]["seconds_per_step"] > 0
        for split in ("id", "ood"):
            ev = cell["eval"][split]
            assert 0.0 <= ev["all"] <= 1.0 and math.isfinite(ev["reward"])
            assert 0.0 <= ev["diversity/distinct_2"] <= 1.0 and 0.0 <= ev["diversity/self_bleu"] <= 1.0
            assert ev["diversity/embedding"] >= 1.0 - 1e-4  # reciprocal of a mean cosine similarity <= 1
            assert set(cell["eval_start"][split]) == set(ev)
        assert isinstance(cell["health"], dict) and cell["environment"]["versions"]["torch"]
    assert cells["grpo-token-s0"]["codes"] is None and cells["grpo-token-s0"]["method"] == "token"
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
        assert f"{ev['id']['reward']:.3f} ± 0.000" in row and f"{ev['ood']['reward']:.3f} ± 0.000" in row
        assert f"{ev['id']['diversity/embedding']:.3f} ± 0.000" in row
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
    assert finished(study, Cell("grpo", "token", 0), PipelineConfig.quick())
    with pytest.raises(ValueError, match=r"another config \(differs in \['world_sft_bc_weight'\]\)"):
        finished(study, Cell("grpo", "token", 0), PipelineConfig.quick(world_sft_bc_weight=1.0))
    capsys.readouterr()
    assert main(["study", "--quick", "--study-dir", str(study), "--seeds", "0", "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 4 * 2 + 3
    assert "grpo-token-s0" in listing[0] and listing[0].endswith("finished")
    assert next(line for line in listing if line.startswith("bnpo-latent-s0")).endswith("to run")


def _cell(loss, method, seed, reward, ablation="full", health=None):
    ev = {"all": reward / 2, "reward": reward, "diversity/distinct_2": 0.5, "diversity/self_bleu": 0.25}
    return {
        "name": f"{loss}-{method}-s{seed}",
        "loss": loss,
        "method": method,
        "ablation": ablation,
        "seed": seed,
        "eval": {"id": ev, "ood": {**ev, "reward": reward - 0.5}},
        "health": health or {},
    }


def test_tables_give_mean_and_sample_std_over_seeds():
    from trl_latent.experiments.reports import format_ablation_table, format_health_table, format_main_table

    cells = [_cell("dapo", "latent", s, r) for s, r in enumerate((0.6, 0.8, 1.0))]
    cells += [_cell("grpo", "token", 0, 0.7), _cell("grpo", "latent", 0, 0.9, "no_projector")]
    rows = format_main_table(cells).splitlines()
    # Rows in the paper's order (grpo before dapo); the ablated cell is not a main row; std is the sample std.
    assert rows[2].startswith("| grpo | token | 1 | 0.350 ± 0.000 | 0.700 ± 0.000 | 0.350 ± 0.000 | 0.200 ± 0.000 |")
    assert rows[3].startswith("| dapo | latent | 3 | 0.400 ± 0.100 | 0.800 ± 0.200 | 0.400 ± 0.100 | 0.300 ± 0.200 |")
    assert rows[3].endswith("| 0.500 ± 0.000 | 0.250 ± 0.000 | n/a |") and len(rows) == 4
    assert (
        format_ablation_table(cells).splitlines()[2].startswith("| grpo | without the projector | 1 | 0.450 ± 0.000")
    )
    assert format_health_table(cells) == ""
    health = [{"world_sft": {"reachability": v, "codes_used": 4}} for v in (0.5, 0.7)]
    table = format_health_table([_cell("grpo", "latent", s, 0.5, health=h) for s, h in enumerate(health)])
    assert (
        "| world_sft.reachability | 0.600 ± 0.141 |" in table and "| world_sft.codes_used | 4.000 ± 0.000 |" in table
    )
    # The pipeline's paths read as "stage: metric"; losses sharing one latent model share one column.
    health = {"stages.joint.health": {"health/controllability": 1.5}}
    shared = [_cell(loss, "latent", 0, 0.5, health=health) for loss in ("grpo", "dapo")]
    shared.append(_cell("grpo", "latent", 0, 0.5, "no_projector", health={"stages.joint.health": {"health/x": 1}}))
    rows = format_health_table(shared).splitlines()
    assert rows[0] == "| health entry | grpo = dapo | grpo, no_projector |"
    assert (
        rows[2] == "| joint: controllability | 1.500 ± 0.000 | n/a |"
        and rows[3] == "| joint: x | n/a | 1.000 ± 0.000 |"
    )


def test_only_the_known_harmless_messages_are_quieted():
    import logging
    import warnings

    from trl_latent.experiments.console import quiet_known_warnings

    def shown(logger_name, message):
        record = logging.LogRecord(logger_name, logging.WARNING, __file__, 1, message, None, None)
        return logging.getLogger(logger_name).filter(record)

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # the suite's own filters ignore deprecations; start from "show everything"
        warnings.simplefilter("always")
        quiet_known_warnings()  # its filters go in front
        for module in ("transformers.modeling_utils", "trl_latent.experiments.pipeline"):
            warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module=module)
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated", FutureWarning, "x.py", 1, module="m")
        warnings.warn_explicit("something else", FutureWarning, "x.py", 1, module="m")
    assert [(w.category, str(w.message)) for w in caught] == [
        (DeprecationWarning, "old API"),  # ours still shows
        (FutureWarning, "something else"),
    ]
    assert not shown("transformers.trainer_utils", "The tokenizer has new PAD/BOS/EOS tokens that differ from ...")
    assert shown("transformers.trainer_utils", "Some other problem")
    assert not shown("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, ...")
    assert shown("DeepSpeed", "ZeRO stage 3 is not supported here")


def test_gain_table_and_claims_follow_the_cells():
    from trl_latent.experiments.reports import check_claims, format_claims, format_gain_table

    def cell(loss, method, seed, before, after, embedding, ablation="full"):
        c = _cell(loss, method, seed, after, ablation)
        c["eval_start"] = {"id": {"reward": before}, "ood": {"reward": before - 0.5}}
        for split in ("id", "ood"):
            c["eval"][split]["diversity/embedding"] = embedding
        return c

    cells = []
    for seed in (0, 1):
        for loss in ("grpo", "dr_grpo", "dapo", "bnpo"):
            # latent beats token on grpo, dr_grpo, dapo; loses on bnpo
            latent_after = 0.9 if loss != "bnpo" else 0.6
            cells += [cell(loss, "token", seed, 0.7, 0.8, 1.0), cell(loss, "latent", seed, 0.6, latent_after, 1.2)]
        cells.append(cell("grpo", "latent", seed, 0.6, 0.95, 1.2, "no_projector"))
    rows = format_gain_table(cells).splitlines()
    assert rows[2] == (
        "| grpo | token | 2 | 0.700 ± 0.000 | 0.800 ± 0.000 | 0.100 ± 0.000 | 0.200 ± 0.000 | 0.300 ± 0.000 "
        "| 0.100 ± 0.000 |"
    )
    assert rows[3].split(" | ")[5] == "0.300 ± 0.000"  # latent ID gain 0.9 - 0.6
    claims = {claim: (measured, verdict) for claim, measured, verdict in check_claims(cells)}
    id_claim = claims["final ID reward of latent >= token for at least 3 of the 4 losses"]
    assert id_claim == ("3 of 4 losses (grpo, dr_grpo, dapo)", "met")
    diversity = claims["rollout embedding diversity of latent >= 1.15x token"]
    assert diversity[1] == "met" and diversity[0].startswith("latent / token 1.200")
    # the ablated model answers better on OOD than the full one: the claim is missed, not hidden
    assert claims["full latent model >= without the projector on OOD reward (grpo)"] == ("0.400 vs 0.450", "missed")
    assert "| missed |" in format_claims(cells)
    from trl_latent.experiments.reports import coinciding_losses

    # grpo, dr_grpo and dapo gave the same numbers here (bnpo's latent cells differ): each such pair is named once.
    assert [n.split(" gave")[0] for n in coinciding_losses(cells)] == [
        "grpo and dr_grpo",
        "grpo and dapo",
        "dr_grpo and dapo",
    ]
    cells[0]["eval"] = {"id": {"reward": 0.1}}  # grpo-token-s0 differs now: no pair with grpo is identical
    assert not any(n.startswith("grpo and") for n in coinciding_losses(cells))
    twins = [cell(loss, "token", 0, 0.7, 0.8, 1.0) for loss in ("dapo", "bnpo")]
    assert coinciding_losses(twins) == [
        "dapo and bnpo gave identical held-out numbers in all 1 cells they share: on one process with one optimisation "
        "step per generation batch, DAPO's normalisation by the batch's completion tokens is BNPO's, and the clipped "
        "ratio is exactly 1 on-policy, so clip-higher never acts."
    ]
    # Fewer than four losses cannot decide the first claim.
    two = [c for c in cells if c["loss"] in ("grpo", "dapo")]
    assert (
        dict((c, v) for c, _, v in check_claims(two))[
            "final OOD reward of latent >= token for at least 3 of the 4 losses"
        ]
        == "n/a"
    )
