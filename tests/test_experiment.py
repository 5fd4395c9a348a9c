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
        elif module == "data_engine.jobs":
            from data_engine.jobs import DataEngineConfig

            assert argv[0] == "run"  # stores are never shipped: an earlier step collects them
            (tmp_path / "store").mkdir(exist_ok=True)
            (tmp_path / "store" / "zarr.json").write_text("{}")
            argv = [f"store={tmp_path / 'store'}" if a.startswith("store=") else a for a in argv[1:]]
            parse_cli(DataEngineConfig, argv, prog="ev-data-engine run").validate()
    assert TrainGeneratorConfig  # imported for the check above


def test_bad_experiment_files_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("steps: [{run: ev-dance}]\nname: x\n")
    r = _run(str(tmp_path / "bad.yaml"), "--dry-run")
    assert r.returncode != 0 and "run must be one of" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty.yaml").write_text("hello: 1\n")
    r = _run(str(tmp_path / "empty.yaml"))
    assert r.returncode != 0 and "needs a 'name'" in r.stderr
    r = _run(str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "no experiment" in r.stderr and "quick_pick_place" in r.stderr


def test_an_entry_point_starts_from_its_step_of_an_experiment(capsys, tmp_path: Path) -> None:
    """``ev-train-policy experiment=<name>`` reproduces that file's training settings; later
    key=value arguments override them; ``--help`` lists the experiments."""
    from policies.train import parse_args

    cfg = parse_args(["experiment=image_baseline_pick_place", "train.steps=7"])
    assert cfg.policy.encoder.kind == "cnn" and cfg.store == "data/pick_place" and cfg.batch_size == 32
    assert cfg.train.steps == 7 and cfg.out == "outputs/train_policy/image_baseline_pick_place"
    (tmp_path / "config.json").write_text("{}")  # stand-in for the checkpoints earlier steps make
    made = [f"generator={tmp_path}", f"init_from={tmp_path}"]
    two = parse_args(["experiment=enerverse_a_pick_place:condition", *made])
    assert two.policy.aux_condition and two.train.steps == 3500 and two.stop_at_step is None
    from enerverse.core.config import parse_cli
    from sim.collect import CollectConfig

    col = parse_cli(
        CollectConfig, ["experiment=generator_pretrained:collect experts", "task=stack"], prog="ev-collect"
    )
    assert col.out == "data/pretrain/stack" and col.episodes == 200
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "image_baseline_pick_place" in capsys.readouterr().out
    bad = {
        "experiment=no_such_thing": "expected a file or one of",
        "experiment=enerverse_a_pick_place": "pick one with experiment=enerverse_a_pick_place:<step>",
        "experiment=generator_pretrained": "has no ev-train-policy step",
    }
    for arg, expected in bad.items():
        with pytest.raises(SystemExit) as e:
            parse_args([arg])
        assert e.value.code == 2 and expected in capsys.readouterr().err, arg
    with pytest.raises(SystemExit):
        parse_cli(CollectConfig, ["experiment=generator_pretrained:collect experts"], prog="ev-collect")
    assert "repeats over" in capsys.readouterr().err


def test_an_experiment_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\nsteps: [{run: ev-eval, argz: {episodes: 1}}]\n")
    r = _run(str(tmp_path / "x.yaml"), "--dry-run")
    assert r.returncode == 2 and "unknown key 'argz'; valid keys: name, run, args, foreach" in r.stderr


def test_export_steps_pass_their_flags() -> None:
    from enerverse.core.experiment import step_argv

    step = {"run": "export-generator", "args": {"src": "a/{task}", "dst": "b", "codec": "c", "float32": True}}
    assert step_argv(step, {"task": "t"}) == ["a/t", "b", "--float32", "--codec", "c"]
    assert step_argv({"run": "export-policy", "args": {"src": "a", "dst": "b"}}, {}) == ["a", "b"]


@pytest.mark.integration
def test_a_stopped_experiment_waits_for_its_step_to_checkpoint(policy_workdir: Path, tmp_path: Path) -> None:
    """SIGTERM to the runner's whole process group (``kill -- -PGID``; Ctrl-C in a terminal alike)
    reaches the training step once: it checkpoints and prints its summary, and the runner stops with
    one line and no traceback (resuming from that checkpoint is tested with the trainer)."""
    import json
    import os
    import signal
    import time

    run = tmp_path / "run"
    args = {
        "task": "reach", "preset": "tiny", "store": str(policy_workdir / "store"), "device": "cpu",
        "policy.encoder.kind": "cnn", "text_encoder": "hashing", "resolution": 32,
        "train.steps": 100000, "train.ckpt_every": 5, "out": str(run),
    }  # fmt: skip
    spec = {"name": "stop_test", "steps": [{"name": "train", "run": "ev-train-policy", "args": args}]}
    (tmp_path / "stop.yaml").write_text(json.dumps(spec))  # JSON is YAML
    cmd = [sys.executable, str(REPO / "scripts" / "experiment.py"), str(tmp_path / "stop.yaml")]
    p = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((run / "policy").glob("step_*")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, p.stderr.read()[-2000:]
    os.killpg(p.pid, signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM in step 'train'" in err and "Traceback" not in err, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and 0 < summary["steps"] < 100000
