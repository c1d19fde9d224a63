"""`training.interrupt`: the first signal asks for a checkpoint at the step's end, a second stops at once."""

from __future__ import annotations

import pytest


def test_a_second_signal_stops_at_once():
    import signal

    from trl_latent.training.interrupt import SaveOnInterruptCallback

    callback = SaveOnInterruptCallback()
    callback.on_train_begin(None, None, None)
    assert signal.getsignal(signal.SIGTERM) == callback._handle
    callback._handle(signal.SIGTERM, None)  # the first: a request, honoured at the step's end
    assert callback._requested and not callback.interrupted
    with pytest.raises(KeyboardInterrupt):
        callback._handle(signal.SIGINT, None)
    assert (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
