"""`trl_latent.evaluation`: the runner on the tiny VLM with a scripted (offline) judge (the table, mean +/- std,
diversity), and the paper's protocol: 3 generations per prompt, codes or tokens sampled at temperature 0.1 among the
top 64."""

import json
import math
import statistics

import pytest
import torch

from tests.fixtures.paths import ROOT
from trl_latent.data.mmrole import load_mmrole
from trl_latent.evaluation import (
    PAPER_EVAL_GENERATIONS,
    PAPER_EVAL_TEMPERATURE,
    PAPER_EVAL_TOP_K,
    ROLLOUT_CODE_TOP_K,
    ROLLOUT_TEMPERATURE,
    LatentGenerationBackend,
    VLMGenerationBackend,
    evaluate,
    generate_answers,
)
from trl_latent.metrics.diversity import Embedder
from trl_latent.rewards.judge import MMROLE_RUBRIC, JudgeReward

TITLES = [d.title for d in MMROLE_RUBRIC.dimensions]


def answer_of(messages) -> str:
    return messages[-1]["content"].split("## Response A\n", 1)[1].split("\n\n## Response B", 1)[0]


def scripted_scores(answer: str) -> list[tuple[int, int]]:
    """Dimension i: A = 1 + (words % 9), B = 8 + (i % 3); 'FAIL' answers get no scores at all."""
    a = 1 + len(answer.split()) % 9
    return [(a, 8 + i % 3) for i in range(len(TITLES))]


def scripted_judge(messages) -> str:
    answer = answer_of(messages)
    if "FAIL" in answer:
        return "I cannot judge this."
    return "\n".join(
        f"{i}. {t}: ok [Scores]: ({a}, {b})" for i, (t, (a, b)) in enumerate(zip(TITLES, scripted_scores(answer)), 1)
    )


def expected_metric(answer: str) -> float:
    return statistics.fmean(a / b for a, b in scripted_scores(answer))


@pytest.fixture(scope="module")
def shapes_splits(tmp_path_factory):
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_task(root, sessions_per_file=2, ood_sessions_per_character=1)
    return load_mmrole(root, image_size=(56, 56), splits=("id_test", "ood_test"))


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_tiny_vlm_evaluation_table(tiny_cache, shapes_splits, embedder, tmp_path):
    from tests.fixtures.models import tiny_vlm

    model, processor = tiny_vlm("tiny", cache_dir=tiny_cache)
    generate = VLMGenerationBackend(model, processor, max_new_tokens=8, temperature=0.1)
    judge = JudgeReward("mmrole", scripted_judge)
    result = evaluate(
        shapes_splits, generate, judge, num_generations=3, batch_size=4, embedder=embedder, output_dir=tmp_path
    )
    assert set(result.splits) == {"id_test", "ood_test"}
    for name, split in result.splits.items():
        assert split.num_prompts == len(shapes_splits[name]) > 0
        assert all(len(s["generations"]) == 3 for s in split.samples)
        # The judge metric is recomputed from the stored generations: mean over dimensions of A_d / B_d, averaged
        # over prompts per generation round, then mean and sample std (divisor n - 1) over the 3 rounds.
        per_round = [statistics.fmean(expected_metric(s["generations"][k]) for s in split.samples) for k in range(3)]
        assert split.judge_per_generation == pytest.approx(per_round)
        assert split.judge_mean == pytest.approx(statistics.fmean(per_round))
        assert split.judge_std == pytest.approx(statistics.stdev(per_round))
        for key in ("embedding", "distinct_1", "distinct_2", "self_bleu"):
            assert not math.isnan(split.diversity[key])
    table = (tmp_path / "evaluation.md").read_text()
    assert table == result.to_markdown()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| split | prompts | judge score (mean ± std) | embedding diversity | distinct-1")
    id_row = next(line for line in lines if line.startswith("| id_test |"))
    split = result.splits["id_test"]
    assert f"{split.judge_mean:.3f} ± {split.judge_std:.3f}" in id_row
    assert f"{split.diversity['embedding']:.3f}" in id_row and f"{split.diversity['self_bleu']:.3f}" in id_row
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["summary"]["ood_test"]["judge_mean"] == pytest.approx(result.splits["ood_test"].judge_mean)
    assert len(saved["samples"]["id_test"][0]["generations"]) == 3
    assert "VLMGenerationBackend" in saved["config"]["generate"]


def test_latent_model_evaluation(tiny_cache, shapes_splits, embedder, tmp_path):
    from transformers import AutoProcessor

    from tests.fixtures.models import tiny_vlm, tiny_vlm_path
    from trl_latent.modeling import LatentActionModel

    path = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    model = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1)
    processor = AutoProcessor.from_pretrained(path)
    with pytest.raises(TypeError, match="LatentActionModel"):
        LatentGenerationBackend(tiny_vlm("tiny", cache_dir=tiny_cache)[0], processor)
    generate = LatentGenerationBackend(model, processor, max_new_tokens=6)
    assert (generate.temperature, generate.top_k) == (0.1, 64)  # near-greedy codes, as the authors evaluate
    judge = JudgeReward("mmrole", scripted_judge)
    split = {"ood_test": shapes_splits["ood_test"]}
    result = evaluate(split, generate, judge, num_generations=2, batch_size=4, embedder=embedder, output_dir=tmp_path)
    samples = result.splits["ood_test"].samples
    assert all(len(s["generations"]) == 2 and all(isinstance(g, str) for g in s["generations"]) for s in samples)
    per_round = [statistics.fmean(expected_metric(s["generations"][k]) for s in samples) for k in range(2)]
    assert result.splits["ood_test"].judge_mean == pytest.approx(statistics.fmean(per_round))
    assert "LatentGenerationBackend" in json.loads((tmp_path / "evaluation.json").read_text())["config"]["generate"]


def test_runner_diversity_and_judge_failures(shapes_splits, embedder):
    dataset = shapes_splits["ood_test"]
    varied = iter(
        [
            "The sea is calm and the boat is red.",
            "Quite remarkable, a triangle of green.",
            "FAIL",
            "Beep boop, I count four yellow squares today.",
        ]
    )

    def distinct_generate(prompts, images):
        return [next(varied) for _ in prompts]

    def copy_generate(prompts, images):
        return ["I see a red circle." for _ in prompts]

    judge = JudgeReward("mmrole", scripted_judge)
    one = dataset.select([0])
    distinct = evaluate(one, distinct_generate, judge, num_generations=4, embedder=embedder).splits["test"]
    copies = evaluate(one, copy_generate, judge, num_generations=4, embedder=embedder).splits["test"]
    assert distinct.diversity["embedding"] > copies.diversity["embedding"] == pytest.approx(1.0, abs=1e-4)
    assert distinct.diversity["distinct_2"] > copies.diversity["distinct_2"]
    assert distinct.diversity["self_bleu"] < copies.diversity["self_bleu"]
    # The 'FAIL' generation has no judgement: counted, and left out of the mean (its round has no score).
    assert distinct.judge_failures == 1 and math.isnan(distinct.judge_per_generation[2])
    ok = [
        expected_metric(t) for t in ("The sea is calm and the boat is red.", "Quite remarkable, a triangle of green.")
    ]
    ok.append(expected_metric("Beep boop, I count four yellow squares today."))
    assert distinct.judge_mean == pytest.approx(statistics.fmean(ok))
    assert copies.judge_std == 0.0
    with pytest.raises(ValueError, match="returned 2 completions"):
        evaluate(one, lambda p, i: ["a", "b"], None, num_generations=1, embedder=None)


def test_right_padding_is_refused(tiny_cache):
    from tests.fixtures.models import tiny_vlm

    model, processor = tiny_vlm("tiny", cache_dir=tiny_cache)
    processor.tokenizer.padding_side = "right"
    with pytest.raises(ValueError, match="left padding"):
        VLMGenerationBackend(model, processor)


def test_docs_snippets_run(tiny_cache, tmp_path, monkeypatch, capsys):
    """Every ```python block of docs/tasks_and_rewards.md runs, in order, in one namespace."""
    import re

    doc = (ROOT / "docs" / "tasks_and_rewards.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/tasks_and_rewards.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "[0.875, 0.875]" in out
    assert "{'sft': 5, 'rl': 2, 'ls1_test': 2, 'ls2_test': 2}" in out  # 10 HCMAS train records: [0, 5), [5, 7)
    assert "{'sft': 16, 'rl': 12, 'id_test': 4, 'ood_test': 4} 0 0" in out  # 32 synthetic sessions
    assert (tmp_path / "eval_out" / "evaluation.md").read_text().startswith("| split |")
    assert 'You are a helpful assistant for a user who is "a Father at Home; a Fireman at Community".' in out


def spy_generate(monkeypatch, model):
    """Record the keyword arguments of every `model.generate` call (generation itself still runs)."""
    calls = []
    generate = model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_plain_vlm_samples_tokens_at_the_paper_setting(tiny, eval_set, monkeypatch):
    model, processor = tiny
    calls = spy_generate(monkeypatch, model)
    state = torch.get_rng_state()
    rounds = generate_answers(
        model,
        processor,
        eval_set,
        8,
        batch_size=2,
        temperature=PAPER_EVAL_TEMPERATURE,
        top_k=PAPER_EVAL_TOP_K,
        num_generations=PAPER_EVAL_GENERATIONS,
        seed=0,
    )
    # Generation-major: 3 rounds of one answer per prompt; 2 batches x 3 rounds = 6 calls.
    assert len(rounds) == 3 and all(len(r) == len(eval_set) and all(isinstance(a, str) for a in r) for r in rounds)
    assert len(calls) == 6
    for kwargs in calls:
        # Token sampling at 0.1 among the top 64, nucleus filter off (Qwen2.5-VL's config would set top_p=0.001).
        assert (kwargs["do_sample"], kwargs["temperature"], kwargs["top_k"], kwargs["top_p"]) == (True, 0.1, 64, 1.0)
    # Seeded rounds: reproducible, and the caller's random state is left alone.
    assert torch.equal(torch.get_rng_state(), state)
    again = generate_answers(model, processor, eval_set, 8, batch_size=2, temperature=0.1, top_k=64, num_generations=3, seed=0)  # fmt: skip
    assert again == rounds
    # At temperature 0.1 the rounds can differ (the untrained tiny model's logits are flat): there is a spread.
    assert len({tuple(r) for r in rounds}) > 1
    # Backward compatible: no num_generations -> one answer per prompt; sample=True -> the rollout setting.
    calls.clear()
    greedy = generate_answers(model, processor, eval_set, 8)
    assert len(greedy) == len(eval_set) and isinstance(greedy[0], str) and calls[-1]["do_sample"] is False
    generate_answers(model, processor, eval_set, 8, sample=True)
    assert (calls[-1]["temperature"], calls[-1]["top_k"]) == (ROLLOUT_TEMPERATURE, 0)
    assert generate_answers(model, processor, eval_set, 8, num_generations=1) == [greedy]


def test_latent_model_samples_codes_at_the_paper_setting(latent, eval_set, monkeypatch):
    model, processor = latent
    calls = spy_generate(monkeypatch, model)
    rounds = generate_answers(
        model, processor, eval_set, 6, temperature=0.1, top_k=64, num_generations=PAPER_EVAL_GENERATIONS, seed=0
    )
    assert len(rounds) == 3 and all(len(r) == len(eval_set) for r in rounds)
    assert len(calls) == 3
    for kwargs in calls:
        assert (kwargs["do_sample_codes"], kwargs["code_temperature"], kwargs["code_top_k"]) == (True, 0.1, 64)
    generate_answers(model, processor, eval_set, 6, sample=True)
    assert (calls[-1]["code_temperature"], calls[-1]["code_top_k"]) == (ROLLOUT_TEMPERATURE, ROLLOUT_CODE_TOP_K)
    generate_answers(model, processor, eval_set, 6)
    assert calls[-1]["do_sample_codes"] is False
