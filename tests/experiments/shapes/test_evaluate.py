"""`experiments.shapes.evaluate`: the paper's evaluation protocol on the task (3 generations per prompt at temperature 0.1
among the top 64, metrics as mean +/- sample std over the rounds)."""

import math
import statistics
import types

import pytest

from trl_latent import evaluation
from trl_latent.evaluation import (
    ROLLOUT_CODE_TOP_K,
    generate_answers,
    mean_std_over_rounds,
)

METRICS = ("all", "colour", "shape", "count", "voice", "reward", "task_reward")


def config(**overrides):
    values = dict(
        max_completion_length=8, diversity_samples=2, eval_generations=3, eval_temperature=0.1, eval_top_k=64
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


def test_experiment_evaluation_draws_three_paper_generations_for_both_models(tiny, latent, eval_set, monkeypatch):
    """experiments.shapes.evaluate.evaluate_model: 3 eval rounds at 0.1 / top-64 for a plain VLM and a latent model alike, and
    the diversity rollouts at the RL setting."""
    from trl_latent.experiments.shapes import evaluate as experiment_eval

    seen = []

    class Spy:
        def __init__(self, cls):
            self.cls = cls

        def __call__(self, model, processor, max_new_tokens, temperature, top_k):
            seen.append((self.cls.__name__, temperature, top_k))
            return lambda prompts, images: [f"answer {len(seen)}" for _ in prompts]

    monkeypatch.setattr(evaluation, "VLMGenerationBackend", Spy(evaluation.VLMGenerationBackend))
    monkeypatch.setattr(evaluation, "LatentGenerationBackend", Spy(evaluation.LatentGenerationBackend))
    for model, processor in (tiny, latent):
        seen.clear()
        result = experiment_eval.evaluate_model(model, processor, {"id": eval_set}, config(seed=0))["id"]
        kind = "LatentGenerationBackend" if model is latent[0] else "VLMGenerationBackend"
        rollout_top_k = ROLLOUT_CODE_TOP_K if model is latent[0] else 0
        assert seen == [(kind, 0.1, 64), (kind, 1.0, rollout_top_k)]
        assert result["eval_generations"] == 3
        assert result["examples"][0]["answers"] == ["answer 1"] * 3  # the spy answers the same in every round


def test_metrics_are_mean_and_sample_std_over_rounds(eval_set, monkeypatch):
    """Three rounds that differ (as sampled rounds at temperature 0.1 can): all right, half right, all wrong."""
    from trl_latent.experiments.shapes import evaluate as experiment_eval
    from trl_latent.experiments.shapes.reward import answer_accuracy, rubric_reward

    references = list(eval_set["reference"])
    wrong = ["Nothing to see here." for _ in references]
    rounds = [references, references[:2] + wrong[2:], wrong]
    per_round = [experiment_eval.round_metrics(eval_set, answers) for answers in rounds]
    summary = mean_std_over_rounds(per_round)
    assert [r["all"] for r in per_round] == [1.0, 0.5, 0.0]
    assert summary["all"] == pytest.approx(0.5) and summary["all_std"] == pytest.approx(0.5)
    columns = {k: eval_set[k] for k in eval_set.column_names if k not in ("prompt", "image")}
    rewards = [statistics.fmean(rubric_reward(eval_set["prompt"], a, **columns)) for a in rounds]
    assert summary["reward"] == pytest.approx(statistics.fmean(rewards))
    assert summary["reward_std"] == pytest.approx(statistics.stdev(rewards))
    assert summary["colour"] == pytest.approx(
        statistics.fmean(answer_accuracy(a, references)["colour"] for a in rounds)
    )
    # Non-numeric values are skipped; one round has std 0.
    assert mean_std_over_rounds([{"all": 0.25, "examples": []}]) == {"all": 0.25, "all_std": 0.0}

    # evaluate_model reports the same numbers from the same rounds.
    def fake_generate(model, processor, dataset, max_new_tokens=48, sample=False, batch_size=32, **kwargs):
        if sample:  # the diversity rollouts
            return ["a b c"] * len(dataset)
        assert kwargs["num_generations"] == 3 and kwargs["temperature"] == 0.1 and kwargs["top_k"] == 64
        return rounds

    monkeypatch.setattr(experiment_eval, "generate_answers", fake_generate)
    result = experiment_eval.evaluate_model(None, None, {"id": eval_set}, config(diversity_samples=1))["id"]
    for key in METRICS:
        assert result[key] == pytest.approx(summary[key]) and result[f"{key}_std"] == pytest.approx(
            summary[f"{key}_std"]
        )


def test_experiment_evaluate_model_on_the_tiny_vlm(tiny, eval_set):
    from trl_latent.experiments.shapes.evaluate import evaluate_model
    from trl_latent.experiments.shapes.reward import answer_accuracy, rubric_reward, task_reward

    model, processor = tiny
    two = eval_set.select([0, 1])  # as many prompts as the examples keep: every answer of the set is in the results
    results = evaluate_model(model, processor, {"id": eval_set, "ood": two}, config())
    assert set(results) == {"id", "ood"}
    for metrics in results.values():
        for key in ("all", "colour", "shape", "count", "voice", "task_reward"):  # shares and a [0, 1] reward
            assert 0.0 <= metrics[key] <= 1.0, key
        assert metrics["all"] <= min(metrics[k] for k in ("colour", "shape", "count", "voice"))
        # The rubric ratio (answer score / reference score) can pass 1; the untrained model earns some of it.
        assert metrics["reward"] > 0.0 and metrics["task_reward"] > 0.0
        for key in METRICS:
            assert math.isfinite(metrics[f"{key}_std"]) and metrics[f"{key}_std"] >= 0.0, key
        assert metrics["eval_generations"] == 3
        assert {"diversity/distinct_1", "diversity/distinct_2", "diversity/self_bleu"} <= set(metrics)
        example = metrics["examples"][0]
        assert set(example) == {"character", "reference", "answer", "answers"} and len(example["answers"]) == 3
        assert example["answer"] == example["answers"][0]
    # The two-prompt set, computed here from its answers: the rounds are the seeded paper-setting generations, and
    # each metric is the mean and the sample std over the rounds of the reward functions' means.
    examples = results["ood"]["examples"]
    rounds = [[example["answers"][k] for example in examples] for k in range(3)]
    assert rounds == generate_answers(model, processor, two, 8, temperature=0.1, top_k=64, num_generations=3, seed=0)
    columns = {k: two[k] for k in two.column_names if k not in ("prompt", "image")}
    per_round = {key: [] for key in METRICS}
    for answers in rounds:
        for key, value in answer_accuracy(answers, two["reference"], two["character"]).items():
            per_round[key].append(value)
        per_round["reward"].append(statistics.fmean(rubric_reward(two["prompt"], answers, **columns)))
        per_round["task_reward"].append(statistics.fmean(task_reward(two["prompt"], answers, **columns)))
    for key, values in per_round.items():
        assert results["ood"][key] == pytest.approx(statistics.fmean(values), abs=1e-12), key
        assert results["ood"][f"{key}_std"] == pytest.approx(statistics.stdev(values), abs=1e-12), key
    # The task reward weighs exact answers, the rubric reward does not: on these answers they differ.
    assert results["ood"]["task_reward"] != pytest.approx(results["ood"]["reward"], abs=1e-3)
    # A config without the new fields falls back to the paper's protocol.
    bare = types.SimpleNamespace(max_completion_length=4, diversity_samples=1)
    assert evaluate_model(model, processor, {"id": eval_set.select([0])}, bare)["id"]["eval_generations"] == 3
