"""`trl-latent eval` (`commands.eval`): a model scored on the task with the offline rubric, or on a dataset of the
user's own with a reward function."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

from tests.fixtures.documented_commands import TINY, documented_dataset_command, documented_eval_command
from trl_latent import evaluation
from trl_latent.cli import main
from trl_latent.evaluation import PAPER_EVAL_GENERATIONS, PAPER_EVAL_TEMPERATURE, PAPER_EVAL_TOP_K


def test_the_documented_eval_command_scores_with_a_reward_function(user_folder, capsys):
    """`eval --dataset_name ... --reward my_rewards.keyword_reward`: the reward function is the score (here the keyword
    rate of each model's answers, recomputed from the written generations), one row per model."""
    from trl_latent.cli import main

    command = documented_eval_command()
    assert command[:2] == ["trl-latent", "eval"]
    models = command[command.index("--models") + 1 : command.index("--dataset_name")]
    assert main(["grpo", *documented_dataset_command()[2:], *TINY]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(command[1:]) == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    keywords = [json.loads(line)["keyword"] for line in Path("prompts.jsonl").read_text().splitlines()]
    for model in models:
        name = Path(model).name
        result = json.loads(Path(f"outputs/my-eval/{name}/evaluation.json").read_text())
        (samples,) = result["samples"].values()
        rates = [sum(k in s["generations"][r] for s, k in zip(samples, keywords)) / len(keywords) for r in range(2)]
        assert result["summary"]["train"]["judge_per_generation"] == pytest.approx(rates)
        assert result["config"]["judge_counters"] == {"judge/judgements": 8.0, "judge/failed": 0.0}
        assert f"| {name} | train | 4 |" in table
    Path("p2.jsonl").write_text(json.dumps({"prompt": "Hi", "keyword": "a"}) + "\n")
    assert main(["eval", "--models", models[0], "--dataset_name", "p2.jsonl", "--splits", "train"]) == 2
    assert "reward 'judge' scores with a task's rubric" in " ".join(capsys.readouterr().err.split())
    assert (
        main(["eval", "--models", models[0], "--dataset_name", "p2.jsonl", "--reward", "my_rewards.keyword_reward"])
        == 2
    )
    assert "is one file, so its only split is 'train'" in capsys.readouterr().err


def test_eval_on_the_synthetic_task_with_the_rubric(tmp_path, shapes, tiny_cache, capsys, monkeypatch):
    """`eval` with the offline rubric: the reported score is the rubric recomputed from the stored generations."""
    from tests.fixtures.models import tiny_vlm_path
    from trl_latent.experiments.shapes.reward import rubric_scores

    monkeypatch.chdir(tmp_path)
    tiny = str(tiny_vlm_path("tiny", cache_dir=tiny_cache))
    argv = ["eval", "--task", "mmrole", "--task_root", str(shapes), "--models", tiny]
    argv += ["--reward", "trl_latent.experiments.shapes.reward.RubricJudge"]
    argv += ["--image_size", "56", "56", "--max_samples", "3", "--num_generations", "2", "--max_new_tokens", "8"]
    argv += ["--temperature", "1.0", "--embedder", "none", "--output_dir", "out"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    name = Path(tiny).name
    saved = json.loads((tmp_path / "out" / name / "evaluation.json").read_text())
    assert (tmp_path / "out" / "evaluation.md").read_text() in printed
    from trl_latent.data.mmrole import load_mmrole

    tests = load_mmrole(shapes, splits=("id_test", "ood_test"), image_size=(56, 56))
    for split in ("id_test", "ood_test"):
        rows = tests[split].select(range(min(3, len(tests[split]))))
        samples = saved["samples"][split]
        assert [s["id"] for s in samples] == rows["id"]
        per_round = []
        for k in range(2):
            metrics = []
            for sample, row in zip(samples, rows):
                scores = rubric_scores(sample["generations"][k], row["reference"], row["character"], row["question"])
                metrics.append(sum(scores["response"][d] / scores["reference"][d] for d in scores["response"]) / 4)
                assert sample["judge_metric"][k] == pytest.approx(metrics[-1])
            per_round.append(sum(metrics) / len(metrics))
        summary = saved["summary"][split]
        mean = sum(per_round) / 2
        assert summary["judge_mean"] == pytest.approx(mean)
        # Sample std over the 2 rounds (divisor n - 1 = 1).
        assert summary["judge_std"] == pytest.approx(math.sqrt(sum((r - mean) ** 2 for r in per_round) / (2 - 1)))
        assert f"| {name} | {split} | {len(rows)} | {summary['judge_mean']:.3f} ± " in printed


def test_protocol_constants_are_the_defaults():
    from trl_latent.commands.eval import EvalArguments

    assert (PAPER_EVAL_GENERATIONS, PAPER_EVAL_TEMPERATURE, PAPER_EVAL_TOP_K) == (3, 0.1, 64)
    defaults = {f.name: f.default for f in dataclasses.fields(EvalArguments)}
    assert (defaults["num_generations"], defaults["temperature"], defaults["top_k"]) == (3, 0.1, 64)
    for backend in (evaluation.VLMGenerationBackend, evaluation.LatentGenerationBackend):
        params = backend.__init__.__defaults__
        assert PAPER_EVAL_TEMPERATURE in params and PAPER_EVAL_TOP_K in params, backend
    assert evaluation.evaluate.__kwdefaults__["num_generations"] == PAPER_EVAL_GENERATIONS
