"""`RewardFunctionJudge`: a TRL reward function scoring `eval`'s answers, called as TRL's GRPOTrainer calls it."""

import pytest

from trl_latent.rewards.function_judge import RewardFunctionJudge


def test_conversational_prompts_get_completions_as_messages_and_columns_as_keywords():
    seen = {}

    def reward(prompts, completions, keyword, **kwargs):
        seen.update(prompts=prompts, completions=completions, kwargs=kwargs)
        return [float(k in c[0]["content"]) for c, k in zip(completions, keyword)]

    judge = RewardFunctionJudge(reward)
    prompts = [[{"role": "user", "content": "Colour?"}]] * 2
    judgements = judge.judge(prompts, ["It is red.", "Blue."], keyword=["red", "red"])
    assert [j.metric for j in judgements] == [1.0, 0.0] and [j.reward for j in judgements] == [1.0, 0.0]
    assert seen["completions"] == [
        [{"role": "assistant", "content": "It is red."}],
        [{"role": "assistant", "content": "Blue."}],
    ]
    assert seen["prompts"] == prompts and seen["kwargs"] == {}
    assert judge.metrics() == {"judge/judgements": 2.0, "judge/failed": 0.0}


def test_no_reward_is_a_failed_judgement_and_a_wrong_count_an_error():
    judge = RewardFunctionJudge(lambda completions, **kw: [None, float("nan"), -0.5], name="partial")
    judgements = judge.judge(["a", "b", "c"], ["x", "y", "z"])
    assert [j.ok for j in judgements] == [False, False, True] and judgements[2].metric == -0.5
    assert "partial gave no reward (None)" in judgements[0].error
    assert judge.metrics() == {"judge/judgements": 3.0, "judge/failed": 2.0}
    judge.reset_metrics()
    assert judge.metrics() == {"judge/judgements": 0.0, "judge/failed": 0.0}
    with pytest.raises(ValueError, match="returned 3 rewards for 2 completions"):
        judge.judge(["a", "b"], ["x", "y"])
    with pytest.raises(TypeError, match="must be callable"):
        RewardFunctionJudge("my_rewards.f")
