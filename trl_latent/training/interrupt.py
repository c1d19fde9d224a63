"""Stop a run cleanly on Ctrl-C or a preemption signal: finish the step, save a checkpoint, stop.

A `transformers.Trainer` interrupted by Ctrl-C raises `KeyboardInterrupt` wherever it is: mid-step, the work since the
last save is gone and a long traceback is all the user sees. [`SaveOnInterruptCallback`] turns the first SIGINT (or
SIGTERM, which schedulers send before they preempt a job) into a request: the current optimizer step finishes, the
Trainer saves a checkpoint exactly as its `save_steps` would (model, optimizer, scheduler, RNG states, trainer state),
and training stops; `train(resume_from_checkpoint=True)` then continues from that step. A second signal stops at
once, as before.

Under several processes every rank gets the signal at a slightly different moment (or only one does): the request is
agreed on at each step end (one all-reduce of a flag), so all ranks save the same step together, which ZeRO-3's
collective save needs.

```python
>>> from trl_latent.training.interrupt import SaveOnInterruptCallback
>>> callback = SaveOnInterruptCallback()
>>> callback.interrupted
False
```

The `sft` and `grpo` commands add it to every run (docs/recipes.md, "Interrupting a run").
"""

from __future__ import annotations

import logging
import signal
import threading

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["SaveOnInterruptCallback"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SaveOnInterruptCallback(TrainerCallback):
    """On the first SIGINT or SIGTERM during `train()`: finish the step, save a checkpoint, stop. A second signal
    raises `KeyboardInterrupt` at once. After `train()` returns, `interrupted` says whether it stopped this way and
    `step` at which step the checkpoint was saved. Signal handlers are installed only on the main thread and are
    restored when training ends."""

    def __init__(self):
        self.interrupted = False
        self.step: int | None = None
        self._requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self._requested:  # the second signal: stop now
            self._restore()
            raise KeyboardInterrupt
        self._requested = True
        logger.warning(
            "%s received: finishing this step, saving a checkpoint, then stopping (press Ctrl-C again to stop at once, "
            "losing the work since the last checkpoint).",
            signal.Signals(signum).name,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.interrupted, self.step, self._requested = False, None, False
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}

    def _agreed(self) -> bool:
        """Whether any rank has been asked to stop (every rank calls this at the same step end)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self._requested
        from accelerate import PartialState

        flag = torch.tensor([float(self._requested)], device=PartialState().device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed():
            self.interrupted, self.step = True, state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()
