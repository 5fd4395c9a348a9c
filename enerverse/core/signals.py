"""Signals during training: SIGTERM and SIGINT end a run with a checkpoint instead of killing it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stop_on_signals(trainer: Any) -> Iterator[None]:
    """While training, SIGTERM and SIGINT set ``trainer.stopped_by`` instead of killing the process:
    fit() finishes the step, writes a checkpoint and returns, so the same command resumes exactly.
    A second Ctrl-C interrupts at once (KeyboardInterrupt). Only the main thread can install
    handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        if trainer.stopped_by is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait for the step to finish
        trainer.stopped_by = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
