"""`trl-latent grpo`: reinforcement learning on a task's RL split, from a YAML config.

```
trl-latent grpo --config examples/recipes/qwen2.5-vl-3b/mmrole/6_grpo.yaml
trl-latent grpo --config examples/recipes/qwen2.5-vl-3b/mmrole/token_grpo.yaml      # the token-level baseline
accelerate launch --config_file examples/accelerate_configs/zero2.yaml -m trl_latent.cli grpo --config ...
```

`action_space: latent` (default) trains the policy of a saved latent action model with `LatentGRPOTrainer`
(`LatentGRPOConfig` fields: `loss`, `code_top_k`, ...); `action_space: token` trains a plain VLM with
`TokenGRPOTrainer` (`TokenGRPOConfig` fields). Both compute the objective with the same loss classes
(`trl_latent.training.losses`), so the two runs differ only in the action space. The prompts are a task's RL split
(`task`, `task_root`) or any prompt dataset in TRL's format (`dataset_name`: a local file or folder, or a Hub name).
`reward_funcs` lists the rewards, summed with `reward_weights`: the task's LLM judge on an OpenAI-compatible endpoint
(the paper's; `judge`), TRL's named rewards, or reward functions given by dotted import paths.

Order of work: parse and check every input, load the prompts, reach the judge (and have it answer one test
judgement), then load the model and train. A run whose judge fails every judgement of `max_failed_reward_batches`
batches in a row saves a checkpoint and stops with exit status 1, saying how to resume.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .models import (
    ACTION_SPACES,
    check_latent_model,
    check_model,
    is_text_only_model,
    load_processor,
    model_loading,
    processor_source,
)
from .parsing import parse, peek, trl_parser
from .rewards import RewardFuncsArguments, build_reward_funcs
from .running import CommandError, RunError, register, run, say, summary_line
from .task_data import DatasetArguments, TaskArguments, load_prompts
from .training import train_and_save

PROG = "trl-latent grpo"
SUMMARY = "Reinforcement learning on a task's prompts: over latent actions (action_space: latent, LatentGRPOTrainer) or over tokens (action_space: token, TokenGRPOTrainer), with the same loss classes."


@dataclass
class GRPOScriptArguments(TaskArguments, DatasetArguments, RewardFuncsArguments):
    """The prompts (a task's, or a `dataset_name` of your own) and the rewards (the training settings are
    `LatentGRPOConfig`'s, or `TokenGRPOConfig`'s for the token baseline; the model and how it loads,
    `model_name_or_path` and the LoRA, dtype and 4/8-bit flags, TRL's `ModelConfig`'s)."""

    action_space: str = field(
        default="latent",
        metadata={
            "help": "'latent': RL over the latent actions of a saved latent action model (LatentGRPOTrainer). "
            "'token': RL over tokens of a plain VLM (TokenGRPOTrainer), the baseline.",
            "choices": list(ACTION_SPACES),
        },
    )


def make_parser(action_space: str = "latent"):
    from trl import ModelConfig

    from ..training.latent_grpo_config import LatentGRPOConfig
    from ..training.token_grpo_config import TokenGRPOConfig

    config_class = TokenGRPOConfig if action_space == "token" else LatentGRPOConfig
    return trl_parser((GRPOScriptArguments, config_class, ModelConfig), PROG, SUMMARY)


def _main(argv: list[str]) -> int:
    action_space = peek(argv, "action_space", "latent")
    if action_space not in ACTION_SPACES:
        raise CommandError(f"action_space must be one of {list(ACTION_SPACES)} (got {action_space!r}).")
    latent = action_space == "latent"
    script_args, training_args, model_args = parse(make_parser(action_space), argv, PROG)
    model_path = model_args.model_name_or_path

    if model_path is None:
        raise CommandError(
            "set model_name_or_path: the saved latent action model after world_sft (latent), or the VLM after token "
            "SFT (token)."
        )
    if latent:
        check_latent_model(model_path, command="grpo")
    else:
        check_model(model_path, "model_name_or_path")
    peft_config, quantization_config = model_loading(model_args, training_args, latent, argv)
    dataset = load_prompts(script_args, takes_images=not is_text_only_model(model_path), what="grpo")
    rewards = build_reward_funcs(script_args, script_args.task, training_args.reward_weights)  # judge reached here
    source = script_args.dataset_name or f"{script_args.task} prompts"
    say(f"{PROG}: {action_space} RL on {len(dataset)} prompts of {source}, rewards {script_args.reward_funcs}")

    from transformers import set_seed

    set_seed(training_args.seed)
    processor = load_processor(processor_source(model_path), padding_side="left")
    if latent:
        from ..training.latent_grpo_trainer import LatentGRPOTrainer

        trainer = LatentGRPOTrainer(
            model_path,
            reward_funcs=rewards,
            args=training_args,
            train_dataset=dataset,
            processing_class=processor,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
    else:
        from ..training.token_grpo_trainer import TokenGRPOTrainer

        trainer = TokenGRPOTrainer(
            model=model_path,
            reward_funcs=rewards,
            args=training_args,
            train_dataset=dataset,
            processing_class=processor,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )

    from ..training.reward_failures import RewardFailureError

    try:
        result = train_and_save(
            trainer, processor, training_args.output_dir, training_args.resume_from_checkpoint, "reward"
        )
    except RewardFailureError as err:  # the judge or the reward failed for batches in a row: checkpoint saved
        raise RunError(str(err)) from err
    say(f"{PROG}: done: {summary_line(result)}; saved to {training_args.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`trl-latent grpo [--config FILE.yaml] [--field value ...]`."""
    return run(PROG, _main, argv)


def add_parser(subparsers) -> None:
    register(subparsers, "grpo", "latent-action RL (or the token baseline) on a task, from a YAML config", main)


if __name__ == "__main__":
    sys.exit(main())
