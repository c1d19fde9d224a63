"""The text role-play study's runner: a smoke cell of each arm on a tiny Llama (every phase, resumable, refused when
the settings change), the NLL it reports, the KL-matched rate reused by a later seed, and docs/text_study.md rebuilt
from the committed cells."""

import json
import math

import pytest
import torch

from tests.fixtures.paths import ROOT
from trl_latent.experiments.text_roleplay import study


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("text-study")
    cells = work / "cells"
    assert study.main(["run", "--smoke", "--seeds", "0", "--cells-dir", str(cells), "--work-dir", str(work)]) == 0
    return work, cells


def test_smoke_cells_hold_every_phase_and_learning(smoke):
    work, cells_dir = smoke
    cells = {c["arm"]: c for c in study.load_cells(cells_dir)}
    assert set(cells) == {"token", "latent"} and all(c["complete"] for c in cells.values())
    for cell in cells.values():
        assert list(cell["phases"]) == ["train", "before_rl", "rl", "after_rl"]
        for when in ("before_rl", "after_rl"):
            ev = cell["phases"][when]
            assert set(ev) >= {"heldout", "heldout-characters", "rollouts", "general_nll"}
            assert ev["heldout"]["n"] == 2 and 0 <= ev["heldout"]["mean_reward"] <= 1
            assert math.isfinite(ev["general_nll"]) and ev["general_nll"] > 0
            assert {"embedding", "distinct_2", "self_bleu"} <= set(ev["rollouts"])
        rl = cell["phases"]["rl"]
        assert rl["search"] == "done" and len(rl["probes"]) == 1 and rl["chosen"] == rl["probes"][0]["learning_rate"]
        assert math.isfinite(rl["probes"][0]["kl"]) and rl["probes"][0]["steps"] == 2
        assert study.cell_cpus(cell) == {study.cpu_name()}  # every timed part names the CPU that ran it
    sft = cells["token"]["phases"]["train"]
    assert sft["loss_last"] < sft["loss_first"] and sft["weight_change"] > 0
    stages = cells["latent"]["phases"]["train"]
    assert list(stages) == ["inverse_warmup", "joint", "policy_bc", "world_sft"]
    for name, stage in stages.items():
        assert stage["loss_last"] < stage["loss_first"], name
        for stream in ("health_general", "health_task"):
            assert {"health/code_gain_inverse", "health/code_gain_policy", "health/base_accuracy"} <= set(
                stage[stream]
            )


def test_a_finished_cell_is_not_rerun_and_other_settings_are_refused(smoke):
    work, cells_dir = smoke
    config = study.TextStudyConfig.from_dict(study.load_cells(cells_dir)[0]["config"])
    before = (cells_dir / "latent-seed0.json").read_text()
    cell = study.run_cell("latent", 0, config, cells_dir, work)  # complete: returned as it is, nothing re-run
    assert cell["complete"] and (cells_dir / "latent-seed0.json").read_text() == before
    # A setting added to the study since the cell was made counts as its default: the cell is still the same one.
    saved = json.loads((cells_dir / "latent-seed0.json").read_text())
    del saved["config"]["world_sft_output"]
    assert study._same_settings(saved["config"], config.to_dict())
    assert not study._same_settings({**saved["config"], "removed_setting": 1}, config.to_dict())
    config.rl_steps = 3
    with pytest.raises(ValueError, match="made with other settings"):
        study.run_cell("latent", 0, config, cells_dir, work)
    with pytest.raises(ValueError, match="Unknown study settings"):
        study.TextStudyConfig.from_dict({"rl_step": 3})
    with pytest.raises(ValueError, match="Unknown arm"):
        study.run_cell("tokens", 0, config, cells_dir, work)


def run_variant(smoke, variant: str) -> tuple[dict, dict]:
    """Run the smoke cell of a latent variant (seed 0); returns its cell and the plain latent cell."""
    work, cells_dir = smoke
    argv = ["run", "--smoke", "--arms", "latent", "--variant", variant, "--seeds", "0"]
    assert study.main([*argv, "--cells-dir", str(cells_dir), "--work-dir", str(work)]) == 0
    cells = {study._name(c): c for c in study.load_cells(cells_dir)}
    return cells[f"latent+{variant}"], cells["latent"]


def test_a_stage5_variant_reuses_stages_1_to_4(smoke):
    work, cells_dir = smoke
    variant, plain = run_variant(smoke, "s5-base-plus-delta")
    assert variant["complete"] and variant["config"]["world_sft_output"] == "base_plus_delta"
    for stage in study.PRETRAIN_STAGES:  # linked, not retrained: the same numbers, marked as reused
        assert (work / "latent+s5-base-plus-delta-seed0" / stage).is_symlink()
        assert variant["phases"]["train"][stage]["reused_from"] == "latent-seed0.json"
        assert variant["phases"]["train"][stage]["loss_last"] == plain["phases"]["train"][stage]["loss_last"]
    folder = work / "latent+s5-base-plus-delta-seed0" / "world_sft" / "config.json"
    assert json.loads(folder.read_text())["world_output"] == "base_plus_delta"
    assert variant["phases"]["train"]["world_sft"]["loss_first"] != plain["phases"]["train"]["world_sft"]["loss_first"]
    page = study.report_markdown(cells_dir)
    assert "| latent+s5-base-plus-delta | 0 |" in page and "| world_sft (latent+s5-base-plus-delta) | task |" in page
    with pytest.raises(ValueError, match="Unknown variant"):
        study.run_cell("token", 0, study.TextStudyConfig(), cells_dir, work, variant="s5-base-plus-delta")
    # Without the plain cell's saved stages (a fresh machine: models are never committed), nothing is reused.
    phases = study.Phases(work / "elsewhere", cells_dir / "unused.json", {"config": variant["config"]})
    config = study.TextStudyConfig.from_dict(variant["config"])
    assert not study._reuse_pretrain_stages(config, 0, work / "elsewhere", work / "no-such-work", cells_dir, phases)


def test_a_variant_of_stages_1_to_4_trains_them_itself(smoke):
    work, _ = smoke
    variant, plain = run_variant(smoke, "residual-from-base")
    assert variant["complete"] and variant["config"]["world_output_schedule"] == "residual"
    for stage in study.PRETRAIN_STAGES:  # its own stages, not the plain cell's
        assert not (work / "latent+residual-from-base-seed0" / stage).is_symlink()
        assert "reused_from" not in variant["phases"]["train"][stage]
    assert variant["phases"]["train"]["joint"]["loss_last"] != plain["phases"]["train"]["joint"]["loss_last"]
    for stage in ("inverse_warmup", "joint", "world_sft"):
        saved = json.loads((work / "latent+residual-from-base-seed0" / stage / "config.json").read_text())
        assert saved["world_output"] == "residual" and saved["world_merge_init"] == "zeros"


def test_a_stage_cut_off_resumes_from_its_checkpoint(smoke, tmp_path, monkeypatch):
    """A latent stage saves a checkpoint every CHECKPOINT_STEPS steps; a cell cut off inside a stage (the end of a
    session) resumes it from the newest checkpoint, runs its remaining steps and lands where the uninterrupted cell did
    (to the base-state cache's 1e-4: the resumed part computes the base's states again)."""
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    _, cells_dir = smoke
    plain = next(c for c in study.load_cells(cells_dir) if study._name(c) == "latent")
    config = study.TextStudyConfig.from_dict(plain["config"])
    monkeypatch.setattr(study, "CHECKPOINT_STEPS", 2)
    training_step = LatentSFTTrainer.training_step

    def cut_off(self, *args, **kwargs):
        if self.args.stage == "joint" and self.state.global_step == 3:
            raise RuntimeError("the session ended")
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(LatentSFTTrainer, "training_step", cut_off)
    with pytest.raises(RuntimeError, match="the session ended"):
        study.run_cell("latent", 0, config, tmp_path / "cells", tmp_path / "work")
    cut = json.loads((tmp_path / "cells" / "latent-seed0.json").read_text())
    assert list(cut["phases"]["train"]) == ["inverse_warmup"] and not cut["complete"]
    monkeypatch.setattr(LatentSFTTrainer, "training_step", training_step)
    cell = study.run_cell("latent", 0, config, tmp_path / "cells", tmp_path / "work")
    joint, before = cell["phases"]["train"]["joint"], plain["phases"]["train"]["joint"]
    assert cell["complete"] and joint["resumed_from"] == "checkpoint-2" and joint["steps"] == before["steps"]
    assert joint["loss_last"] == pytest.approx(before["loss_last"], rel=1e-3)
    assert "resumed_from" not in cell["phases"]["train"]["inverse_warmup"]


def test_a_later_seed_reuses_the_searched_rate(smoke):
    _, cells_dir = smoke
    assert study._chosen_rate(cells_dir, "token", seed=1) == 1e-3
    assert study._chosen_rate(cells_dir, "latent", seed=1) == 1e-2
    assert study._chosen_rate(cells_dir, "token", seed=0) is None  # a seed never reuses its own search


def test_general_nll_is_the_mean_token_cross_entropy(smoke):
    from transformers import AutoModelForCausalLM

    work, _ = smoke
    config = study.TextStudyConfig.from_dict(study.load_cells(smoke[1])[0]["config"])
    model = AutoModelForCausalLM.from_pretrained(config.base).eval()
    tokenizer = study._tokenizer(config.base)
    _, held = study.general_text(config)
    records = held[:2]
    expected_total, count = 0.0, 0
    for record in records:
        ids = tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            loss = model(**ids, labels=ids["input_ids"]).loss
        n = ids["input_ids"].shape[1] - 1
        expected_total, count = expected_total + float(loss) * n, count + n
    assert study.general_nll(model, tokenizer, records) == pytest.approx(expected_total / count, rel=1e-5)


def test_the_report_reads_the_cells(smoke):
    _, cells_dir = smoke
    page = study.report_markdown(cells_dir)
    assert "| token | 0 | train, before_rl, rl, after_rl | yes |" in page
    assert "| world_sft | task |" in page and "n/a (one seed)" in page
    empty = study.report_markdown(cells_dir.parent / "no-cells")
    assert "No cell is committed yet" in empty


def _timed_cell(arm: str, seed: int, complete: bool = True, resumed: bool = False, cpu: str | None = "CPU A") -> dict:
    """A cell with only what the study's time reads: a token cell's one SFT run or a latent cell's stages (one of
    them resumed if asked), two RL probes and the two evaluations, each part timed on `cpu` (None: a part made before
    cells named their CPU); 1,800 s of work in all either way."""
    named = {} if cpu is None else {"cpu": cpu}
    if arm == "token":
        train = {"seconds": 600.0, **named}
    else:
        train = {"inverse_warmup": {"seconds": 400.0, **named}, "world_sft": {"seconds": 200.0, **named}}
        if resumed:
            train["inverse_warmup"]["resumed_from"] = "checkpoint-20"
    phases = {
        "train": train,
        "before_rl": {"seconds": 150.0, **named},
        "rl": {"probes": [{"seconds": 400.0, **named}, {"seconds": 400.0, **named}]},
        "after_rl": {"seconds": 250.0, **named},
    }
    return {"arm": arm, "seed": seed, "complete": complete, "phases": phases}


def test_study_time_is_the_longer_arm_over_its_complete_cells():
    assert study.cell_seconds(_timed_cell("token", 0)) == (1800.0, False)
    assert study.cell_seconds(_timed_cell("latent", 0, resumed=True)) == (1800.0, True)
    token = [_timed_cell("token", s) for s in range(3)]
    latent = [_timed_cell("latent", s) for s in range(3)]
    timing = study.study_time(token + latent)  # 3 x 1,800 s per arm: 1.5 hours as two processes
    assert timing["hours"] == pytest.approx(1.5) and timing["verdict"] == "met" and timing["cpus"] == ["CPU A"]
    assert timing["arms"]["token"]["seeds"] == [0, 1, 2] and timing["arms"]["latent"]["seconds"] == 5400.0
    # An incomplete cell does not count, and without three complete seeds of each arm there is no verdict.
    partial = study.study_time(token + latent[:2] + [_timed_cell("latent", 2, complete=False)])
    assert partial["arms"]["latent"]["seeds"] == [0, 1] and partial["verdict"].startswith("n/a")
    # Over the budget: missed, whichever arm is the longer.
    slow = [dict(c, phases={**c["phases"], "before_rl": {"seconds": 3600.0, "cpu": "CPU A"}}) for c in token]
    assert study.study_time(slow + latent)["verdict"] == "missed"
    assert study.study_time(slow + latent)["hours"] == pytest.approx(3 * 5250 / 3600)
    # Under the budget with a resumed stage: a lower bound, so no verdict.
    resumed = latent[:2] + [_timed_cell("latent", 2, resumed=True)]
    assert study.study_time(token + resumed)["verdict"] == "n/a (a resumed cell's time is a lower bound)"


def test_study_time_gives_a_verdict_only_for_cells_timed_on_one_named_cpu():
    token = [_timed_cell("token", s) for s in range(3)]
    latent = [_timed_cell("latent", s) for s in range(3)]
    # One cell on another processor, or one part of a cell (its RL probe, run in a later session) there: no verdict.
    other = latent[:2] + [_timed_cell("latent", 2, cpu="CPU B")]
    assert study.study_time(token + other)["verdict"] == "n/a (timed on 2 CPUs, or on unnamed ones: CPU A / CPU B)"
    mixed = _timed_cell("latent", 2)
    mixed["phases"]["rl"]["probes"][1]["cpu"] = "CPU B"
    assert study.cell_cpus(mixed) == {"CPU A", "CPU B"}
    assert study.study_time(token + latent[:2] + [mixed])["verdict"].startswith("n/a (timed on 2 CPUs")
    # Cells made before cells named their CPU: their time is shown, with no verdict.
    old = [_timed_cell("token", s, cpu=None) for s in range(3)]
    timing = study.study_time(old + latent)
    assert timing["hours"] == pytest.approx(1.5) and timing["verdict"].startswith("n/a")
    assert study.UNRECORDED_CPU in timing["cpus"]
    # Every part of a real cell names its CPU: the process's own, as the kernel names it.
    assert study.cpu_name() and study.environment()["cpu"] == study.cpu_name()


def test_the_report_says_whether_a_reused_rate_kept_its_seed_inside_the_kl_budget(smoke, tmp_path):
    _, cells_dir = smoke
    for arm in ("token", "latent"):
        cell = json.loads((cells_dir / f"{arm}-seed0.json").read_text())
        low, high = cell["config"]["kl_budget"]
        for seed, kl in ((1, (low + high) / 2), (2, high * 2)):  # the rate seed 0 chose, reused: inside, then outside
            probe = {**cell["phases"]["rl"]["probes"][-1], "kl": kl}
            rl = {"probes": [probe], "chosen": probe["learning_rate"], "search": "reused from an earlier seed"}
            reused = {**cell, "seed": seed, "phases": {**cell["phases"], "rl": {**rl, "within": None}}}
            (tmp_path / f"{arm}-seed{seed}.json").write_text(json.dumps(reused))
    page = study.report_markdown(tmp_path)
    assert f"| latent | 1 | {probe['learning_rate']:.1e} | reused; inside ({(low + high) / 2:.4f}) |" in page
    assert f"| latent | 2 | {probe['learning_rate']:.1e} | reused; outside ({high * 2:.4f}) |" in page


def test_docs_page_is_built_from_the_committed_cells():
    page = (ROOT / study.DOCS_PAGE).read_text()
    assert page == study.report_markdown(ROOT / study.CELLS_DIR), (
        f"docs/text_study.md is stale: run `{study.REPORT_COMMAND}`"
    )


def test_general_text_split_is_stable_and_disjoint(tmp_path):
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"text {i}"}]} for i in range(60)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = study.TextStudyConfig(corpus=str(corpus))
    train, held = study.general_text(config)
    assert len(train) + len(held) == 60 and 0 < len(held) < 20
    assert not {json.dumps(r) for r in train} & {json.dumps(r) for r in held}
    assert study.general_text(config) == (train, held)
    with pytest.raises(FileNotFoundError, match="write one with"):
        study.general_text(study.TextStudyConfig(corpus=str(tmp_path / "missing.jsonl")))


def test_eval_corpus_gives_the_held_out_text_and_a_larger_corpus_never_trains_on_it(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"

    def rows(n, tag):  # the same id is the same prompt in both corpora; its sampled text differs
        return "".join(
            json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": f"{tag} {i}"}]}) + "\n"
            for i in range(n)
        )

    small.write_text(rows(60, "small"))
    large.write_text(rows(400, "large"))
    _, held_small = study.general_text(study.TextStudyConfig(corpus=str(small)))
    train, held = study.general_text(study.TextStudyConfig(corpus=str(large), eval_corpus=str(small)))
    assert held == held_small
    held_ids = {m["messages"][0]["content"].split()[1] for m in held}
    train_ids = {m["messages"][0]["content"].split()[1] for m in train}
    assert len(train) > 300 and not held_ids & train_ids
    assert all(m["messages"][0]["content"].startswith("large") for m in train)


def test_every_variant_is_a_set_of_study_settings_and_its_files_are_committed():
    """A variant's settings are `TextStudyConfig` fields (an unknown one would fail only when its cell starts), and
    the corpora it names are in the repository, so its cells can be regenerated from a clone."""
    for name, settings in study.VARIANTS.items():
        config = study.TextStudyConfig.from_dict({**study.TextStudyConfig().to_dict(), **settings})
        for path in (config.corpus, config.eval_corpus):
            assert path is None or (ROOT / path).is_file(), (name, path)
    with pytest.raises(ValueError, match="Unknown study settings"):
        study.TextStudyConfig.from_dict({"stage_epoch": 1.0})


def test_a_reused_rate_that_leaves_the_kl_budget_is_searched_again(smoke, tmp_path, monkeypatch):
    """A later seed reuses the first seed's rate only while its own run ends inside the budget. A cell whose reused
    rate ended outside (made before this rule) is not finished: its RL searches on from that rate, its stages are not
    retrained, and after_rl measures the newly chosen run."""
    import shutil

    work, cells_dir = smoke
    seed0 = json.loads((cells_dir / "latent-seed0.json").read_text())
    seed0["config"]["max_probes"] = 3  # the smoke's single probe leaves no room to search
    config = study.TextStudyConfig.from_dict(seed0["config"])
    (low, high), factor = config.kl_budget, config.lr_factor
    reused = seed0["phases"]["rl"]["chosen"]
    first = seed0["phases"]["rl"]["probes"][0]
    # Planted runs: KL grows with the rate; the reused rate lands over the budget, one step down lands inside.
    planted_kl = lambda rate: 0.9 * factor * high * rate / reused  # noqa: E731
    assert planted_kl(reused) > high and low <= planted_kl(reused / factor) <= high
    runs = []

    def planted_run(arm, config, seed, start_folder, base, work, learning_rate):
        runs.append(learning_rate)
        return {**first, "learning_rate": learning_rate, "kl": planted_kl(learning_rate)}

    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "latent-seed0.json").write_text(json.dumps(seed0))
    shutil.copytree(work / "latent-seed0", tmp_path / "work" / "latent-seed1", symlinks=True)
    over = {**first, "kl": planted_kl(reused)}
    rl = {"probes": [over], "chosen": reused, "search": study.REUSED, "within": None}
    old_after = {k: v for k, v in seed0["phases"]["after_rl"].items() if k != "learning_rate"}
    seed1 = {**seed0, "seed": 1, "phases": {**seed0["phases"], "rl": rl, "after_rl": old_after}}
    (cells / "latent-seed1.json").write_text(json.dumps(seed1))
    assert study._reused_rate_left_budget(seed1) and not study._reused_rate_left_budget(seed0)

    monkeypatch.setattr(study, "_rl_run", planted_run)
    cell = study.run_cell("latent", 1, config, cells, tmp_path / "work")
    rl = cell["phases"]["rl"]
    want = float(f"{reused / factor:.1e}")
    assert runs == [want]  # the reused probe is kept, not run again; one new probe, inside the budget
    assert [p["learning_rate"] for p in rl["probes"]] == [reused, want]
    assert rl["chosen"] == want and rl["within"] is True and rl["search"] == study.SEARCHED_AGAIN
    assert cell["complete"] and cell["phases"]["after_rl"]["learning_rate"] == want
    assert cell["phases"]["train"] == seed0["phases"]["train"]  # stages 1-5 were on disk: not retrained
    assert not study._reused_rate_left_budget(cell)
    page = study.report_markdown(cells)
    assert f"| latent | 1 | {want:.1e} | yes (searched again: the reused rate's KL was {over['kl']:.4f}) |" in page

    # A reused rate that keeps its seed inside the budget stands: one probe, nothing searched.
    inside = {**first, "learning_rate": reused, "kl": (low + high) / 2}
    monkeypatch.setattr(study, "_rl_run", lambda *args: inside)
    (cells / "latent-seed1.json").unlink()
    for phase in ("rl", "after_rl"):  # the phases as the work folder keeps them, too
        (tmp_path / "work" / "latent-seed1" / f"{phase}.json").unlink()
    cell = study.run_cell("latent", 1, config, cells, tmp_path / "work")
    rl = cell["phases"]["rl"]
    assert (
        rl["search"] == study.REUSED and rl["chosen"] == reused and [p["kl"] for p in rl["probes"]] == [inside["kl"]]
    )
