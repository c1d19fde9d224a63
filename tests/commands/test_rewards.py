"""`commands.rewards`: the judge, TRL's named rewards and rewards by dotted import path, each problem named before a
model loads."""

import pytest

from tests.fixtures.commands import CPU, RECIPE, fails, fake_latent_model


def test_an_empty_reward_list_is_refused():
    from trl_latent.commands.rewards import RewardFuncsArguments, build_reward_funcs
    from trl_latent.commands.running import CommandError

    with pytest.raises(CommandError, match="reward_funcs is empty: give at least one reward"):
        build_reward_funcs(RewardFuncsArguments(reward_funcs=[]), task=None, reward_weights=None)
    rewards = build_reward_funcs(RewardFuncsArguments(reward_funcs=["think_format_reward"]), None, [2.0])
    assert [reward.__name__ for reward in rewards] == ["think_format_reward"]


def test_judge_and_reward_problems(tmp_path, capsys, no_model_loading, shapes):
    model = fake_latent_model(tmp_path / "stage5")
    rl = ["grpo", "--config", str(RECIPE / "mmrole" / "6_grpo.yaml"), *CPU, "--model_name_or_path", model]
    rl += ["--task_root", str(shapes), "--image_size", "56", "56"]
    message = fails([*rl, "--judge_base_url", "http://127.0.0.1:9/v1", "--judge_timeout", "2"], capsys)
    assert "Cannot reach the judge at http://127.0.0.1:9/v1" in message
    message = fails([*rl, "--reward_funcs", "rubric"], capsys)
    assert "reward_funcs: 'rubric' is neither 'judge' nor a dotted import path" in message
    message = fails([*rl, "--reward_funcs", "think_format_reward", "no_such_package.reward"], capsys)
    assert "reward_funcs: cannot import module 'no_such_package'" in message
    message = fails([*rl, "--reward_funcs", "trl_latent.experiments.shapes.reward.no_such_reward"], capsys)
    assert "has no 'no_such_reward'" in message
    evaluation = ["eval", "--task", "mmrole", "--task_root", str(shapes), "--models", model]
    message = fails(evaluation, capsys)
    assert "the judge needs judge_base_url" in message and "my_judges.KeywordJudge" in message
    message = fails([*evaluation, "--reward", "trl_latent.paper.CODEBOOK_SIZE"], capsys)
    assert "is neither a judge nor a reward function" in message


def test_a_reward_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    """As TRL's scripts do: `--reward my_rewards.length_reward` finds ./my_rewards.py without PYTHONPATH."""
    import sys

    from trl_latent.commands.rewards import import_reward
    from trl_latent.commands.running import CommandError

    (tmp_path / "my_rewards_for_test.py").write_text(
        "def length_reward(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    reward = import_reward("my_rewards_for_test.length_reward")
    assert reward(["ab", "abc"]) == [2.0, 3.0]
    with pytest.raises(CommandError, match=f"searched the working directory {tmp_path}"):
        import_reward("no_such_module_here.reward")
    sys.modules.pop("my_rewards_for_test", None)
