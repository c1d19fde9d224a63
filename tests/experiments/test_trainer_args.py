"""`experiments.trainer_args`: the trainer arguments every tiny CPU run of the embedded job shares, and its log reader."""

import types

import torch

from trl_latent.experiments.trainer_args import cpu_training_args, logged
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_sft_config import LatentSFTConfig


def test_cpu_arguments_switch_off_what_a_cpu_cannot_run_and_every_config_takes_them():
    args = cpu_training_args()
    assert args["use_cpu"] is not torch.cuda.is_available()
    assert args["bf16"] is False and args["activation_checkpointing"] is False
    assert (args["save_strategy"], args["logging_steps"], args["report_to"]) == ("no", 1, [])
    sft = LatentSFTConfig("out", stage="joint", **args)
    rl = LatentGRPOConfig("out", per_device_train_batch_size=8, **args)
    for config in (sft, rl):
        assert not config.bf16 and config.logging_steps == 1 and config.disable_tqdm
    assert cpu_training_args() is not args  # a fresh dict each time: a caller's changes stay its own


def test_logged_reads_every_value_of_a_key_in_order():
    trainer = types.SimpleNamespace(
        state=types.SimpleNamespace(log_history=[{"loss": 2}, {"reward": 0.5}, {"loss": 1.5, "reward": 1}, {}])
    )
    assert logged(trainer, "loss") == [2.0, 1.5] and logged(trainer, "reward") == [0.5, 1.0]
    assert logged(trainer, "kl") == []
