"""Benchmark: one RL step of `LatentGRPOTrainer` vs stock TRL `GRPOTrainer`, same base model, same prompts.

Each trainer runs in a fresh process (so peak memory is its own) for `1 + --steps` optimizer steps; the first step is
a warm-up, and the process's time per phase is its minimum over the measured steps. One run makes `--repeats`
repeats (default 3): in each, one process per trainer, in turn (the order reversed every other repeat, so load that
drifts over the run hits every trainer alike); every ratio to the stock trainer is taken within a repeat and reported
as the median and the spread (min-max) over the repeats, and each target's verdict comes from
`trl_latent.experiments.verdicts.timing_verdict` (3 repeats at least; `common.rl_step_targets`). A step is split into:

- **generation**: TRL's `_generate_single_turn` (token `generate` vs latent decoding);
- **scoring**: the rest of `_generate_and_score_completions` (rewards, advantages, and the old/reference log-prob
  passes TRL runs there: the stock trainer's reference is a second copy of the base; the latent trainer runs none);
- **update**: loss, backward and optimizer step (stock: through the whole VLM; latent: the policy layers on the
  rollout's reused base states, plus its policy-only reference).

Both decode exactly `--new-tokens` tokens per completion (no EOS) with the same generation batch (prompts x
generations), beta = 0.01 (the paper's, so the stock trainer builds its reference model) and no gradient
checkpointing (`--gradient-checkpointing`: the latent run checkpoints its policy layers; the `latent-checkpointing`
variant adds such a run beside the plain one). Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the
peak resident set size of the process (the kernel's high-water mark, `VmHWM`, as `ru_maxrss`; it includes the
Python/torch runtime, reported also minus the RSS measured before the model is built). It is also reported **per
phase** (the high-water mark is read and reset at every phase boundary): `setup` (building the models and the trainer,
before the first step), generation, scoring and update, each the largest over all steps (warm-up included). CPU times
are indicative only: report ratios, and absolute times only from a GPU (docs/architecture.md section 6).

    python benchmarks/rl_step.py --size tiny --out outputs/bench_rl_step.json
    python benchmarks/rl_step.py --size cpu-3b-depth --new-tokens 32          # results/perf/rl_step-cpu-3b-depth.json

    python benchmarks/rl_step.py --size cpu-3b-width --variants token-static latent-static
    python benchmarks/rl_step.py --size cpu-3b-depth --new-tokens 32 --variants latent-checkpointing
    python benchmarks/rl_step.py --size smollm2 --prompts 4 --generations 6 --new-tokens 40   # the text study's step

Sizes (benchmarks/common.py): `tiny` (the unit-test VLM; latent: 16 codes, 1 policy layer), `cpu-3b-depth` (the real
Qwen2.5-VL-3B depth ratio, 36 base layers and 8 policy layers, at hidden size 256, random weights; 128 codes),
`cpu-3b-width` (the real Qwen2.5-VL-3B width and vocabulary, 4 base layers, 1 policy layer) and, on a CUDA GPU, `3b` /
`7b` (the released shapes, random bf16 weights); text-only: `smollm2` (SmolLM2-135M-Instruct, the text role-play
study's real pretrained base, its own weights, 128 codes; prompts of that task) and `tiny-llama` (a tiny Llama shaped
like it, for tests). `--variants` adds static-cache runs (stock TRL with HF's static
cache; `LatentGRPOTrainer` with `latent_cache_implementation="static"`, optionally compiled), reported as ratios to the
stock trainer. The table also gives the arithmetic ratio of a decoding step (`common.decoding_step_flops`) and what
`trl-latent plan` predicts for the latent run's peak memory beside the measured one (docs/performance.md). The JSON
(`results/perf/rl_step-<size>.json` unless `--out`) holds every process's raw record, the machine facts and the exact
command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PHASES = ("generation", "scoring", "update")
# Peak memory is also reported per phase, and for what precedes the first step (models and trainer built).
MEMORY_PHASES = ("setup", *PHASES)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PLAN_PARTS,
    SIZES,
    TEXT_SIZES,
    command_line,
    default_out,
    machine_facts,
    plan_memory,
    proc_status_mb,
    ratio_cell,
    repeat_order,
    reset_peak_rss,
    rl_step_targets,
    spread,
    targets_table,
    write_results,
)


# ---------------------------------------------------------------------------------------------- one trainer
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _base(size: str, cache_dir, folder: Path):
    """Save the base to `folder` (the stock trainer reloads its reference from the model's path) and return its
    latent-model options."""
    from common import bench_base, bench_text_base

    build = bench_text_base if size in TEXT_SIZES else bench_base
    base, processor, latent_kwargs = build(size, cache_dir)
    base.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, processor, latent_kwargs


class _PhasePeaks:
    """Peak memory per phase: the high-water mark is read, and reset, at every phase boundary (CUDA:
    `max_memory_allocated` / `reset_peak_memory_stats`; CPU: the kernel's peak RSS `VmHWM`, reset by writing 5 to
    `/proc/self/clear_refs`, Linux >= 4.0). Where it cannot be reset, phases are not reported."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peaks: dict[str, float] = {}  # phase -> largest peak seen
        if cuda:
            import torch

            self._torch = torch
            self.available = True
        else:  # not cleared yet: the first segment (`setup`) starts with the process
            self.available = os.access("/proc/self/clear_refs", os.W_OK)

    def flush(self, phase: str) -> None:
        """The segment since the last flush belongs to `phase`."""
        if self.cuda:
            peak = self._torch.cuda.max_memory_allocated() / 2**20
            self._torch.cuda.reset_peak_memory_stats()
        elif self.available:
            peak = proc_status_mb("VmHWM")
            reset_peak_rss()
        else:
            return
        self.peaks[phase] = max(self.peaks.get(phase, 0.0), peak)


class _Timer:
    """Accumulates wall time of wrapped trainer methods, per optimizer step, and hands phase boundaries to `peaks`:
    a segment belongs to the innermost wrapped method running (`phase_of` its key), else to `self.outside`."""

    def __init__(self, sync, peaks: _PhasePeaks, phase_of: dict[str, str]):
        self.sync = sync
        self.steps: list[dict[str, float]] = []
        self.peaks, self.phase_of = peaks, phase_of
        self.outside = "setup"
        self.running: list[str] = []

    def boundary(self) -> None:
        self.peaks.flush(self.phase_of[self.running[-1]] if self.running else self.outside)

    def wrap(self, obj, name, key):
        method = getattr(obj, name)

        def timed(*args, **kwargs):
            self.sync()
            self.boundary()
            self.running.append(key)
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.sync()
                self.steps[-1][key] = self.steps[-1].get(key, 0.0) + time.perf_counter() - start
                self.boundary()
                self.running.pop()

        setattr(obj, name, timed)


KINDS = ("token", "latent", "token-static", "latent-static", "latent-static-compiled", "latent-checkpointing")


def _prompt_tokens(processor, example) -> tuple[int, int]:
    """(tokens, image tokens) of one dataset prompt as the trainers encode it."""
    text = processor.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=False)
    if "image" not in example:  # a text-only base: its tokenizer is the processing class
        return len(processor(text, add_special_tokens=False)["input_ids"]), 0
    ids = processor(text=[text], images=[example["image"]], return_tensors="pt")["input_ids"][0]
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return len(ids), int((ids == image_token).sum())


def _plan(model, folder: Path, batch: int, seq_len: int, image_tokens: int, precision: str) -> dict:
    """What `trl-latent plan` predicts for this latent model's RL step (one process, DDP accounting)."""
    model.save_pretrained(folder)
    _, planned = plan_memory(
        folder, "grpo", "ddp", batch_size=batch, seq_len=seq_len, image_tokens=image_tokens, precision=precision
    )
    return {"plan_peak_mb": planned["total"], **{f"plan_{k}_mb": planned[k] for k in PLAN_PARTS}}


def _longer(dataset, prompt_repeat: int):
    """Repeat each prompt's question `prompt_repeat` times (longer prompts, the same image)."""
    if prompt_repeat <= 1:
        return dataset

    def longer(example):
        for message in example["prompt"]:
            if isinstance(message["content"], str):  # a text-only prompt
                if message["role"] == "user":
                    message["content"] = " ".join([message["content"]] * prompt_repeat)
                continue
            for part in message["content"]:
                if part["type"] == "text" and message["role"] == "user":
                    part["text"] = " ".join([part["text"]] * prompt_repeat)
        return example

    return dataset.map(longer)


def run_one(
    kind: str,
    size: str,
    prompts: int,
    generations: int,
    new_tokens: int,
    steps: int,
    cache_dir=None,
    prompt_repeat: int = 1,
    gradient_checkpointing: bool = False,
):
    import torch
    from transformers import TrainerCallback

    from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset

    started = time.time()  # when this process began (the order of a run's processes)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rss_before = _peak_rss_mb()
    common = dict(
        per_device_train_batch_size=prompts * generations,
        num_generations=generations,
        max_completion_length=new_tokens,
        max_steps=1 + steps,
        learning_rate=1e-6,
        beta=0.01,
        loss_type="grpo",
        activation_checkpointing=False,
        bf16=cuda,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    if size in TEXT_SIZES:  # the text role-play task's prompts (a character, a scene in words, a question)
        from datasets import Dataset

        from trl_latent.experiments.text_roleplay.task import task_prompts

        rows = task_prompts("train", prompts * (1 + steps), seed=0)
        dataset = _longer(Dataset.from_list([{"prompt": r["prompt"]} for r in rows]), prompt_repeat)
    else:
        dataset = _longer(synthetic_rl_dataset(prompts * (1 + steps), seed=0), prompt_repeat)
    dtype = {"dtype": torch.bfloat16} if cuda else {}
    static = "static" in kind
    extra = {}

    def reward(completions, **kwargs):
        return [float(len(c[0]["content"])) for c in completions]

    with tempfile.TemporaryDirectory() as tmp:
        folder, processor, latent_kwargs = _base(size, cache_dir, Path(tmp) / "base")
        prompt_tokens, image_tokens = _prompt_tokens(processor, dataset[0])
        if kind.startswith("token"):
            from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
            from trl import GRPOConfig, GRPOTrainer

            # Exactly `new_tokens` tokens: EOS is not allowed before then. HF's static cache where asked.
            generation_kwargs = {"min_new_tokens": new_tokens}
            if static:
                generation_kwargs["cache_implementation"] = "static"
            args = GRPOConfig(tmp, **common, generation_kwargs=generation_kwargs)
            auto = AutoModelForCausalLM if size in TEXT_SIZES else AutoModelForImageTextToText
            model = auto.from_pretrained(folder, **dtype)
            trainer = GRPOTrainer(model, reward, args=args, train_dataset=dataset, processing_class=processor)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            reference = sum(p.numel() for p in trainer.ref_model.parameters()) if trainer.ref_model is not None else 0
        else:
            from trl_latent.modeling import LatentActionModel
            from trl_latent.training.latent_grpo_config import LatentGRPOConfig
            from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

            if static:  # the static-cache decoding path (and its compiled step)
                common.update(latent_cache_implementation="static", compile_latent_step=kind.endswith("compiled"))
            # Activation checkpointing of the policy layers (the base is never checkpointed).
            common["activation_checkpointing"] = gradient_checkpointing or kind == "latent-checkpointing"
            args = LatentGRPOConfig(tmp, **common)
            model = LatentActionModel.from_base(str(folder), **dtype, **latent_kwargs)
            from common import arithmetic_ratio

            flops = arithmetic_ratio(model, context=prompt_tokens + new_tokens // 2)
            extra["arithmetic_ratio"] = flops["ratio"]
            precision = "bf16" if cuda else "fp32"
            batch, seq_len = prompts * generations, prompt_tokens + new_tokens
            extra.update(_plan(model, Path(tmp) / "latent", batch, seq_len, image_tokens, precision))
            trainer = LatentGRPOTrainer(model, reward, args=args, train_dataset=dataset, processing_class=processor)
            trainer.eos_token_ids = [-1]  # exactly `new_tokens` steps: no token ends a completion early
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            reference = sum(p.numel() for p in model.policy.parameters())  # the policy-only copy made in train()
        total_params = sum(p.numel() for p in model.parameters())

        peaks = _PhasePeaks(cuda)
        # Wrapped methods nest: training_step (loss, backward) > rollout (scoring) > generation.
        phase_of = {"generation": "generation", "rollout": "scoring", "training_step": "update"}
        timer = _Timer(sync, peaks, phase_of)
        timer.wrap(trainer, "_generate_single_turn", "generation")
        timer.wrap(trainer, "_generate_and_score_completions", "rollout")
        timer.wrap(trainer, "training_step", "training_step")

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.boundary()
                timer.outside = "update"  # the optimizer step, outside training_step
                timer.steps.append({"start": time.perf_counter()})

            def on_step_end(self, args, state, control, **kwargs):  # after the optimizer step
                sync()
                step = timer.steps[-1]
                step["total"] = time.perf_counter() - step.pop("start")
                timer.boundary()
                timer.outside = "other"  # logging, between steps

        trainer.add_callback(StepClock())
        trainer.train()
        timer.boundary()
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]

    # Per measured step: generation, scoring (rest of the rollout), update (loss, backward, optimizer step).
    steps = [
        {
            "step": t["total"],
            "generation": t["generation"],
            "scoring": t["rollout"] - t["generation"],
            "update": t["total"] - t["rollout"],
        }
        for t in (timer.steps[1:] or timer.steps)
    ]
    # The process's time per phase: the minimum over its measured steps (the least disturbed by other load).
    minima = {"step_s": min(step["step"] for step in steps)}
    minima.update({f"{phase}_s": min(step[phase] for step in steps) for phase in PHASES})
    phase_peaks = {f"{phase}_peak_memory_mb": peaks.peaks[phase] for phase in MEMORY_PHASES if phase in peaks.peaks}
    if cuda:  # the training only: `setup` (building the models) is reported on its own
        peak = max(v for phase, v in peaks.peaks.items() if phase != "setup")
        memory = {"peak_memory_mb": peak, "memory_method": "cuda max allocated", **phase_peaks}
    else:
        # The high-water mark was reset at each phase boundary, so the process's peak is the largest of the phases'.
        peak = max([_peak_rss_mb(), *peaks.peaks.values()])
        memory = {
            "peak_memory_mb": peak,
            "peak_memory_over_start_mb": peak - rss_before,
            "memory_method": "peak RSS of the process (VmHWM / ru_maxrss), CPU",
            **phase_peaks,
        }
    return {
        "trainer": kind,
        "started": started,
        "gradient_checkpointing": bool(kind.startswith("latent") and common["activation_checkpointing"]),
        "size": size,
        "device": "cuda" if cuda else "cpu",
        "generation_batch": prompts * generations,
        "new_tokens": new_tokens,
        "prompt_tokens": prompt_tokens,
        "image_tokens": image_tokens,
        "mean_completion_length": sum(lengths) / max(len(lengths), 1),
        "steps": steps,
        "steps_measured": len(steps),
        **minima,
        "parameters": total_params,
        "trainable_parameters": trainable,
        "reference_parameters": reference,
        **memory,
        **extra,
    }


# ---------------------------------------------------------------------------------------------- comparison
def _child(kind: str, args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [
        *(sys.executable, __file__, "--child", kind, "--size", args.size, "--prompts", str(args.prompts)),
        *("--generations", str(args.generations), "--new-tokens", str(args.new_tokens)),
        *("--steps", str(args.steps), "--prompt-repeat", str(args.prompt_repeat), "--out", out),
    ]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    if args.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    subprocess.run(cmd, check=True)
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    return result


# Fields of every run that are compared with the stock trainer's, repeat by repeat.
TIME_KEYS = ("step_s", *(f"{p}_s" for p in PHASES))
COUNT_KEYS = ("trainable_parameters", "reference_parameters", "mean_completion_length")


def memory_keys(run: dict) -> list[str]:
    keys = ["peak_memory_mb"]
    if "peak_memory_over_start_mb" in run:
        keys.append("peak_memory_over_start_mb")
    return keys + [k for p in MEMORY_PHASES if (k := f"{p}_peak_memory_mb") in run]


def derived(result: dict) -> dict:
    """Per repeat, every run's field over the stock trainer's of the same repeat (`ratios[kind][key]`), and the plan
    check of the plain latent run (`plan_check`: predicted, measured and predicted / measured per repeat; measured
    on a CPU: the peak RSS over the process's start)."""
    runs = result["runs"]
    token = runs["token"]
    keys = [*TIME_KEYS, *memory_keys(token[0]), *COUNT_KEYS]
    ratios = {
        kind: {
            k: [run[k] / stock[k] if stock[k] else math.nan for stock, run in zip(token, kind_runs, strict=True)]
            for k in keys
            if k in kind_runs[0]
        }
        for kind, kind_runs in runs.items()
        if kind != "token"
    }
    out = {"ratios": ratios}
    latent = runs["latent"]
    if all("plan_peak_mb" in r for r in latent):
        over = "peak_memory_over_start_mb" if "peak_memory_over_start_mb" in latent[0] else "peak_memory_mb"
        out["plan_check"] = {
            "predicted_mb": [r["plan_peak_mb"] for r in latent],
            "measured_mb": [r[over] for r in latent],
            "predicted_over_measured": [r["plan_peak_mb"] / r[over] if r[over] > 0 else math.nan for r in latent],
        }
    return out


def table(result: dict) -> str:
    """The stock and latent runs (and every variant) side by side: the median over the repeats of each field, and
    each run's ratio to the stock trainer, paired by repeat, as the median with the spread (min-max)."""
    runs, ratios = result["runs"], derived(result)["ratios"]
    token = runs["token"]
    first = token[0]
    settings = result["settings"]
    rows = [("whole step (s)", "step_s")] + [(f"{p} (s)", f"{p}_s") for p in PHASES]
    rows += [("peak memory (MB)", "peak_memory_mb")]
    if "peak_memory_over_start_mb" in first:
        rows += [("peak memory over start (MB)", "peak_memory_over_start_mb")]
    rows += [(f"peak memory in {p} (MB)", k) for p in MEMORY_PHASES if (k := f"{p}_peak_memory_mb") in first]
    rows += [("trainable parameters", "trainable_parameters"), ("reference parameters", "reference_parameters")]
    rows += [("mean completion length", "mean_completion_length")]
    n = len(token)
    names = {"token": "stock GRPOTrainer", "latent": "LatentGRPOTrainer"}
    kinds = [k for k in runs if k != "token"]
    lines = [
        f"One RL step, `{first['size']}` on {first['device']}: generation batch {first['generation_batch']} "
        f"({settings['prompts']} prompt(s) x {settings['generations']} generations), {first['prompt_tokens']} prompt "
        f"tokens ({first['image_tokens']} image tokens) + {first['new_tokens']} new tokens. {n} repeats, each a fresh "
        f"process per trainer in turn (the order reversed every other repeat), each process a warm-up step and "
        f"{settings['steps']} measured step(s) (its time: the minimum over them). Medians over the repeats; ratios to "
        f"stock paired by repeat, median (min-max). Memory: {first['memory_method']}; per phase: the largest over "
        "the process's steps, warm-up included.",
        "",
        "| | stock GRPOTrainer | "
        + " | ".join(f"{names.get(k, k)} | {'latent' if k == 'latent' else k} / stock" for k in kinds)
        + " |",
        "|---|---:|" + "---:|---:|" * len(kinds),
    ]
    for label, key in rows:
        fmt = "{:,.0f}" if "parameters" in key or "memory" in key else "{:.1f}" if "length" in key else "{:.3f}"
        cells = [label, fmt.format(spread(r[key] for r in token)["median"])]
        for kind in kinds:
            cells += [fmt.format(spread(r[key] for r in runs[kind])["median"]), ratio_cell(ratios[kind][key])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Arithmetic ratio (latent / token FLOPs per decoding step): {result['arithmetic_ratio']:.2f}."]
    check = derived(result).get("plan_check")
    if check:
        lines.append(
            f"Plan check (latent): `trl-latent plan` predicts {spread(check['predicted_mb'])['median']:,.0f} MB, "
            f"measured {ratio_cell(check['measured_mb'], 0, ' MB')}: predicted / measured "
            f"{ratio_cell(check['predicted_over_measured'], 2, '')}."
        )
    gc = [k for k in kinds if runs[k][0].get("gradient_checkpointing")]
    if gc:
        lines.append(f"Checkpointed policy layers (gradient_checkpointing=True): {', '.join(gc)}.")
    return "\n".join(lines)


def targets(result: dict) -> str:
    return targets_table(rl_step_targets(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=[*SIZES, *TEXT_SIZES])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats: a process per trainer each, in turn (3 for a verdict)"
    )
    parser.add_argument("--steps", type=int, default=1, help="measured steps per process (after a warm-up step)")
    parser.add_argument("--prompt-repeat", type=int, default=1, help="repeats of each prompt's question")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=None, help="JSON to write (default: results/perf/rl_step-<size>.json)")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        choices=KINDS[2:],
        help="runs beside the two trainers: stock TRL with HF's static cache, latent decoding with the static cache "
        "(and compiled; they need LatentGRPOConfig.latent_cache_implementation), a latent run with its policy layers "
        "checkpointed",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="the latent run checkpoints its policy layers (LatentGRPOConfig(gradient_checkpointing=True))",
    )
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        parser.error("--repeats and --steps must be at least 1")
    if args.child:
        result = run_one(
            args.child,
            args.size,
            args.prompts,
            args.generations,
            args.new_tokens,
            args.steps,
            args.cache_dir,
            args.prompt_repeat,
            args.gradient_checkpointing,
        )
        Path(args.out).write_text(json.dumps(result))
        return result
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig

    if not hasattr(LatentGRPOConfig, "latent_cache_implementation"):
        for kind in [k for k in args.variants if k.startswith("latent-static")]:
            print(f"{kind}: skipped, this checkout's LatentGRPOConfig has no latent_cache_implementation")
            args.variants.remove(kind)
    command, machine = command_line("rl_step.py", argv), machine_facts()
    kinds = list(dict.fromkeys(("token", "latent", *args.variants)))
    runs = {kind: [] for kind in kinds}
    for i in range(args.repeats):  # interleaved, so drifting background load hits every trainer alike
        for kind in repeat_order(kinds, i):
            runs[kind].append(_child(kind, args))
    settings = {k: getattr(args, k) for k in ("prompts", "generations", "new_tokens", "steps", "prompt_repeat")}
    settings.update(gradient_checkpointing=args.gradient_checkpointing, variants=list(args.variants))
    result = {
        "benchmark": "rl_step",
        "size": args.size,
        "command": command,
        "machine": machine,
        "settings": settings,
        "repeats": args.repeats,
        "arithmetic_ratio": runs["latent"][0]["arithmetic_ratio"],
        "runs": runs,
    }
    result.update(derived(result))
    write_results(args.out or default_out("rl_step", args.size), result, table(result) + "\n\n" + targets(result))
    return result


if __name__ == "__main__":
    main()
