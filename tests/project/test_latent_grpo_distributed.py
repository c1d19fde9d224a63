"""LatentGRPOTrainer in 2 CPU processes through `accelerate launch`: DDP, DeepSpeed ZeRO-2 and ZeRO-3.

Each run trains 2 steps on a global batch of 2 prompts x 4 rollouts, then every process reports its (gathered)
parameters: only the policy changed, the base and world model are bit-identical, the KL to the policy-only reference is
0 at the first step and positive at the second, and both processes hold the policy that one process training on the
whole global batch ends with (same data order, seeds and rollouts): the gradients were averaged over the processes.
(Equal policies on both processes alone would not show it: ZeRO gathers each process's partition, whatever gradient
updated it.) The first DeepSpeed run on a machine compiles a small communication op (about 40 s).
"""

from __future__ import annotations

import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import contextlib
    import os
    import sys

    import torch
    from rank_sampling import sample_as_ranks
    from transformers import set_seed

    from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset
    from trl_latent.modeling import LatentActionModel
    from trl_latent.experiments.shapes.models import tiny_vlm, tiny_vlm_path
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

    out_dir, cache_dir = sys.argv[1], sys.argv[2]
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # 2 under `accelerate launch`, 1 for the reference run
    sample_as_ranks(2 // processes)  # one process samples its 8 rollouts as two processes sample 4 each
    # The config first: under ZeRO-3 the base is then loaded already partitioned (docs/architecture.md section 4).
    args = LatentGRPOConfig(
        out_dir, per_device_train_batch_size=8 // processes, num_generations=4, max_completion_length=6, max_steps=2,
        learning_rate=1e-2, use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=0,
    )
    set_seed(0)
    _, processor = tiny_vlm("tiny", cache_dir=cache_dir)
    model = LatentActionModel.from_base(
        tiny_vlm_path("tiny", cache_dir=cache_dir), codebook_size=16, inverse_layers=1, policy_layers=1,
        world_output="residual_minus_base",  # the minus-base output follows the scaled codes
    )
    with torch.no_grad():  # codes that matter to the untrained world model, so rollouts (and rewards) differ
        model.codebook.proj.weight.mul_(100.0)

    def snapshot(model):
        params = dict(model.named_parameters())
        gather = contextlib.nullcontext()
        if any(hasattr(p, "ds_id") for p in params.values()):  # ZeRO-3: partitioned (the base from loading on)
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(params.values()))
        with gather:
            return {name: p.detach().clone() for name, p in params.items()}

    before = snapshot(model)

    def text_length(completions, **kwargs):
        return [float(len(c[0]["content"])) for c in completions]

    trainer = LatentGRPOTrainer(
        model, reward_funcs=text_length, args=args, train_dataset=synthetic_rl_dataset(16), processing_class=processor
    )
    trainer.train()
    after = snapshot(trainer.accelerator.unwrap_model(trainer.model_wrapped))
    torch.save(
        {
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "changed": sorted(n for n in before if not torch.equal(before[n], after[n])),
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


# Two processes' and one process's policy parameters after the 2 steps agree within this (measured: at most 3.8e-6
# apart under DDP, ZeRO-2 and ZeRO-3, after updates of ~2e-2; with each process updating from its own gradient
# instead, 3.0e-2 apart under each, while under ZeRO-2/3 both processes still held equal policies).
POLICY_ATOL = 2e-5


@pytest.fixture(scope="module")
def one_process(tiny_cache, tmp_path_factory, launch_one_process):
    """The same training in one process, on the whole global batch: the reference for every two-process run."""
    from tests.fixtures.models import tiny_vlm_path

    tiny_vlm_path("tiny", cache_dir=tiny_cache)
    return launch_one_process(SCRIPT, tmp_path_factory.mktemp("one_process"), tiny_cache)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "config, distributed_type",
    # DDP on CPU: accelerate turns the MULTI_GPU config into MULTI_CPU (gloo) when no GPU is present.
    [("ddp.yaml", "MULTI_"), ("zero2.yaml", "DEEPSPEED"), ("zero3.yaml", "DEEPSPEED")],
    ids=["ddp", "zero2", "zero3"],
)
def test_two_process_training(config, distributed_type, tmp_path, tiny_cache, launch_two_processes, one_process):
    from tests.fixtures.models import tiny_vlm_path

    tiny_vlm_path("tiny", cache_dir=tiny_cache)  # build the cached tiny VLM once, not in both processes at once
    ranks = launch_two_processes(config, SCRIPT, tmp_path, tiny_cache)
    assert [r["num_processes"] for r in ranks] == [2, 2] and one_process["num_processes"] == 1
    assert distributed_type in ranks[0]["distributed_type"]
    policy_names = sorted(ranks[0]["policy"])
    for rank in ranks:
        assert rank["changed"] == policy_names  # every policy parameter changed, nothing else did
    assert one_process["changed"] == policy_names
    # The same first rollouts (from the initial policy): the first step's reward over the global batch is the same.
    rewards = [[h["reward"] for h in run["log_history"] if "reward" in h] for run in (ranks[0], one_process)]
    assert len(rewards[0]) == len(rewards[1]) == 2 and rewards[0][0] == pytest.approx(rewards[1][0], abs=1e-6)
    # Both processes hold the policy one process trained on the whole batch: the gradients were averaged.
    for name in policy_names:
        torch.testing.assert_close(ranks[0]["policy"][name], ranks[1]["policy"][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["policy"][name], one_process["policy"][name], rtol=0, atol=POLICY_ATOL)
    assert rewards[0][1] == pytest.approx(rewards[1][1], abs=1e-6)  # and so sampled the same second rollouts
    kl = [h["latent/kl"] for h in ranks[0]["log_history"] if "latent/kl" in h]
    assert kl[0] == 0.0 and kl[1] > 0.0, kl
    assert all("loss" in h for h in ranks[0]["log_history"][:2])
