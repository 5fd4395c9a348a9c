"""Every entry point turns a user's mistake into one line ``error: ...`` that names what was expected,
and exit code 2, before any long work (the cases a new user hit, issues 14 and 17); a bug keeps its
traceback (a plain ValueError is not taken for a user's mistake)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from conftest import nan_store

ENTRY = {  # entry point: (module, arguments every case gets unless it sets them)
    "ev-collect": ("sim.collect", ["task=reach"]),
    "ev-eval": ("sim.evaluate", ["task=reach", "out={out}"]),
    "ev-train-generator": ("enerverse.train", ["task=reach", "out={out}"]),
    "ev-eval-generator": ("enerverse.evaluate", ["out={out}"]),
    "ev-train-policy": ("policies.train", ["task=reach", "out={out}"]),
    "ev-convert": ("enerverse.convert", []),
    "ev-experiment": ("enerverse.core.experiment", []),
    "ev-data-engine": ("data_engine.jobs", []),
    "ev-info": ("enerverse.core.info", []),
    "export-policy": ("policies.io", []),
}

# (entry point, arguments, expected text). Placeholders: {empty} an empty folder, {store} the session's
# tiny store, {gen} its tiny generator checkpoint, {codec} that run's codec checkpoint, {nan_store} a
# copy of the store with a NaN action, {old_lerobot} a LeRobot v2.1 folder, {bad_experiment} an
# experiment file with a misspelt key, {out} a new folder.
CASES = [
    ("ev-collect", ["episdoes=3"], "episodes"),
    ("ev-collect", ["task=pick_plaec", "episodes=1"], "pick_place"),
    ("ev-eval", ["task=reach", "policy={empty}", "episodes=1"], "policy checkpoint folder (with config.json"),
    ("ev-eval", ["policy={gen}", "episodes=1"], "is not an EnerVerse policy checkpoint of version 1"),
    ("ev-train-generator", ["store={store}", "train.ckpt_every=0"], "train.ckpt_every must be positive"),
    ("ev-train-generator", ["store={store}", "codec.lr=-1"], "codec.lr must be positive"),
    ("ev-train-generator", ["store={store}", "train.schedule=cosin"], "train.schedule must be one of"),
    ("ev-train-generator", ["store={store}", "train.ema_decay=1.5"], "train.ema_decay must be in [0, 1)"),
    ("ev-train-generator", ["store={store}", "preset=huge"], "small"),
    (
        "ev-train-generator",
        ["store={store}", "generator.codec.factor=3"],
        "codec.factor must be a power of 2",
    ),
    ("ev-train-generator", ["store={store}", "device=tpu"], "unknown device 'tpu'; use auto, cpu, cuda"),
    ("ev-train-generator", ["store={store}", "episodes=0"], "episodes must be a positive count or null"),
    ("ev-eval-generator", ["checkpoint={empty}", "store={store}"], "not a checkpoint folder"),
    ("ev-eval-generator", ["checkpoint={codec}", "store={store}"], "is not an EnerVerse-G checkpoint"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "train.ckpt_every=0"], "train.ckpt_every"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "train.lr=-1"], "train.lr must be positive"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "train.schedule=cosin"], "constant, cosine"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "adapt.steps=5", "adapt.lr=0"], "adapt.lr"),
    ("ev-train-policy", ["store={store}", "generator={empty}"], "not a checkpoint folder"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "adapt_episodes=0"], "adapt_episodes must be"),
    ("ev-train-policy", ["store={store}"], "needs generator="),
    ("ev-train-policy", ["--steps", "3"], "key=value"),
    ("ev-train-policy", ["store={store}", "policy.encoder.kind=cnn", "seed=-1"], "seed must be >= 0"),
    (
        "ev-train-policy",
        ["store={nan_store}", "policy.encoder.kind=cnn"],
        "action has NaN or inf values in 1 of",
    ),
    ("ev-convert", ["src={empty}/data", "dst={out}"], "/data is not a folder"),
    ("ev-convert", ["src={empty}", "dst={out}"], "expected an episode store (enerverse-episodes version 1"),
    ("ev-convert", ["src={old_lerobot}", "dst={out}"], "expected a LeRobotDataset v3.0 folder"),
    ("ev-convert", ["src={store}", "dst={store}"], "exists and is not empty"),
    (
        "ev-experiment",
        ["pick_place_baselin"],
        "no experiment 'pick_place_baselin': expected a file or one of",
    ),
    ("ev-experiment", ["{bad_experiment}"], "unknown key 'argz'; valid keys: name, run, args, foreach"),
    ("ev-data-engine", ["jump"], "expected a command, run or flywheel"),
    (
        "ev-data-engine",
        ["run", "store={store}", "generator={empty}", "out={out}"],
        "expected config.json and",
    ),
    ("ev-data-engine", ["run", "store={empty}", "generator={gen}", "out={out}"], "is not an episode store"),
    ("ev-data-engine", ["run", "store={store}", "generator={gen}", "episodes=[99]", "out={out}"], "not in"),
    (
        "ev-data-engine",
        ["run", "store={store}", "generator={gen}", "flywheel.observed=[]", "out={out}"],
        "one view",
    ),
    (
        "ev-data-engine",
        ["run", "store={store}", "generator={gen}", "flywheel.observed=[nope]", "out={out}"],
        "flywheel.observed must be a non-empty subset of the views",
    ),
    ("ev-data-engine", ["run", "store={store}", "generator={gen}", "out={out}"], "has no depth"),
    ("ev-info", ["--gpu"], "ev-info takes no arguments"),
    ("export-policy", ["{gen}", "{out}"], "is not an EnerVerse policy checkpoint"),
]


def _placeholders(args: list[str], workdir: Path, tmp: Path) -> dict[str, str]:
    """The folders the arguments name, made only when a case uses them."""
    (tmp / "empty").mkdir(exist_ok=True)
    fill = {"empty": tmp / "empty", "store": workdir / "store", "gen": workdir / "gen" / "checkpoint",
            "codec": workdir / "gen" / "codec" / "final", "out": tmp / "out"}  # fmt: skip
    text = " ".join(args)
    if "{nan_store}" in text:
        fill["nan_store"] = nan_store(workdir / "store", tmp / "nan_store", episode=-1)
    if "{old_lerobot}" in text:
        (tmp / "old_lerobot" / "meta").mkdir(parents=True)
        (tmp / "old_lerobot" / "meta" / "info.json").write_text(
            '{"codebase_version": "v2.1", "features": {}}'
        )
        fill["old_lerobot"] = tmp / "old_lerobot"
    if "{bad_experiment}" in text:
        fill["bad_experiment"] = tmp / "bad.yaml"
        fill["bad_experiment"].write_text("name: bad\nsteps:\n  - run: ev-collect\n    argz: {episodes: 3}\n")
    return {k: str(v) for k, v in fill.items()}


def _argv(entry: str, args: list[str], fill: dict[str, str]) -> list[str]:
    given = {a.split("=", 1)[0] for a in args if "=" in a}
    defaults = [a for a in ENTRY[entry][1] if a.split("=", 1)[0] not in given]
    return [a.format(**fill) for a in [*defaults, *args]]


def _exit_code(module: str, argv: list[str]) -> int | str | None:
    """The exit code of ``main(argv)`` (ev-info returns it, the others raise SystemExit)."""
    try:
        return importlib.import_module(module).main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.integration
@pytest.mark.parametrize(("entry", "args", "expected"), CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_user_errors_are_one_line_and_exit_2(
    entry: str, args: list[str], expected: str, policy_workdir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing lands in the repository
    fill = _placeholders(args, policy_workdir, tmp_path)
    code = _exit_code(ENTRY[entry][0], _argv(entry, args, fill))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[-1].startswith("error: ") and expected in err[-1], err
    assert not any("Traceback" in line for line in err)


BUGS = [  # (entry point, the function its main calls, arguments): a bug inside must not become one line
    ("ev-convert", "enerverse.convert.convert", ["src={store}", "dst={out}"]),
    ("ev-experiment", "enerverse.core.experiment.run_experiment", ["quick_pick_place"]),
    ("ev-data-engine", "data_engine.jobs.run_job", ["run", "store={store}", "generator={gen}", "out={out}"]),
    ("ev-eval-generator", "enerverse.evaluate.run", ["checkpoint={gen}", "store={store}"]),
    ("ev-train-policy", "policies.train.train", ["store={store}", "policy.encoder.kind=cnn"]),
    ("ev-train-generator", "enerverse.train.train", ["store={store}"]),
    ("export-policy", "policies.io.export", ["{gen}", "{out}"]),
]


@pytest.mark.integration
@pytest.mark.parametrize(("entry", "target", "args"), BUGS, ids=[b[0] for b in BUGS])
def test_a_bug_keeps_its_traceback(
    entry: str, target: str, args: list[str], policy_workdir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)

    def bug(*_a, **_k):
        raise ValueError("an internal check failed")  # what a bug raises: not a project error

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, bug)
    argv = _argv(entry, args, _placeholders(args, policy_workdir, tmp_path))
    with pytest.raises(ValueError, match="an internal check failed"):  # propagates: Python prints it
        importlib.import_module(ENTRY[entry][0]).main(argv)
