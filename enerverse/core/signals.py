"""Signals: SIGTERM and SIGINT end a training run with a checkpoint instead of killing it; pool
workers die with their parent."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
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


def die_with_parent(parent_pid: int) -> None:
    """Call first in a pool worker: it must not outlive a killed parent (it would keep writing into a
    store the next run resumes). Linux kills it with the parent (PR_SET_PDEATHSIG); a worker whose
    parent died before this ran (a slow start under load) is already orphaned and exits now."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)
