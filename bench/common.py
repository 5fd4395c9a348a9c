"""Shared bits of the benchmarks: run metadata and where results go."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

from enerverse.core.outputs import make_output_dir, print_summary, write_json_atomic


def run_metadata(config: dict) -> dict:
    """Commit, machine and package versions, recorded with every benchmark result."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                check=False,
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    import mujoco

    return {
        "commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "mujoco": mujoco.__version__,
        "device": "cpu",
        "config": config,
    }


def save_results(name: str, results: dict, out: str | None = None) -> Path:
    """Write ``results.json`` under outputs/bench/<name>/<timestamp>/ (or ``out``)."""
    run_dir = make_output_dir(name, out, root="outputs/bench")
    return write_json_atomic(run_dir / "results.json", results)


__all__ = ["run_metadata", "save_results", "print_summary", "timed_step"]


def timed_step(policy, opt, batch: dict) -> float:
    """Seconds for one policy training step: forward (the generator too when it is fine-tuned),
    backward and the optimiser update."""
    t0 = time.perf_counter()
    loss, _ = policy.loss(batch, finetune=policy.finetune_generator)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0
