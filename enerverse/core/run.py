"""The body of the training entry points (``ev-train-generator``, ``ev-train-policy``): checked
config, run folder, summary, and one line instead of a traceback for a user's mistake or a stop."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enerverse.core.batch_order import distributed_info


def run_training_main(cfg: Any, entry: str, train_fn: Callable[[Any, Path], dict]) -> None:
    """Check ``cfg``, make the run folder (``outputs/<entry>/...`` or ``cfg.out``), save the resolved
    config, train, write summary.json and print the summary line.

    Project errors (configuration, store, checkpoint) print ``error: ...`` and exit with code 2. A run that
    SIGTERM/SIGINT stopped (with a checkpoint) says how to resume and exits 128 + the signal; so does
    a signal outside the training loop (e.g. while latents are encoded, which keeps what it finished)."""
    from enerverse.core.config import ConfigError, save_config
    from enerverse.core.errors import user_errors
    from enerverse.core.outputs import make_output_dir, print_summary, write_json_atomic

    rank, _, world = distributed_info()
    run_dir = None
    previous = signal.signal(signal.SIGTERM, _terminate)  # outside fit(): end with a line, not silently
    try:
        with user_errors():  # a user's mistake: one line and exit 2; anything else keeps its traceback
            if hasattr(cfg, "validate"):
                cfg.validate()
            if world > 1 and not cfg.out:
                raise ConfigError("under torchrun every rank must share one run folder: pass out=<dir>")
            run_dir = make_output_dir(entry, cfg.out)
            if rank == 0:
                save_config(cfg, run_dir / "config.json")
            summary = train_fn(cfg, run_dir)
    except KeyboardInterrupt:
        _resume_hint("SIGINT", None, run_dir)
        raise SystemExit(128 + signal.SIGINT) from None
    except TerminatedError:
        _resume_hint("SIGTERM", None, run_dir)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if rank == 0:
        write_json_atomic(run_dir / "summary.json", summary)
        print_summary(summary)
    if summary.get("stopped_by"):
        if rank == 0:
            _resume_hint(summary["stopped_by"], summary.get("steps"), run_dir)
        raise SystemExit(128 + int(getattr(signal, summary["stopped_by"])))


class TerminatedError(Exception):
    """SIGTERM arrived outside the training loop (while latents were encoded, say)."""


def _terminate(_signum: int, _frame: Any) -> None:
    raise TerminatedError


def _resume_hint(signal_name: str, step: int | None, run_dir: Path | None) -> None:
    where = f" at step {step} with a checkpoint" if step is not None else ""
    again = f"rerun the same command with out={run_dir} to resume" if run_dir else "nothing was written"
    print(f"stopped by {signal_name}{where}; {again}", file=sys.stderr)
