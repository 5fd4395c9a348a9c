"""Shared test setup.

MuJoCo picks its GL backend when ``mujoco`` is first imported, so the headless defaults that
``import sim`` sets must be in place before any test module imports ``mujoco`` directly.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")


def run_torchrun(args: list[str], cwd, port: int, timeout: int = 300):
    """``python -m torch.distributed.run --nproc_per_node 2`` on ``args`` (one thread per rank)."""
    import subprocess
    import sys

    env = {**os.environ, "EV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
