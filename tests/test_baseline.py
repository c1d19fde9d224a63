"""The token-level baseline: stock TRL SFT lowers the loss on the synthetic dialogues, stock GRPO with the rubric
reward runs and changes every trainable parameter; and the CLI dispatches to it."""

import json

import pytest

from trl_latent.cli import main
from trl_latent.data.synthetic import synthetic_rl_dataset
from trl_latent.modeling.tiny import tiny_vlm
from trl_latent.training.baseline import evaluate_greedy, greedy_completions, run_token_baseline

SMALL_RUN = dict(
    size="tiny",
    sft_steps=30,
    grpo_steps=2,
    n_sft=256,
    n_rl=16,
    n_eval=8,
    sft_batch_size=16,
    grpo_prompts_per_step=2,
    num_generations=4,
    max_completion_length=24,
)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    output_dir = root / "token_baseline"
    return output_dir, run_token_baseline(output_dir, cache_dir=root / "baseline_models", **SMALL_RUN)


def test_sft_lowers_the_loss_clearly(baseline):
    _, metrics = baseline
    sft = metrics["sft"]
    assert len(sft["loss_curve"]) == SMALL_RUN["sft_steps"]
    # From ~ln(vocab) = 6.1 at the start; a clear drop in 30 steps.
    assert sft["loss_first"] > 5.5
    assert sft["loss_last"] < 0.75 * sft["loss_first"]
    assert max(sft["loss_curve"][-5:]) < min(sft["loss_curve"][:5])


def test_grpo_runs_and_changes_every_trainable_parameter(baseline):
    _, metrics = baseline
    grpo = metrics["grpo"]
    assert len(grpo["reward_curve"]) == SMALL_RUN["grpo_steps"]
    assert all(0.0 < r <= 1.0 for r in grpo["reward_curve"])
    assert grpo["trainable_parameters"] > 0
    assert grpo["changed_parameters"] == grpo["trainable_parameters"]


def test_metrics_cover_every_stage_and_are_written(baseline):
    output_dir, metrics = baseline
    assert json.loads((output_dir / "metrics.json").read_text()) == metrics
    assert set(metrics["eval"]) == {"initial", "after_sft", "after_grpo"}
    for stage in metrics["eval"].values():
        for name in ("id", "ood"):
            m = stage[name]
            assert {"colour", "shape", "count", "voice", "all", "reward"} <= set(m)
            assert all(0.0 <= m[k] <= 1.0 for k in ("colour", "shape", "count", "voice", "all"))
            assert len(m["examples"]) == 3
    # SFT teaches the voice format's first words: the reward of greedy answers rises over the random model.
    assert metrics["eval"]["after_sft"]["id"]["reward"] > metrics["eval"]["initial"]["id"]["reward"]
    assert metrics["config"]["sft_steps"] == SMALL_RUN["sft_steps"]


def test_greedy_evaluation_is_deterministic_and_leaves_training_mode(tiny_cache):
    model, processor = tiny_vlm("tiny", seed=0, cache_dir=tiny_cache)
    model.train()
    ds = synthetic_rl_dataset(3, seed=0, split="eval")
    first = greedy_completions(model, processor, ds, max_new_tokens=8, batch_size=2)
    assert model.training
    assert first == greedy_completions(model, processor, ds, max_new_tokens=8, batch_size=3)  # batching-invariant
    assert len(first) == 3 and all(isinstance(a, str) for a in first)
    metrics = evaluate_greedy(model, processor, ds, max_new_tokens=8)
    assert 0.0 < metrics["reward"] < 1.0


def test_bad_baseline_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="must be >= 0"):
        run_token_baseline(tmp_path, sft_steps=-1)
    with pytest.raises(ValueError, match="at least 2 completions"):
        run_token_baseline(tmp_path, num_generations=1)
    with pytest.raises(ValueError, match="Unknown tiny model size"):
        run_token_baseline(tmp_path, size="huge", sft_steps=0, grpo_steps=0)


def test_cli_write_synthetic_and_help(tmp_path, capsys):
    assert main(["write-synthetic", str(tmp_path / "task"), "--image-size", "84", "56"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["image_size"] == [84, 56]
    assert (tmp_path / "task" / manifest["ood_dialogue_file"]).exists()
    assert main([]) == 2  # no subcommand: help, non-zero exit
    with pytest.raises(SystemExit):
        main(["write-synthetic", str(tmp_path / "bad"), "--image-size", "1", "2", "3"])
