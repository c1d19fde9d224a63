"""Evaluation of the embedded experiment's models the paper's way: N sampled generations per held-out prompt.

For each evaluation set (a `datasets.Dataset` of [`~trl_latent.experiments.shapes.task_data.synthetic_rl_dataset`]'s columns:
`prompt`, `image`, `reference`, `character`, `colour`, `shape`, `count`, `question`), [`evaluate_model`] draws
`config.eval_generations` answers per prompt (paper: 3) with the paper's sampling, the same for both kinds of model:
codes (latent model; tokens greedy) or tokens (plain VLM, the token baseline) sampled at `config.eval_temperature`
(0.1) among the top `config.eval_top_k` (64) ([`trl_latent.evaluation.generate_answers`]). Each generation round k
(the k-th answer of every prompt) is scored like one greedy pass: exact-answer accuracies (`colour`, `shape`, `count`,
`voice`, `all`; [`~trl_latent.experiments.shapes.reward.answer_accuracy`]), the mean rubric ratio (`reward`, the paper's
judge-like metric) and the mean task reward (`task_reward`). Each metric is reported as the mean over rounds, with
`<key>_std` the sample std over rounds (divisor N - 1; [`~trl_latent.metrics.stats.mean_std`]). Round k runs under
`torch.manual_seed(config.seed + k)` without touching the caller's random state, so two models are compared on the
same random streams.

Rollout diversity stays measured as in RL: `config.diversity_samples` answers per prompt at the RL rollout setting
(temperature 1, code top-k 32), `diversity/...` ([`~trl_latent.metrics.diversity.group_diversity`]).

The config fields read (with the paper's values as fallbacks where a config lacks them): `max_completion_length`,
`diversity_samples`, `eval_generations`, `eval_temperature`, `eval_top_k`, `seed`.
"""

from __future__ import annotations

from typing import Any

from ...evaluation import (
    PAPER_EVAL_GENERATIONS,
    PAPER_EVAL_TEMPERATURE,
    PAPER_EVAL_TOP_K,
    generate_answers,
    mean_std_over_rounds,
)
from ...metrics.diversity import group_diversity
from .reward import answer_accuracy, rubric_reward, task_reward

# The task's evaluation splits, with the labels the tables give them.
SPLITS = (("id", "ID"), ("ood", "OOD"), ("held_out", "held-out combos"))

__all__ = ["evaluate_model", "round_metrics"]

NUM_EXAMPLES = 2


def round_metrics(dataset, answers: list[str]) -> dict[str, float]:
    """The metrics of one generation round (one answer per prompt of `dataset`): `colour`, `shape`, `count`, `voice`,
    `all` (exact-answer accuracies), `reward` (mean rubric ratio) and `task_reward` (mean task reward)."""
    columns = {k: dataset[k] for k in dataset.column_names if k not in ("prompt", "image")}
    metrics = answer_accuracy(answers, dataset["reference"], dataset["character"])
    rewards = rubric_reward(dataset["prompt"], answers, **columns)
    metrics["reward"] = sum(rewards) / len(rewards)  # the judge-like rubric ratio (the paper's metric)
    task = task_reward(dataset["prompt"], answers, **columns)
    metrics["task_reward"] = sum(task) / len(task)
    return metrics


def evaluate_model(model, processor, eval_sets: dict, config, embedder=None) -> dict[str, Any]:
    """Score a plain VLM or a latent action model on each evaluation set with the paper's protocol (module docstring).

    Args:
        model: a plain VLM (the token arm) or a [`~trl_latent.LatentActionModel`] (the latent arm).
        processor: its processor, padding on the left.
        eval_sets (`dict[str, Dataset]`): evaluation sets by name (e.g. `id`, `ood`).
        config: the experiment's config (`PipelineConfig` or any object with the fields the module docstring lists).
        embedder: a sentence embedder (e.g. `trl_latent.metrics.diversity.Embedder()`) for `diversity/embedding`.

    Returns:
        `dict[str, dict]`: per set, `all`, `colour`, `shape`, `count`, `voice`, `reward`, `task_reward` (means over
        the generation rounds) and each with `_std`, `eval_generations`, `diversity/...`, and `examples` (the first
        prompts' character, reference, first answer `answer` and all answers `answers`).
    """
    generations = getattr(config, "eval_generations", PAPER_EVAL_GENERATIONS)
    temperature = getattr(config, "eval_temperature", PAPER_EVAL_TEMPERATURE)
    top_k = getattr(config, "eval_top_k", PAPER_EVAL_TOP_K)
    seed = getattr(config, "seed", 0)
    results = {}
    for name, dataset in eval_sets.items():
        rounds = generate_answers(
            model,
            processor,
            dataset,
            config.max_completion_length,
            temperature=temperature,
            top_k=top_k,
            num_generations=generations,
            seed=seed,
        )
        metrics: dict[str, Any] = mean_std_over_rounds([round_metrics(dataset, answers) for answers in rounds])
        metrics["eval_generations"] = generations
        # Rollout diversity: `diversity_samples` sampled answers per prompt at the RL rollout setting, adjacent as in
        # a GRPO group.
        repeated = dataset.select([i for i in range(len(dataset)) for _ in range(config.diversity_samples)])
        sampled = generate_answers(model, processor, repeated, config.max_completion_length, sample=True)
        metrics.update(group_diversity(sampled, config.diversity_samples, embedder))
        per_prompt = list(zip(*rounds))
        metrics["examples"] = [
            {"character": c, "reference": r, "answer": answers[0], "answers": list(answers)}
            for c, r, answers in list(zip(dataset["character"], dataset["reference"], per_prompt))[:NUM_EXAMPLES]
        ]
        results[name] = metrics
    return results
