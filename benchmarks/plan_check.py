"""`trl-latent plan` against a measured world-model SFT step (stage 5) under DDP or DeepSpeed ZeRO-3, on CPU.

    python benchmarks/plan_check.py --size cpu-3b-width --zero zero3 --processes 2   # results/perf/plan_check-cpu-3b-width.json

The parent builds the benchmark backbone (`common.bench_base`: random weights, nothing downloaded), wraps it in a
`LatentActionModel` and saves it (new modules only, the base by reference, as stages 1-4 leave it). Each process then
does what a stage-5 run does: the `LatentSFTConfig` first (under ZeRO-3 the base then loads partitioned), the model
from the folder, `LatentSFTTrainer` on the shipped task's dialogues, `--steps` optimizer steps. Every process records
its resident set (RSS) at start (after the config, before the model: the Python/torch/DeepSpeed runtime, which no GPU
plan counts), after the trainer is built, and its peak during training (the kernel's `VmHWM`, reset once the trainer
is built, so loading transients are reported apart). The parent asks `make_plan` for the same stage, strategy, process
count, micro-batch (the first batch's sequences and tokens) and precision (`--precision`: `fp32`, or `bf16`, DeepSpeed's
bf16 mode with fp32 master weights and optimizer states, as a GPU run holds them), and the table sets the plan's
per-process terms beside the measured peak over start. `--repeats` (default 3) runs the processes that many times on
the same saved model; the target "plan within 20%" is met when every repeat's predicted / measured is within 20%
(`common.within`). Linux only (`/proc/self/status`, `/proc/self/clear_refs`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CPU_SIZES,
    PLAN_PARTS,
    TARGETS,
    command_line,
    default_out,
    machine_facts,
    plan_memory,
    proc_status_mb,
    ratio_cell,
    reset_peak_rss,
    targets_table,
    within,
    write_results,
)

STRATEGY_CONFIGS = {"zero3": "zero3.yaml", "zero2": "zero2.yaml"}
MIXED = {"fp32": "no", "bf16": "bf16"}


def _live_tensors(top: int = 12) -> dict:
    """Tensor storages the garbage collector can reach (each counted once): their total and the largest ones, so a
    measured peak can be read against what holds it. Storages only C++ holds (autograd's saved tensors mid-step,
    DeepSpeed buffers kept outside Python objects) are not seen."""
    import gc

    import torch

    storages: dict[int, tuple[int, str]] = {}
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.device.type != "cpu":
                continue
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = (storage.nbytes(), f"{tuple(obj.shape)} {str(obj.dtype)[6:]}")
        except Exception:  # placeholders without storage, tensors of other devices
            continue
    largest = sorted(storages.values(), reverse=True)[:top]
    return {
        "total_mb": sum(n for n, _ in storages.values()) / 2**20,
        "count": len(storages),
        "largest_mb": [[round(n / 2**20, 1), what] for n, what in largest],
    }


# ------------------------------------------------------------------------------------------------------ one process
def child(args) -> None:
    import torch
    from transformers import AutoProcessor, TrainerCallback, set_seed

    from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset
    from trl_latent.modeling import LatentActionModel
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    config = LatentSFTConfig(
        args.work,
        stage="world_sft",
        world_sft_last_layers=args.last_layers,
        assistant_only_loss=True,
        per_device_train_batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=1e-5,
        use_cpu=True,
        bf16=args.precision == "bf16",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        health_samples=0,  # the end-of-stage health metrics are not a training step
    )
    set_seed(0)
    start = proc_status_mb()  # the runtime (and, under DeepSpeed, the process group): before any weight exists
    latent_folder = Path(args.model)
    model = LatentActionModel.from_pretrained(latent_folder)
    processor = AutoProcessor.from_pretrained(latent_folder)
    dataset = synthetic_sft_dataset(args.batch * processes * args.steps, seed=0)
    trainer = LatentSFTTrainer(model, config, train_dataset=dataset, processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    batch = batch.get("paired", batch)  # the latent collator's streams (world_sft reads the paired one)
    batch_shape = list(batch["input_ids"].shape)
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    image_tokens = int((batch["input_ids"] == image_token).sum(dim=1).max())
    built = proc_status_mb()
    setup_peak = proc_status_mb("VmHWM")
    live: dict = {}
    steps: list[dict] = []  # per optimizer step: the peak of forward + backward, of the optimizer step, RSS after
    training_step = trainer.training_step

    def measured_training_step(*a, **kw):  # forward and backward of one micro-batch
        loss = training_step(*a, **kw)
        steps[-1]["forward_backward_peak_mb"] = proc_status_mb("VmHWM")
        reset_peak_rss()
        return loss

    trainer.training_step = measured_training_step

    class StepPeaks(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            reset_peak_rss()
            steps.append({})

        def on_step_end(self, args, state, control, **kwargs):  # after the optimizer step
            steps[-1]["optimizer_step_peak_mb"] = proc_status_mb("VmHWM")
            steps[-1]["rss_after_mb"] = proc_status_mb()
            if state.global_step == args.max_steps:  # what holds the memory that stays between steps
                live.update(_live_tensors())

    trainer.add_callback(StepPeaks())
    trainer.train()
    step_peaks = [max(step["forward_backward_peak_mb"], step["optimizer_step_peak_mb"]) for step in steps]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    rank = trainer.accelerator.process_index
    record = {
        "rank": rank,
        "processes": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "zero_stage": getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", None),
        "start_mb": start,
        "built_mb": built,
        "setup_peak_mb": setup_peak,
        "step_peaks_mb": step_peaks,
        "steps": steps,
        "live_tensors_after_last_step": live,
        "train_peak_mb": max(step_peaks),
        "train_peak_over_start_mb": max(step_peaks) - start,
        "batch_shape": batch_shape,
        "image_tokens": image_tokens,
        "losses": losses,
        "parameters": sum(p.numel() for p in trainer.accelerator.unwrap_model(trainer.model_wrapped).parameters()),
    }
    Path(args.work, f"rank{rank}.json").write_text(json.dumps(record, indent=1))
    if torch.distributed.is_initialized():  # an orderly teardown (see tests/project/test_distributed_sft.py)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------------ the parent
def _build(size: str, folder: Path, cache_dir) -> None:
    from common import bench_base

    from trl_latent.modeling import LatentActionModel

    base, processor, latent_kwargs = bench_base(size, cache_dir)
    base.save_pretrained(folder / "base")
    processor.save_pretrained(folder / "base")
    del base
    model = LatentActionModel.from_base(str(folder / "base"), **latent_kwargs)
    model.save_pretrained(folder / "latent")  # new modules only; the base by reference
    processor.save_pretrained(folder / "latent")


def run(args) -> dict:
    if args.zero == "ddp":  # checked before the model is built
        if args.processes != 1:
            raise SystemExit("--zero ddp is measured in one process (--processes 1)")
        if args.precision != "fp32":  # plain Trainer bf16 on CPU is autocast: the weights stay fp32
            raise SystemExit("--zero ddp is measured in fp32 (bf16 weights need DeepSpeed's bf16 mode: --zero zero3)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _build(args.size, tmp, args.cache_dir)
        repeats = []
        for repeat in range(args.repeats):  # the same model, a fresh set of processes each time
            work = tmp / f"run{repeat}"
            work.mkdir()
            own = [
                *(__file__, "--child", "--model", str(tmp / "latent"), "--work", str(work), "--zero", args.zero),
                *("--batch", str(args.batch), "--steps", str(args.steps), "--last-layers", str(args.last_layers)),
                *("--precision", args.precision),
            ]
            if args.zero == "ddp":
                cmd = [sys.executable, *own]
            else:
                configs = ROOT / "examples" / "accelerate_configs"
                cmd = [
                    *(sys.executable, "-m", "accelerate.commands.launch"),
                    *("--config_file", str(configs / STRATEGY_CONFIGS[args.zero])),
                    *("--num_processes", str(args.processes), "--mixed_precision", MIXED[args.precision]),
                    *("--main_process_port", "0"),
                    *own,
                ]
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            if args.mmap_threshold:
                # glibc serves allocations above a threshold with their own mappings, returned to the system when
                # freed; it raises that threshold (up to 32 MB) after each such free, so tensors freed in one step stay
                # resident in its heap. A fixed threshold keeps the RSS close to the live tensors, as a GPU allocator
                # counts them.
                env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
            subprocess.run(cmd, check=True, env=env)
            ranks = [json.loads(p.read_text()) for p in sorted(work.glob("rank*.json"))]
            if len(ranks) != args.processes:
                raise RuntimeError(f"{len(ranks)} of {args.processes} processes wrote a record")
            repeats.append(ranks)
        # Planned here, not in a process of the run: under a ZeRO-3 config transformers builds even the plan's
        # meta-device model with `zero.Init`, a collective one process alone would wait on forever.
        plan = _plan(args, tmp / "latent", repeats[0][0])
    return summarise(args, repeats, plan)


def _plan(args, latent_folder: Path, rank0: dict) -> dict:
    plan, planned = plan_memory(
        latent_folder,
        "world_sft",
        args.zero,
        num_gpus=args.processes,
        batch_size=args.batch,
        seq_len=rank0["batch_shape"][1],
        image_tokens=rank0["image_tokens"],
        precision=args.precision,
        world_sft_last_layers=args.last_layers,
    )
    return {
        "plan_mb": planned,
        "plan_counts": {"total": plan.total_params, "trainable": plan.trainable_params},
        "plan_activation_terms_mb": {k: v / 2**20 for k, v in plan.activation_terms.items()},
    }


def summarise(args, repeats: list[list[dict]], plan: dict) -> dict:
    """Per repeat, the largest measured peak over start of its processes and the plan's prediction over it."""
    rank0 = repeats[0][0]
    measured = [max(r["train_peak_over_start_mb"] for r in ranks) for ranks in repeats]
    predicted = plan["plan_mb"]["total"]
    return {
        "benchmark": "plan_check",
        "size": args.size,
        "command": command_line("plan_check.py", args.argv),
        "machine": machine_facts(),
        "strategy": args.zero,
        "processes": args.processes,
        "stage": "world_sft",
        "precision": args.precision,
        "malloc_mmap_threshold": args.mmap_threshold or "glibc default (dynamic)",
        "micro_batch": rank0["batch_shape"],
        "image_tokens": rank0["image_tokens"],
        **plan,
        "measured_peak_over_start_mb": measured,
        "predicted_over_measured": [predicted / m for m in measured],
        "repeats": repeats,
    }


def plan_targets(result: dict) -> list[dict]:
    """The plan's peak within 20% of the measured one, on every repeat (`common.within`)."""
    target = f"plan within 20% of measured peak (stage 5, {result['strategy']} x {result['processes']}, "
    target += f"{result['precision']}; predicted / measured)"
    tolerance = TARGETS["plan_vs_measured"]
    return [within(target, result["size"], result["predicted_over_measured"], 1.0, tolerance)]


def targets(result: dict) -> str:
    return targets_table(plan_targets(result))


def table(result: dict) -> str:
    plan = result["plan_mb"]
    lines = [
        f"World-model SFT (stage 5) at `{result['size']}`, {result['strategy']} x {result['processes']} process(es), "
        f"{result['precision']}, micro-batch {result['micro_batch'][0]} x {result['micro_batch'][1]} tokens "
        f"({result['image_tokens']} image tokens), {result['plan_counts']['total'] / 1e6:,.1f}M parameters of which "
        f"{result['plan_counts']['trainable'] / 1e6:,.1f}M train.",
        "",
        "| | " + " | ".join(PLAN_PARTS) + " | total |",
        "|---|" + "---:|" * (len(PLAN_PARTS) + 1),
        "| predicted per process (MB) | "
        + " | ".join(f"{plan[k]:,.0f}" for k in PLAN_PARTS)
        + f" | {plan['total']:,.0f} |",
    ]
    for i, ranks in enumerate(result["repeats"]):
        for r in ranks:
            lines.append(
                f"| measured, repeat {i + 1}, rank {r['rank']} (MB, peak RSS over start) |"
                + " |" * len(PLAN_PARTS)
                + f" {r['train_peak_over_start_mb']:,.0f} |"
            )
    lines += [
        "",
        "RSS in MB. Between steps: the RSS after the last optimizer step (what stays: partitions, optimizer states, "
        "DeepSpeed's buffers); live tensors: the storages the garbage collector reaches then.",
        "",
        "| repeat | rank | at start | trainer built | peak while building | peak per training step | between steps | "
        "live tensors | losses |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for i, r in ((i, r) for i, ranks in enumerate(result["repeats"]) for r in ranks):
        steps = ", ".join(f"{p:,.0f}" for p in r["step_peaks_mb"])
        losses = ", ".join(f"{x:.3f}" for x in r["losses"])
        live = r.get("live_tensors_after_last_step", {}).get("total_mb", float("nan"))
        lines.append(
            f"| {i + 1} | {r['rank']} | {r['start_mb']:,.0f} | {r['built_mb']:,.0f} | {r['setup_peak_mb']:,.0f} | {steps} | "
            f"{r['steps'][-1]['rss_after_mb']:,.0f} | {live:,.0f} | {losses} |"
        )
    largest = result["repeats"][0][0].get("live_tensors_after_last_step", {}).get("largest_mb", [])[:6]
    if largest:
        lines += [
            "",
            "Largest live tensors (repeat 1, rank 0, MB): " + "; ".join(f"{mb:,.0f} {what}" for mb, what in largest),
        ]
    lines += [
        "",
        f"Predicted / measured: {ratio_cell(result['predicted_over_measured'], 2, '')} over "
        f"{len(result['repeats'])} repeat(s) (median, spread).",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="cpu-3b-width", choices=CPU_SIZES)
    parser.add_argument("--zero", default="zero3", choices=("ddp", *STRATEGY_CONFIGS))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="sequences per process and step")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--last-layers", type=int, default=8, help="world_sft_last_layers (LatentSFTConfig default)")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="bf16: DeepSpeed's bf16 mode (fp32 master weights)",
    )
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=65536,
        help="glibc MALLOC_MMAP_THRESHOLD_ for the processes (bytes; 0: glibc's default, a dynamic threshold)",
    )
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of the processes, each measured (3 for a verdict)"
    )
    parser.add_argument("--out", default=None, help="JSON to write (default: results/perf/plan_check-<size>.json)")
    # internal: one process of the run
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return None
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.argv = sys.argv[1:] if argv is None else list(argv)
    result = run(args)
    out = args.out or default_out("plan_check", args.size)
    write_results(out, result, table(result) + "\n\n" + targets(result))  # prints the tables too
    return result


if __name__ == "__main__":
    main()
