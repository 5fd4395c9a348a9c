"""Running the sim entry points (ev-collect, ev-eval) as a user would, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SMALL = ["resolution=32", "views=[main]"]


def entry_command(script: str, module: str) -> list[str]:
    exe = Path(sys.executable).parent / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def run_entry(script: str, args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    module = {"ev-collect": "sim.collect", "ev-eval": "sim.evaluate"}[script]
    return subprocess.run(
        entry_command(script, module) + args, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines, "nothing printed on stdout"
    return json.loads(lines[-1])
