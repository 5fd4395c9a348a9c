"""Signals: SIGTERM and SIGINT end a training run with a checkpoint instead of killing it; pool
workers die with their parent; a runner of such commands forwards a stop and waits for them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
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
    _signal_on_parent_death(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _signal_on_parent_death(sig: int) -> None:
    """Linux: this process gets ``sig`` when its parent dies (PR_SET_PDEATHSIG); elsewhere nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def _term_with_parent() -> None:  # runs in the child between fork and exec
    _signal_on_parent_death(signal.SIGTERM)


def run_stoppable(cmd: list[str]) -> tuple[int, str, str | None]:
    """Run ``cmd`` (stdout captured) so that a stop reaches it once and is waited for: SIGTERM and
    SIGINT to this process are forwarded to the child (in its own process group, so a Ctrl-C or a
    signal to this group is not delivered twice), and this process waits while the child checkpoints
    and prints its summary. The child gets SIGTERM if this process dies. Returns (exit code, stdout,
    the name of the signal that stopped it or None)."""
    stopped: list[str] = []
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, process_group=0, preexec_fn=_term_with_parent
    )

    def forward(signum: int, _frame: Any) -> None:
        stopped.append(signal.Signals(signum).name)
        child.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        out, _ = child.communicate()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return child.returncode, out, (stopped[0] if stopped else None)
