"""`trl_latent.paper` is where the paper's settings live, and every config, function and command that defaults to one
of them reads it from there (so changing one number there changes it everywhere, and nothing else restates it)."""

import argparse
import inspect

from trl_latent import paper
from trl_latent.commands import eval as eval_command
from trl_latent.commands import grpo as grpo_command
from trl_latent.commands import plan as plan_command
from trl_latent.commands import sft as sft_command
from trl_latent.evaluation import LatentGenerationBackend, VLMGenerationBackend, evaluate
from trl_latent.modeling.configuration import LatentActionConfig
from trl_latent.modeling.generation import latent_generate
from trl_latent.planning.plan import make_plan
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.token_grpo_config import TokenGRPOConfig

CPU = dict(use_cpu=True, bf16=False)


def test_the_values_are_the_papers():
    assert (paper.CODEBOOK_SIZE, paper.INVERSE_LAYERS, paper.POLICY_LAYERS, paper.WORLD_SFT_LAST_LAYERS) == (
        128,
        4,
        8,
        8,
    )
    assert (paper.ROLLOUT_CODE_TOP_K, paper.ROLLOUT_CODE_TEMPERATURE, paper.TOKEN_STRATEGY) == (32, 1.0, "greedy")
    assert paper.KL_BETA == 0.01
    assert (paper.PAPER_EVAL_GENERATIONS, paper.PAPER_EVAL_TEMPERATURE, paper.PAPER_EVAL_TOP_K) == (3, 0.1, 64)


def test_configs_and_functions_default_to_them():
    config = LatentActionConfig()
    assert (config.codebook_size, config.inverse_layers, config.policy_layers) == (128, 4, 8)
    for args in (LatentGRPOConfig("out", per_device_train_batch_size=8, num_generations=8, **CPU),):
        assert (args.code_top_k, args.code_temperature, args.token_strategy) == (32, 1.0, "greedy")
    assert LatentGRPOConfig("out", **CPU).beta == TokenGRPOConfig("out", **CPU).beta == paper.KL_BETA
    assert LatentSFTConfig("out", stage="world_sft", **CPU).world_sft_last_layers == paper.WORLD_SFT_LAST_LAYERS
    generate = inspect.signature(latent_generate).parameters
    assert (generate["code_top_k"].default, generate["code_temperature"].default) == (32, 1.0)
    assert generate["token_strategy"].default == "greedy"
    assert inspect.signature(evaluate).parameters["num_generations"].default == 3
    for backend in (VLMGenerationBackend, LatentGenerationBackend):  # the generations are sampled at 0.1 / top-64
        parameters = inspect.signature(backend).parameters
        assert (parameters["temperature"].default, parameters["top_k"].default) == (0.1, 64), backend


def _defaults(parser) -> dict:
    return {action.dest: action.default for action in parser._actions if action.dest != "help"}


def test_the_commands_default_to_them():
    sft = _defaults(sft_command.make_parser())
    assert (sft["codebook_size"], sft["inverse_layers"], sft["policy_layers"]) == (128, 4, 8)
    grpo_latent, grpo_token = _defaults(grpo_command.make_parser("latent")), _defaults(grpo_command.make_parser())
    assert grpo_latent["code_top_k"] == 32 and grpo_latent["beta"] == grpo_token["beta"] == 0.01
    assert _defaults(grpo_command.make_parser("token"))["loss_type"] == "grpo"
    root = argparse.ArgumentParser()
    plan_command.add_parser(root.add_subparsers())
    plan = _defaults(root._subparsers._group_actions[0].choices["plan"])
    signature = inspect.signature(make_plan).parameters
    for flag in ("num_gpus", "batch_size", "seq_len", "image_tokens", "precision"):
        assert plan[flag] == signature[flag].default, flag
    fields = eval_command.EvalArguments.__dataclass_fields__
    assert (fields["num_generations"].default, fields["temperature"].default, fields["top_k"].default) == (3, 0.1, 64)
