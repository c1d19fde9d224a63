"""`experiments.progress`: one progress bar per training run, in place of the Trainer's printed dict per log step."""

import types

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from trl_latent.experiments.progress import PhaseProgress, train_with_progress


def test_the_bar_follows_the_steps_and_shows_the_latest_metrics(capsys):
    progress = PhaseProgress("stage 1")
    state = types.SimpleNamespace(is_world_process_zero=True, max_steps=4, global_step=0)
    progress.on_train_begin(None, state, None)
    assert progress.bar.total == 4 and progress.bar.desc == "stage 1"
    state.global_step = 3
    progress.on_step_end(None, state, None)
    progress.on_log(None, state, None, logs={"loss": 0.123456, "reward": 2, "grad_norm": 1.0, "note": "x"})
    assert progress.bar.n == 3 and progress.bar.postfix == "loss=0.1235, reward=2"
    progress.on_train_end(None, state, None)
    assert progress.bar is None
    assert "stage 1" in capsys.readouterr().err  # on stderr


def test_only_the_main_process_shows_a_bar():
    progress = PhaseProgress("stage 1")
    state = types.SimpleNamespace(is_world_process_zero=False, max_steps=4, global_step=1)
    progress.on_train_begin(None, state, None)
    progress.on_step_end(None, state, None)
    progress.on_log(None, state, None, logs={"loss": 1.0})
    progress.on_train_end(None, state, None)
    assert progress.bar is None


def test_train_with_progress_swaps_the_printing_callbacks_for_one_bar():
    class Trainer:
        def __init__(self):
            self.removed, self.added = [], []

        def remove_callback(self, callback):
            self.removed.append(callback)

        def add_callback(self, callback):
            self.added.append(callback)

        def train(self):
            return "trained"

    trainer = Trainer()
    assert train_with_progress(trainer, "token SFT") == "trained"
    assert trainer.removed == [PrinterCallback, ProgressCallback]
    (bar,) = trainer.added
    assert isinstance(bar, PhaseProgress) and bar.title == "token SFT" and bar.keys == ("loss", "reward")
