"""Experiment files: every shipped file expands into valid commands; bad files get one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = sorted((REPO / "configs" / "experiment").glob("*.yaml"))


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "experiment.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_shipped_experiment_files_expand_into_commands_with_known_keys(path: Path, tmp_path: Path) -> None:
    r = _run(str(path), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    commands = [line.split(": ", 1)[1] for line in r.stderr.splitlines() if line.startswith("[experiment]")]
    assert commands
    from enerverse.core.config import parse_cli
    from enerverse.train import TrainGeneratorConfig, parse_args

    for c in commands:  # every training command parses: no misspelled key in the file
        module, *argv = c.split()
        if module == "enerverse.train":
            parse_args(argv).validate()
        elif module == "policies.train":  # checkpoints an earlier step makes do not exist yet
            from policies.train import parse_args as policy_args

            (tmp_path / "config.json").write_text("{}")
            made = ("generator=", "init_from=")
            stand_in = [a.split("=")[0] + f"={tmp_path}" if a.startswith(made) else a for a in argv]
            policy_args(stand_in).validate()
        elif module == "enerverse.evaluate":
            from enerverse.evaluate import EvalGeneratorConfig

            parse_cli(EvalGeneratorConfig, argv, prog="ev-eval-generator")
    assert TrainGeneratorConfig  # imported for the check above


def test_bad_experiment_files_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("steps: [{run: ev-dance}]\nname: x\n")
    r = _run(str(tmp_path / "bad.yaml"), "--dry-run")
    assert r.returncode != 0 and "run must be one of" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty.yaml").write_text("hello: 1\n")
    r = _run(str(tmp_path / "empty.yaml"))
    assert r.returncode != 0 and "needs a 'name'" in r.stderr
    r = _run(str(tmp_path / "missing.yaml"))
    assert r.returncode != 0 and "cannot read" in r.stderr
