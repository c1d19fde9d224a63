"""Trainer arguments and log readers shared by the embedded job's phases."""

from __future__ import annotations

import torch


def cpu_training_args() -> dict:
    """Trainer arguments every tiny CPU run needs: TRL defaults to bf16 and gradient checkpointing, neither of which
    works on a CPU (docs/architecture.md section 4); no checkpoints, no reporting, one log line per step."""
    return dict(
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        activation_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def logged(trainer, key: str) -> list[float]:
    """Every value of `key` in the trainer's log history."""
    return [float(entry[key]) for entry in trainer.state.log_history if key in entry]
