"""How a command scores completions: the LLM judge on an OpenAI-compatible endpoint, TRL's named rewards, and rewards
or judges of the user's own by dotted import path."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .running import CommandError


@dataclass
class JudgeArguments:
    """Where the LLM judge is: an OpenAI-compatible endpoint (the paper's reward and evaluation)."""

    judge_base_url: str | None = field(
        default=None, metadata={"help": "The judge's endpoint, e.g. http://localhost:8000/v1 (a vLLM server)."}
    )
    judge_model: str | None = field(default=None, metadata={"help": "The judge model name the endpoint expects."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the judge's API key."}
    )
    judge_timeout: float = field(default=120.0, metadata={"help": "Seconds to wait for one judgement."})
    judge_max_concurrency: int = field(default=8, metadata={"help": "Most judge requests in flight at once."})


# TRL's reward functions that take no settings, by the names TRL's `grpo` script gives them
TRL_REWARD_FUNCS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward")


@dataclass
class RewardArguments(JudgeArguments):
    """How `eval` scores answers: the LLM judge, or a judge of your own."""

    reward: str = field(
        default="judge",
        metadata={
            "help": "'judge': an LLM judge compares each answer with the reference on the benchmark's dimensions "
            "(OpenAI-compatible endpoint; it needs a task). Or the dotted import path of a judge of your own (an "
            "object or class with `judge(prompts, completions, **columns)`), e.g. my_judges.KeywordJudge for a "
            "my_judges.py in the current folder; or of a reward function with TRL's signature (its reward is the "
            f"score), e.g. my_rewards.keyword_reward; or one of TRL's {', '.join(TRL_REWARD_FUNCS)}."
        },
    )


@dataclass
class RewardFuncsArguments(JudgeArguments):
    """How `grpo` scores completions: a list of rewards, summed with GRPOConfig's `reward_weights`."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["judge"],
        metadata={
            "help": "The rewards, summed (weighted by reward_weights when set): 'judge' (the task's LLM judge on an "
            f"OpenAI-compatible endpoint), TRL's {', '.join(TRL_REWARD_FUNCS)}, or the dotted import path of a "
            "function with TRL's reward signature, e.g. my_rewards.length_reward for a my_rewards.py in the current "
            "folder."
        },
    )


def build_judge(args: JudgeArguments, task: str):
    """The task's [`JudgeReward`] on the configured endpoint. An unreachable endpoint, and a judge that refuses or
    cannot answer a test judgement (bad key, unknown model, unreadable answer), fail here, at start-up."""
    from ..rewards.judge import JudgeConnectionError, JudgeReward, OpenAIJudgeBackend

    if not args.judge_base_url or not args.judge_model:
        raise CommandError(
            "the judge needs judge_base_url (an OpenAI-compatible endpoint, e.g. a vLLM server at "
            "http://localhost:8000/v1) and judge_model; or score offline with your own, by dotted import path: "
            "reward_funcs for grpo (a function with TRL's reward signature, e.g. my_rewards.length_reward), reward for "
            "eval (a judge, e.g. my_judges.KeywordJudge)."
        )
    try:
        backend = OpenAIJudgeBackend(
            args.judge_base_url, args.judge_model, api_key_env=args.judge_api_key_env, timeout=args.judge_timeout
        )
    except ImportError as err:
        raise CommandError(str(err)) from err
    try:
        return JudgeReward(
            "pcogalign" if task == "pcogalign" else "mmrole", backend, max_concurrency=args.judge_max_concurrency
        )
    except JudgeConnectionError as err:
        raise CommandError(str(err)) from err


def import_reward(path: str, field_name: str = "reward"):
    """The object a dotted import path names (`package.module.name`), as TRL's scripts resolve `reward_funcs`: the
    working directory is searched first, so `my_rewards.length_reward` finds `./my_rewards.py`. A path that does not
    import is a clear error."""
    import importlib

    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise CommandError(
            f"{field_name}: {path!r} is neither 'judge' nor a dotted import path (package.module.function), e.g. "
            "my_rewards.length_reward."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CommandError(
            f"{field_name}: cannot import module {module_name!r} of {path!r} (searched the working directory "
            f"{Path.cwd()} and the installed packages): {err}"
        ) from err
    if not hasattr(module, attribute):
        raise CommandError(f"{field_name}: module {module_name!r} has no {attribute!r} (from {path!r}).")
    return getattr(module, attribute)


def build_reward_funcs(args: RewardFuncsArguments, task: str | None, reward_weights: list[float] | None) -> list:
    """`reward_funcs` as the reward objects GRPO sums: the task's judge (reached and test-asked now, before any model
    loads), TRL's named rewards, and imported functions; their count checked against `reward_weights`."""
    names = list(args.reward_funcs or [])
    if not names:
        raise CommandError(
            "reward_funcs is empty: give at least one reward ('judge', one of TRL's "
            f"{', '.join(TRL_REWARD_FUNCS)}, or a dotted import path such as my_rewards.length_reward)."
        )
    if reward_weights is not None and len(reward_weights) != len(names):
        raise CommandError(
            f"reward_weights has {len(reward_weights)} weight(s) for {len(names)} reward_funcs {names}: give one "
            "weight per reward, in the same order, or leave reward_weights unset (every weight 1)."
        )
    rewards = []
    for name in names:
        if name == "judge":
            if task is None:
                raise CommandError(
                    "reward_funcs 'judge' scores with a task's rubric (mmrole or pcogalign), so it needs task and "
                    "task_root; for a dataset_name, give reward functions of your own (dotted import paths)."
                )
            rewards.append(build_judge(args, task))
        elif name in TRL_REWARD_FUNCS:
            import trl.rewards

            rewards.append(getattr(trl.rewards, name))
        else:
            rewards.append(import_reward(name, "reward_funcs"))
    return rewards
