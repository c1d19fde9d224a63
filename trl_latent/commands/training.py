"""Training a command's trainer to the end: resuming from a checkpoint, saving on Ctrl-C, saving the finished model with
its processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .running import CommandError, Interrupted


def resume_argument(value):
    """`resume_from_checkpoint` as the trainers take it: `true` (from the command line or YAML) means the newest
    complete checkpoint of output_dir, `false` none; anything else is a checkpoint folder."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false") and not Path(value).exists():
        return value.strip().lower() == "true"
    return value


def train_and_save(trainer, processor, output_dir: str, resume_from_checkpoint, metric: str) -> dict[str, Any]:
    """Train (resuming from a checkpoint folder, or with `true` from the newest complete one of output_dir), save the
    model with its processor beside it (the next stage finds it there), and return the run's step count with the
    first and last logged `metric`. Ctrl-C or SIGTERM finishes the step, saves a checkpoint and raises
    [`Interrupted`] (`trl_latent.training.interrupt`); the finished model is then not saved."""
    from ..training.checkpointing import CheckpointError, resolve_resume_checkpoint

    # Resolved here too (the latent trainers and TokenGRPOTrainer do it in `train`) so that a stock TRL trainer (the
    # token baseline's SFT) also skips a broken last checkpoint, and a broken one is this command's error, not a trace.
    required = getattr(trainer, "_required_checkpoint_files", dict)()
    try:
        resume = resolve_resume_checkpoint(resume_argument(resume_from_checkpoint) or None, output_dir, required)
    except (FileNotFoundError, CheckpointError) as err:
        raise CommandError(str(err)) from err
    from ..training.interrupt import SaveOnInterruptCallback

    interrupt = SaveOnInterruptCallback()
    trainer.add_callback(interrupt)
    trainer.train(resume_from_checkpoint=resume)
    if interrupt.interrupted:  # not saved as the finished model: a recipe that skips finished stages must rerun it
        raise Interrupted(
            f"interrupted: saved checkpoint-{interrupt.step} in {output_dir}. Resume with the same command and "
            "--resume_from_checkpoint true."
        )
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(output_dir)
    values = [entry[metric] for entry in trainer.state.log_history if metric in entry]
    result: dict[str, Any] = {"steps": trainer.state.global_step}
    if values:
        result.update({f"{metric}_first": float(values[0]), f"{metric}_last": float(values[-1])})
    return result
