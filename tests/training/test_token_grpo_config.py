"""`TokenGRPOConfig`: the latent config's loss, embedder and failure-stop fields and defaults, from one mixin."""

import pytest

from trl_latent.training.losses import DrGRPOLoss
from trl_latent.training.token_grpo_config import TokenGRPOConfig


def test_token_config_shares_the_latent_config_fields_and_defaults():
    """TokenGRPOConfig and LatentGRPOConfig take the loss, the embedder and the failure stop from one mixin, with the
    paper's loss_type and beta; a name sets loss_type, as for the latent config."""
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.policy_loss_config import PolicyLossConfigMixin

    common = dict(use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4)
    token, latent = TokenGRPOConfig("out", **common), LatentGRPOConfig("out", **common)
    assert issubclass(TokenGRPOConfig, PolicyLossConfigMixin) and issubclass(LatentGRPOConfig, PolicyLossConfigMixin)
    for name in ("loss", "loss_type", "beta", "diversity_embedder", "max_failed_reward_batches"):
        assert getattr(token, name) == getattr(latent, name), name
    assert (token.loss_type, token.beta, token.max_failed_reward_batches) == ("grpo", 0.01, 3)
    assert TokenGRPOConfig("out", loss="dr_grpo", **common).loss_type == "dr_grpo"
    with pytest.raises(ValueError, match="max_failed_reward_batches must be >= 0"):
        TokenGRPOConfig("out", max_failed_reward_batches=-1, **common)
    assert "DrGRPOLoss" in TokenGRPOConfig("out", loss=DrGRPOLoss(), **common).to_json_string()
