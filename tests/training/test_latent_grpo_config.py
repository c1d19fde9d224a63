"""`LatentGRPOConfig`: the paper's defaults, and what it refuses (TRL options that cannot apply to latent rollouts, bad
values), each with the alternative."""

from __future__ import annotations

import pytest

from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.losses import DrGRPOLoss


def test_config_defaults_follow_the_paper():
    args = LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8)
    assert (args.code_top_k, args.code_top_p, args.code_temperature) == (32, 1.0, 1.0)
    assert args.token_strategy == "greedy"
    assert (args.beta, args.epsilon, args.num_generations, args.learning_rate) == (0.01, 0.2, 8, 1e-6)
    assert (args.loss, args.loss_type, args.max_completion_length) == (None, "grpo", 1024)
    assert args.reuse_rollout_states and args.log_reference_kl
    assert not args.activation_checkpointing
    # A loss object is accepted and logged by its repr (config JSON must stay serialisable).
    args = LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, loss=DrGRPOLoss(beta=0.01))
    assert args.to_json_string().count("DrGRPOLoss(") == 1


@pytest.mark.parametrize(
    "field, value, alternative",
    [
        ("use_vllm", True, "use_vllm=False"),
        ("use_transformers_continuous_batching", True, "set both to False"),
        ("generation_kwargs", {"top_k": 5}, "code_top_k"),
        ("top_k", 50, "code_top_k"),
        ("top_p", 0.9, "code_top_p"),
        ("min_p", 0.1, "code_top_k"),
        ("repetition_penalty", 1.1, "code_top_k"),
        ("cache_implementation", "static", "latent_cache_implementation"),
        ("cast_lm_head_to_fp32", True, "float32"),
        ("use_liger_kernel", True, "leave it False"),
    ],
)
def test_config_rejects_what_cannot_apply(field, value, alternative):
    with pytest.raises(NotImplementedError, match=alternative):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, **{field: value})


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"Unknown loss 'ppo'.*'bnpo', 'dapo', 'dr_grpo', 'grpo'"):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, loss="ppo")
    with pytest.raises(ValueError, match="loss_type='cispo' has no trl-latent loss class"):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, loss_type="cispo")
    with pytest.raises(TypeError, match="PolicyLoss object"):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, loss=3)
    with pytest.raises(ValueError, match=r"generation_batch_size \(6\) must be divisible by num_generations \(4\)"):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="token_strategy"):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, token_strategy="beam")
    with pytest.raises(ValueError, match=r"latent_cache_implementation must be one of \('dynamic', 'static'\)"):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, latent_cache_implementation="paged")
    with pytest.raises(ValueError, match="compile_latent_step=True needs latent_cache_implementation='static'"):
        LatentGRPOConfig("out", use_cpu=True, per_device_train_batch_size=8, compile_latent_step=True)
