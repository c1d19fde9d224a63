"""`training.policy_loss_mixin`: how a trainer turns its config into the loss object it computes with, and its embedder."""

import pytest
import torch
from trl import GRPOConfig

from trl_latent.training.losses import BNPOLoss, DAPOLoss, DrGRPOLoss, GRPOLoss
from trl_latent.training.policy_loss_mixin import build_diversity_embedder, resolve_policy_loss

CPU = dict(use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4, max_completion_length=12)


def test_none_and_names_build_the_configs_loss_as_trl_does():
    args = GRPOConfig("out", loss_type="bnpo", **CPU)
    loss = resolve_policy_loss(None, args)
    assert isinstance(loss, BNPOLoss) and loss.max_completion_length == 12 and loss.beta == args.beta
    assert isinstance(resolve_policy_loss("grpo", GRPOConfig("out", **CPU)), GRPOLoss)
    assert isinstance(resolve_policy_loss("dapo", GRPOConfig("out", **CPU)), DAPOLoss)


def test_an_object_is_used_as_is_and_sets_the_configs_beta():
    args = GRPOConfig("out", beta=0.0, **CPU)
    loss = DrGRPOLoss(beta=0.04)
    assert resolve_policy_loss(loss, args) is loss
    assert loss.max_completion_length == 12 and args.beta == 0.04  # TRL builds the reference from args.beta


def test_a_loss_object_says_which_config_settings_it_replaces(caplog):
    args = GRPOConfig("out", epsilon=0.3, importance_sampling_level="sequence", **CPU)
    with caplog.at_level("WARNING", logger="trl_latent.training.policy_loss_mixin"):
        resolve_policy_loss(DrGRPOLoss(beta=args.beta, scale_rewards="none"), args)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "DrGRPOLoss replaces these GRPOConfig settings" in message
    for line in ("epsilon 0.3 -> 0.2", "importance_sampling_level 'sequence' -> 'token'", "scale_rewards"):
        assert line in message
    caplog.clear()  # a loss object that agrees with the config says nothing
    with caplog.at_level("WARNING", logger="trl_latent.training.policy_loss_mixin"):
        resolve_policy_loss(GRPOLoss(beta=args.beta, epsilon=0.3, importance_sampling_level="sequence"), args)
    assert not caplog.records


def test_unsupported_trl_options_are_refused_with_the_alternative():
    with pytest.raises(NotImplementedError, match="entropy_coef=0.0"):
        resolve_policy_loss(None, GRPOConfig("out", entropy_coef=0.1, **CPU))
    with pytest.raises(ValueError, match=r"Unknown loss 'ppo' \(from loss\)"):
        resolve_policy_loss("ppo", GRPOConfig("out", **CPU))


def test_the_embedder_spec():
    def embed(texts):
        return torch.ones(len(texts), 3)

    assert build_diversity_embedder(None) is None and build_diversity_embedder(embed) is embed
    with pytest.raises(TypeError, match="diversity_embedder must be None, 'default'"):
        build_diversity_embedder(3)
