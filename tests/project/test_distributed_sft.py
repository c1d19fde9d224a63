"""Two CPU processes under DeepSpeed ZeRO-3 through `accelerate launch`: `LatentSFTTrainer`, and RL from a saved model.

- SFT: the world-model SFT stage (the base tail trains, the rest of the base and every latent module is frozen) on a
  dataset the size of one global batch, so each step's loss is measured on the same records: it falls at every step;
  every trainable parameter changes, every frozen one is bit-identical, and both processes end with the weights one
  process ends with on the same global batches (two accumulated batches of 4): the gradients were averaged. (Equal
  weights on both processes alone would not show it: ZeRO-3 gathers each process's partition, whatever updated it.)
- RL: a latent model saved with `save_pretrained` (as stages 1-5 leave it) and loaded with
  `LatentActionModel.from_pretrained` after the ZeRO-3 config exists (so the load is partitioned), both with its base
  weights saved (after world-model SFT) and with the base loaded from its reference (after stages 1-4). Both load the
  saved weights exactly; RL on the first changes only the policy, on both processes as in one process that samples
  the same rollouts (`sample_as_ranks`, tests/conftest.py).

The first DeepSpeed run on a machine compiles a small communication op (about 40 s).
"""

from __future__ import annotations

import textwrap

import pytest
import torch

COMMON = textwrap.dedent(
    """
    import contextlib
    import os
    import sys

    import torch
    from rank_sampling import sample_as_ranks
    from transformers import AutoProcessor, set_seed

    from trl_latent.modeling import LatentActionModel


    def snapshot(model):
        params = dict(model.named_parameters())
        gather = contextlib.nullcontext()
        if any(hasattr(p, "ds_id") for p in params.values()):  # ZeRO-3: partitioned
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(params.values()))
        with gather:
            return {name: p.detach().clone() for name, p in params.items()}


    def partitioned(model):
        return sorted({name.split(".")[0] for name, p in model.named_parameters() if hasattr(p, "ds_id")})
    """
)

SFT_SCRIPT = COMMON + textwrap.dedent(
    """
    from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset
    from trl_latent.experiments.shapes.models import tiny_vlm_path
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    out_dir, cache_dir = sys.argv[1], sys.argv[2]
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # 2 under `accelerate launch`, 1 for the reference run
    # The config first: under ZeRO-3 the base is then loaded already partitioned (docs/architecture.md section 4).
    # A global batch of 8 records: 4 per process, or (in one process) the same two batches accumulated in one step.
    args = LatentSFTConfig(
        out_dir, stage="world_sft", world_sft_last_layers=1, assistant_only_loss=True, per_device_train_batch_size=4,
        gradient_accumulation_steps=2 // processes, max_steps=6, learning_rate=1e-2, use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )
    set_seed(0)
    path = tiny_vlm_path("tiny", cache_dir=cache_dir)
    model = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1)
    before = snapshot(model)
    trainer = LatentSFTTrainer(
        model, args, train_dataset=synthetic_sft_dataset(8, seed=0), processing_class=AutoProcessor.from_pretrained(path)
    )
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    trainer.train()
    after = snapshot(trainer.accelerator.unwrap_model(trainer.model_wrapped))
    torch.save(
        {
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "zero_stage": getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", None),
            "partitioned": partitioned(trainer.model),
            "trainable": trainable,
            "changed": sorted(n for n in before if not torch.equal(before[n], after[n])),
            "before": {n: before[n] for n in trainable},
            "after": {n: after[n] for n in trainable},
            "log_history": trainer.state.log_history,
        },
        f"{out_dir}/rank{trainer.accelerator.process_index}.pt",
    )
    # An orderly teardown: a process that exits with its process group alive can abort in the communication
    # threads' destructors ("terminate called without an active exception", seen once on a clean clone).
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    """
)

RL_SCRIPT = COMMON + textwrap.dedent(
    """
    from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

    out_dir, with_base, without_base = sys.argv[1], sys.argv[2], sys.argv[3]
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # 2 under `accelerate launch`, 1 for the reference run
    sample_as_ranks(2 // processes)  # one process samples its 8 rollouts as two processes sample 4 each
    args = LatentGRPOConfig(
        out_dir, per_device_train_batch_size=8 // processes, num_generations=4, max_completion_length=6, max_steps=2,
        learning_rate=1e-2, use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=0,
    )
    set_seed(0)
    model = LatentActionModel.from_pretrained(with_base)  # base weights in the folder (after world-model SFT)
    reloaded = LatentActionModel.from_pretrained(without_base)  # base from config.base_model_name_or_path
    base_folder = reloaded.config.base_model_name_or_path
    # The parameters of the models that were saved, by name (written by the test before the launch).
    saved = {key: torch.load(f"{folder}/expected.pt") for key, folder in (("with_base", with_base),
                                                                         ("without_base", without_base))}
    loaded = {"with_base": snapshot(model), "without_base": snapshot(reloaded)}
    mismatch = {
        key: sorted(set(saved[key]) ^ set(loaded[key]))
        + sorted(n for n, t in loaded[key].items() if n in saved[key] and not torch.equal(t, saved[key][n]))
        for key in saved
    }
    partitioned_at_load = {"with_base": partitioned(model), "without_base": partitioned(reloaded)}
    del reloaded

    def text_length(completions, **kwargs):
        return [float(len(c[0]["content"])) for c in completions]

    trainer = LatentGRPOTrainer(
        model, reward_funcs=text_length, args=args, train_dataset=synthetic_rl_dataset(16),
        processing_class=AutoProcessor.from_pretrained(base_folder),
    )
    before = loaded["with_base"]
    trainer.train()
    after = snapshot(trainer.accelerator.unwrap_model(trainer.model_wrapped))
    torch.save(
        {
            "num_processes": trainer.accelerator.num_processes,
            "zero_stage": getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", None),
            "mismatch": mismatch,
            "loaded_names": {key: sorted(v) for key, v in loaded.items()},
            "partitioned_at_load": partitioned_at_load,
            "changed": sorted(n for n in before if not torch.equal(before[n], after[n])),
            "before": {n: t for n, t in before.items() if n.startswith("policy.")},
            "policy": {n: t for n, t in after.items() if n.startswith("policy.")},
            "log_history": trainer.state.log_history,
        },
        f"{out_dir}/rank{trainer.accelerator.process_index}.pt",
    )
    # An orderly teardown: a process that exits with its process group alive can abort in the communication
    # threads' destructors ("terminate called without an active exception", seen once on a clean clone).
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    """
)


# Two processes' weights and one process's, after training on the same global batches, differ by at most this fraction
# of what training moved them: ||w_2 - w_1|| / ||w_1 - w_0|| over all trained parameters (measured: 1.7e-5 for SFT,
# 4.6e-6 for RL; with each process updating from its own gradient partition instead: 0.93 and 0.68, while both
# processes still held equal weights). Element-wise the runs agree to ~1e-7, except where Adam scales a gradient that
# is numerically zero (a key bias under softmax) up to a whole step: up to 8e-5 there.
MAX_RELATIVE_DIFFERENCE = 1e-3


def relative_difference(run: dict, reference: dict, key: str) -> float:
    """||run - reference|| / ||reference - initial|| over the parameters in `reference[key]` (initial: `before`)."""
    names = sorted(reference[key])

    def flat(weights: dict) -> torch.Tensor:
        return torch.cat([weights[name].flatten() for name in names])

    moved = torch.linalg.vector_norm(flat(reference[key]) - flat(reference["before"]))
    return (torch.linalg.vector_norm(flat(run[key]) - flat(reference[key])) / moved).item()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_process_zero3_world_model_sft(tmp_path, tiny_cache, launch_two_processes, launch_one_process):
    from tests.fixtures.models import tiny_vlm_path

    tiny_vlm_path("tiny", cache_dir=tiny_cache)  # build the cached tiny VLM once, not in both processes at once
    ranks = launch_two_processes("zero3.yaml", SFT_SCRIPT, tmp_path / "two", tiny_cache)
    one_process = launch_one_process(SFT_SCRIPT, tmp_path / "one", tiny_cache)
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert "DEEPSPEED" in ranks[0]["distributed_type"] and ranks[0]["zero_stage"] == 3
    assert "base" in ranks[0]["partitioned"] and "policy" in ranks[0]["partitioned"]  # everything was partitioned
    trainable = ranks[0]["trainable"]
    assert any(".language_model.layers.1." in n for n in trainable)  # the last LM layer trains ...
    assert not any(".language_model.layers.0." in n for n in trainable)  # ... the first does not
    assert any(".visual." in n for n in trainable) and any("embed_tokens" in n for n in trainable)
    for rank in ranks:
        assert rank["changed"] == trainable  # every trainable parameter changed, every frozen one is bit-identical
    for name in trainable:  # both processes hold the same weights ...
        torch.testing.assert_close(ranks[0]["after"][name], ranks[1]["after"][name], rtol=0, atol=0)
    # ... and they are what one process ends with on the same global batch: the gradients were averaged.
    assert one_process["trainable"] == trainable and one_process["changed"] == trainable
    assert relative_difference(ranks[0], one_process, "after") < MAX_RELATIVE_DIFFERENCE
    losses = [h["loss"] for h in ranks[0]["log_history"] if "loss" in h]
    assert losses == pytest.approx([h["loss"] for h in one_process["log_history"] if "loss" in h], abs=1e-5)
    assert len(losses) == 6
    # Every step sees the same 8 records (one global batch), so the loss is measured on fixed data: it falls over the
    # six steps (measured: 6.133 -> 6.035 -> 6.123 -> 6.064 -> 6.050 -> 6.041 on the task's four answer patterns; on
    # one answer per character it fell at every step, 6.141 -> 5.735; one process's within 1e-6). The loss is a mean
    # over each process's tokens, so one process taking all 8 records as one batch (a mean over all tokens) trains
    # otherwise (measured: weights up to 0.058 apart after 6 steps); as two accumulated batches of 4, alike.
    assert losses[-1] < losses[0] - 0.05 and min(losses[3:]) < max(losses[:3]), losses


@pytest.fixture
def saved_models(steerable_latent_model, tmp_path):
    """A latent model saved twice: with its base weights (as world-model SFT leaves it) and without them."""
    model = steerable_latent_model()
    without_base = tmp_path / "without_base"
    model.save_pretrained(without_base)
    torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, without_base / "expected.pt")
    with torch.no_grad():  # a base that differs from its reference, as after world-model SFT
        model.base.model.language_model.norm.weight.add_(0.5)
    model.mark_base_modified()
    with_base = tmp_path / "with_base"
    model.save_pretrained(with_base)
    torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, with_base / "expected.pt")
    return with_base, without_base


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_process_zero3_rl_from_a_saved_latent_model(
    tmp_path, saved_models, launch_two_processes, launch_one_process
):
    with_base, without_base = saved_models
    ranks = launch_two_processes("zero3.yaml", RL_SCRIPT, tmp_path / "run", with_base, without_base)
    one_process = launch_one_process(RL_SCRIPT, tmp_path / "one", with_base, without_base)

    assert [r["num_processes"] for r in ranks] == [2, 2] and ranks[0]["zero_stage"] == 3
    for rank in ranks:
        # Loaded exactly the parameters of the saved model, by name and value, on both processes, partitioned from the
        # load on.
        assert rank["mismatch"] == {"with_base": [], "without_base": []}
        assert any(n.startswith("base.") for n in rank["loaded_names"]["with_base"])
        assert "base" in rank["partitioned_at_load"]["with_base"]
        assert "base" in rank["partitioned_at_load"]["without_base"]
    policy_names = sorted(ranks[0]["policy"])
    for rank in ranks:
        assert rank["changed"] == policy_names  # every policy parameter changed, nothing else did
    for name in policy_names:  # both processes hold the same policy ...
        torch.testing.assert_close(ranks[0]["policy"][name], ranks[1]["policy"][name], rtol=0, atol=0)
    # ... and it is what one process ends with on the same global batch, from the same first rollouts: the gradients
    # were averaged.
    assert one_process["mismatch"] == {"with_base": [], "without_base": []} and one_process["changed"] == policy_names
    rewards = [[h["reward"] for h in run["log_history"] if "reward" in h] for run in (ranks[0], one_process)]
    assert len(rewards[0]) == len(rewards[1]) == 2 and rewards[0][0] == pytest.approx(rewards[1][0], abs=1e-6)
    assert relative_difference(ranks[0], one_process, "policy") < MAX_RELATIVE_DIFFERENCE
    assert rewards[0][1] == pytest.approx(rewards[1][1], abs=1e-6)  # and so sampled the same second rollouts
    kl = [h["latent/kl"] for h in ranks[0]["log_history"] if "latent/kl" in h]
    assert kl[0] == 0.0 and kl[1] > 0.0, kl
