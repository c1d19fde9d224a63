"""`training.policy_loss_config`: the mixin both RL configs share announces the paper's defaults once."""

from trl_latent.training.token_grpo_config import TokenGRPOConfig


def test_the_papers_defaults_are_announced_once(caplog):
    """A user swapping GRPOConfig for a trl-latent config is told, once, that loss_type and beta default to the
    paper's; choosing them silences it."""
    from trl_latent.training import policy_loss_config

    policy_loss_config.logger.warning_once.cache_clear()
    common = dict(use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4)
    notice = "TokenGRPOConfig uses the paper's objective by default: loss_type='grpo' and beta=0.01"
    with caplog.at_level("WARNING", logger=policy_loss_config.__name__):
        TokenGRPOConfig("out", loss_type="dapo", beta=0.0, **common)
        assert notice not in caplog.text
        TokenGRPOConfig("out", **common)
        TokenGRPOConfig("out", **common)
    assert caplog.text.count(notice) == 1
