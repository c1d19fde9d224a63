"""One progress bar per training run instead of the Trainer's dict per logging step.

`train_with_progress(trainer, title)` runs `trainer.train()` with a [`PhaseProgress`] bar in place of the Trainer's
`PrinterCallback` / `ProgressCallback` (both print every log dict); the full log history stays in
`trainer.state.log_history` and still reaches `report_to` integrations.
"""

from __future__ import annotations

import sys

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class PhaseProgress(TrainerCallback):
    """One tqdm bar per training run (on stderr), its postfix showing the latest value of a few logged metrics."""

    def __init__(self, title: str, keys: tuple[str, ...] = ("loss", "reward")):
        self.title = title
        self.keys = keys
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, desc=self.title, unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            shown = {key: f"{logs[key]:.4g}" for key in self.keys if isinstance(logs.get(key), (int, float))}
            if shown:
                self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train_with_progress(trainer, title: str):
    """`trainer.train()` with one [`PhaseProgress`] bar instead of a printed dict per logging step."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(PhaseProgress(title))
    return trainer.train()
