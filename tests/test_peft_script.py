"""PEFT through TRL's script path: `--use_peft --lora_target_modules q_proj v_proj` with `LatentGRPOTrainer`.

TRL's example scripts (its VLM GRPO script, say) parse a `ModelConfig` and pass `get_peft_config(model_args)`, a
`LoraConfig(task_type="CAUSAL_LM", target_modules={"q_proj", "v_proj"}, ...)`. The latent trainer puts that adapter on
the policy (the only module RL trains) and it learns there; the base and the world model stay bit-identical. Names no
policy module has fail with the project's message naming `POLICY_LORA_TARGET_MODULES`.
"""

from __future__ import annotations

import copy

import pytest
import torch
from trl import ModelConfig, TrlParser, get_peft_config

from trl_latent.experiments.shapes.models import tiny_vlm
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_grpo_trainer import (
    POLICY_LORA_TARGET_MODULES,
    LatentGRPOTrainer,
    policy_peft_config,
)


@pytest.fixture(scope="module")
def processor(tiny_cache):
    return tiny_vlm("tiny", cache_dir=tiny_cache)[1]


@pytest.fixture(scope="module")
def initial_model(steerable_latent_model):
    return steerable_latent_model()


@pytest.fixture
def model(initial_model):
    return copy.deepcopy(initial_model)


def distinct_characters(completions, **kwargs):
    return [float(len(set(c[0]["content"]))) for c in completions]


def script_arguments(tmp_path, *extra):
    """What a TRL script's `TrlParser((..., GRPOConfig, ModelConfig))` returns, with the latent config swapped in."""
    parser = TrlParser((LatentGRPOConfig, ModelConfig))
    return parser.parse_args_and_config(
        args=[
            *("--output_dir", str(tmp_path), "--per_device_train_batch_size", "4", "--num_generations", "4"),
            *("--max_completion_length", "6", "--max_steps", "3", "--learning_rate", "5e-2", "--use_cpu"),
            *("--bf16", "false", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"),
            *("--disable_tqdm", "true", "--seed", "0", *extra),
        ]
    )


def test_trl_lora_arguments_train_an_adapter_on_the_policy(model, processor, tmp_path):
    training_args, model_args = script_arguments(
        tmp_path, "--use_peft", "--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4"
    )
    peft_config = get_peft_config(model_args)
    assert peft_config.task_type == "CAUSAL_LM" and peft_config.target_modules == {"q_proj", "v_proj"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer = LatentGRPOTrainer(
        model,
        reward_funcs=distinct_characters,
        args=training_args,
        train_dataset=synthetic_rl_dataset(16, seed=0),
        processing_class=processor,
        peft_config=peft_config,
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()

    lora = {n: p.detach() for n, p in trainer.model.named_parameters() if "lora_" in n}
    adapted = sorted({n.split(".lora_")[0].removeprefix("base_model.model.") for n in lora})
    assert adapted == ["policy.layers.0.self_attn.q_proj", "policy.layers.0.self_attn.v_proj"]
    assert all(not torch.equal(lora_before[n], lora[n]) for n in lora)  # every adapter weight learned
    after = {
        n.removeprefix("base_model.model.").replace(".base_layer.", "."): p.detach()
        for n, p in trainer.model.named_parameters()
        if "lora_" not in n
    }
    assert after.keys() == before.keys()
    assert [n for n in before if not torch.equal(before[n], after[n])] == []  # base, world model, policy weights
    assert trainer.model.peft_config["default"].task_type is None  # the plain PeftModel wraps the latent model
    assert peft_config.task_type == "CAUSAL_LM"  # the caller's config is not modified
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3


def test_module_names_outside_the_policy_fail_naming_the_policy_targets(model, processor, tmp_path):
    training_args, model_args = script_arguments(tmp_path, "--use_peft", "--lora_target_modules", "q_proj", "c_attn")
    with pytest.raises(ValueError, match=r"\['c_attn'\] match no module of the policy.*POLICY_LORA_TARGET_MODULES"):
        LatentGRPOTrainer(
            model,
            reward_funcs=distinct_characters,
            args=training_args,
            train_dataset=synthetic_rl_dataset(8),
            processing_class=processor,
            peft_config=get_peft_config(model_args),
        )


@pytest.mark.parametrize("targets", [None, "all-linear"])
def test_no_targets_or_all_linear_mean_the_policy_projections(model, targets):
    config = get_peft_config(ModelConfig(use_peft=True, lora_target_modules=targets))
    assert policy_peft_config(config, model).target_modules == POLICY_LORA_TARGET_MODULES


def test_scoped_names_follow_pefts_matching_rule(model):
    from peft.tuners.tuners_utils import check_target_module_exists

    config = policy_peft_config(
        get_peft_config(ModelConfig(use_peft=True, lora_target_modules=["self_attn.o_proj", "down_proj"])), model
    )
    matched = sorted(n for n, _ in model.named_modules() if check_target_module_exists(config, n))
    assert matched == ["policy.layers.0.mlp.down_proj", "policy.layers.0.self_attn.o_proj"]
