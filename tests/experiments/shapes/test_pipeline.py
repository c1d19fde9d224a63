"""The embedded end-to-end job (`experiments.shapes.pipeline`) at its quick size: every arm runs, results are written
and the table is complete; and its more-data baseline."""

import json
import math

import pytest
from PIL import Image

from trl_latent.cli import main
from trl_latent.data.pretrain import load_pretrain_corpus
from trl_latent.experiments.shapes import pipeline
from trl_latent.experiments.shapes.models import tiny_vlm_path
from trl_latent.experiments.shapes.pipeline import (
    CONTENT_WORDS,
    PipelineConfig,
    format_results,
    prepare_task,
    run_text_mix_baseline,
)
from trl_latent.experiments.shapes.reports import FIGURE_SIZE, PLOTS
from trl_latent.experiments.shapes.task_data import write_synthetic_task
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
    # Both RL arms ran the same number of steps with the same reward. Every rubric reward is above 0 (a completion
    # earns part of it even when its content is wrong: measured 0.06-0.09 per RL step, 0.22-0.28 per evaluation), so
    # an arm or an evaluation that reports zeros fails here.
    for arm in ("token", "latent"):
        rl = results[arm]["rl"]
        assert rl["steps"] == config.rl_steps == len(rl["reward_curve"])
        assert all(0.02 < r <= 2.0 for r in rl["reward_curve"]), rl["reward_curve"]
        for split in ("id", "ood", "held_out"):
            ev = results[arm]["eval_rl"][split]
            assert 0.1 < ev["reward"] <= 2.0, (arm, split, ev["reward"])
            # "all" is the share of answers right on every aspect, so no aspect's share is below it.
            assert 0.0 <= ev["all"] <= min(ev[k] for k in ("colour", "shape", "count", "voice")) <= 1.0
            assert ev["eval_generations"] == 3 and ev["all_std"] >= 0.0 and ev["reward_std"] >= 0.0
            assert "diversity/distinct_2" in ev and "diversity/self_bleu" in ev
    # RL ran more than one optimisation step per generation batch (so the objectives' clips act).
    assert config.rl_iterations == 2 and config.rl_micro_batches == 2
    # What the base knew of the task before task SFT, and the token models after it, measured and kept: task SFT
    # (with or without the text-only corpus) raises the share of answer tokens predicted (measured 0.034 -> 0.098 and
    # 0.106 in 3 steps), and the base already predicts some (a probe that returns 0 fails).
    before = results["pretrain"]["answer_token_accuracy"]
    assert 0.01 < before < 1.0
    for entry in (results["token"]["sft"], results["token_text"]["sft"]):
        assert before + 0.02 < entry["answer_token_accuracy"] <= 1.0, (before, entry["answer_token_accuracy"])
    # The more-data baseline: task SFT with the text-only corpus mixed in, evaluated on every split.
    assert set(results["token_text"]["eval_sft"]) == {"id", "ood", "held_out"}
    # The saved latent model after world-model SFT holds the fine-tuned base (the base changed in stage 5).
    assert json.loads((tmp_path / "latent" / "world_sft" / "config.json").read_text())["base_weights_saved"]
    table = (tmp_path / "results.md").read_text()
    assert table.strip() == format_results(results)
    comparison, probes, health = table.split("\n\n")[:3]
    assert probes.startswith("Answer tokens predicted") and "base " in probes
    rows = [line for line in comparison.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| base (general pretraining)",
        "| token: SFT",
        "| token: SFT with the text-only corpus",
        "| token: SFT + grpo",
        "| latent: stages 1-5",
        "| latent: stages 1-5 + grpo",
    ]
    # The latent-space health after every stage, in the form that stage trained under (merge-delta by default).
    health_rows = [line.split(" | ") for line in health.splitlines()[2:]]
    assert [r[0] for r in health_rows] == [f"| {stage}" for stage in stages]
    assert {r[1] for r in health_rows} == {"merge_delta"}
    column = {name.strip(" |"): i for i, name in enumerate(health.splitlines()[0].split(" | "))}
    accuracies = [column[name] for name in ("IDM codes", "policy codes", "best code", "base alone")]
    for row in health_rows:
        assert all(0.0 < float(row[i]) <= 1.0 for i in accuracies)  # measured 0.03-0.11: none is 0
        # Controllability: distinct tokens over the codes, at least the one that every code says.
        assert float(row[column["controllability"]]) >= 1.0
    positions = {stage["health"]["health/content_positions"] for stage in stages.values()}
    assert len(positions) == 1 and positions.pop() > 0  # the same held-out dialogues after every stage
    for stage in stages.values():  # controllability at the colour, shape, count and voice words of the answers
        health_ = stage["health"]
        assert 0.0 <= health_["health/content_controllability"] <= len(CONTENT_WORDS["colour"])
        # Only right-kind words count there, so it is below plain controllability (which counts every token).
        assert health_["health/content_controllability"] < health_["health/controllability"]
    # After stage 3 some code says a content word at a content position (measured 0.07 after stage 3, 0.12 after 5).
    assert stages["world_sft"]["health"]["health/content_controllability"] > 0.0
    # Each stage changes what it trains and nothing else (measured at this size: IDM-code accuracy 0.034 after stages 1
    # and 2, 0.056 after 3 and 4, 0.068 after 5; base alone 0.084, then 0.113 after 5; policy entropy 2.763 before
    # stage 4, 2.747 after it). Recomputing a health metric on the same model gives the same float; a stage 4 that
    # barely trains (its learning rate 1000 times smaller) moved the entropy by 2.3e-6, a stage 5 trained on the
    # general corpus instead of the task's dialogues moved the base-alone accuracy by +0.004.
    health = {name: stage["health"] for name, stage in stages.items()}
    assert health["projector_warmup"] == health["inverse_warmup"]  # stage 2 trains only the projectors
    assert health["joint"]["health/world_accuracy_inverse"] > health["inverse_warmup"]["health/world_accuracy_inverse"]
    untouched_by_policy = ("base_accuracy", "world_accuracy_inverse", "world_accuracy_best", "controllability")
    for key in (*untouched_by_policy, "codes_used_inverse"):  # stage 4 trains only the policy ...
        assert health["policy_bc"][f"health/{key}"] == health["joint"][f"health/{key}"], key
    assert health["joint"]["health/policy_entropy"] == health["inverse_warmup"]["health/policy_entropy"]
    # ... and the policy changed (its code distribution; 3 steps need not move an argmax).
    moved = abs(health["policy_bc"]["health/policy_entropy"] - health["joint"]["health/policy_entropy"])
    assert moved > 1e-3, moved
    # Stage 5 fine-tunes the base on the task's dialogues: the base alone predicts more of the held-out answers' tokens,
    # and the world model says more answer tokens.
    base_gain = health["world_sft"]["health/base_accuracy"] - health["policy_bc"]["health/base_accuracy"]
    assert base_gain > 0.01, base_gain
    assert health["world_sft"]["health/world_accuracy_inverse"] > health["policy_bc"]["health/world_accuracy_inverse"]
    assert "latent/token" in table
    assert format_results(results) in out
    # The demo explains its columns and writes the study's plots for its own run.
    assert "Columns:" in out and "- self-BLEU:" in out
    for name in PLOTS:
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == FIGURE_SIZE


# ------------------------------------------------------------------------------ the more-data baseline
# The more-data baseline (`pipeline.run_text_mix_baseline`): token SFT on the task's dialogues with the latent stages'
# text-only corpus mixed in, so that a latent win cannot be just more data. What it trains on is checked record by
# record against the text-only file the latent stages read.


def _key(messages) -> str:
    """A record's dialogue with every content as typed text parts (the form the SFT data holds), as a string."""
    typed = []
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        typed.append({"role": m["role"], "content": [{"type": p["type"], "text": p.get("text")} for p in parts]})
    return json.dumps(typed, sort_keys=True)


@pytest.fixture(scope="module")
def baseline(tiny_cache, tmp_path_factory):
    """The baseline at the quick size (one SFT step), the datasets `prepare_task` built, and every dataset the
    baseline's SFT was given."""
    root = tmp_path_factory.mktemp("baseline")
    config = PipelineConfig.quick(cache_dir=str(tiny_cache), task_sft_steps=1)
    data, eval_sets, processor = prepare_task(config, root / "data")
    trained_on = []
    stock_sft = pipeline._stock_sft

    def recording(model, processor, dataset, *args, **kwargs):
        trained_on.append(dataset)
        return stock_sft(model, processor, dataset, *args, **kwargs)

    pipeline._stock_sft = recording
    try:
        result = run_text_mix_baseline(
            tiny_vlm_path(config.size, seed=config.seed, cache_dir=config.cache_dir),
            processor,
            data,
            eval_sets,
            config,
            root / "text",
            evaluate=lambda model, processor, eval_sets, config: {split: {"evaluated": True} for split in eval_sets},
        )
    finally:
        pipeline._stock_sft = stock_sft
    # The text-only corpus the latent stages read, loaded again from the file the task wrote.
    task = write_synthetic_task(
        root / "data", seed=config.seed, image_size=config.image_size, n_paired=config.n_paired,
        n_text_only=config.n_text_only,
    )  # fmt: skip
    text_file = load_pretrain_corpus(task.path(task.text_only_file)).text
    return {"config": config, "data": data, "result": result, "trained_on": trained_on, "text_file": text_file}


def test_the_baseline_trains_on_every_text_only_record_and_every_task_dialogue(baseline):
    (dataset,) = baseline["trained_on"]  # one SFT run
    data, text_file = baseline["data"], baseline["text_file"]
    assert len(text_file) > 0 and len(data["task_sft"]) > 0
    keys = [_key(row["messages"]) for row in dataset]
    text_keys = [_key(messages) for messages in text_file["messages"]]
    task_keys = [_key(messages) for messages in data["task_sft"]["messages"]]
    # Every record of both, and nothing else: as many rows as the two together (measured: 64 dialogues + 32 texts).
    assert len(dataset) == len(text_keys) + len(task_keys)
    assert sorted(keys) == sorted(text_keys + task_keys)
    # The text-only records carry no image; the task dialogues keep theirs.
    images = {key: len(row["images"]) for key, row in zip(keys, dataset)}
    assert all(images[k] == 0 for k in text_keys) and all(images[k] == 1 for k in task_keys)
    # Mixed, not appended: the first batch already holds both kinds.
    first = keys[: baseline["config"].batch_size]
    assert set(first) & set(text_keys) and set(first) & set(task_keys)


def test_the_token_arm_and_the_baseline_differ_only_by_the_text_only_corpus(baseline):
    data, text_file = baseline["data"], baseline["text_file"]
    text_keys = {_key(messages) for messages in text_file["messages"]}
    assert not text_keys & {_key(messages) for messages in data["task_sft"]["messages"]}
    result = baseline["result"]
    assert result["sft"]["steps"] == 1 and 0.0 < result["sft"]["answer_token_accuracy"] <= 1.0
    assert result["eval_sft"] == {split: {"evaluated": True} for split in ("id", "ood", "held_out")}
