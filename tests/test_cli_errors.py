"""Every entry point turns a user's mistake into one line ``error: ...`` that names what was expected,
and exit code 2, before any long work (the cases a new user hit, issues 14 and 17)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ENTRY = {
    "ev-collect": "sim.collect",
    "ev-eval": "sim.evaluate",
    "ev-train-generator": "enerverse.train",
    "ev-eval-generator": "enerverse.evaluate",
    "ev-train-policy": "policies.train",
}

# (entry point, arguments; {empty} is an empty folder, {store} the session's tiny store, expected text)
CASES = [
    ("ev-collect", ["episdoes=3"], "episodes"),
    ("ev-collect", ["task=pick_plaec", "episodes=1"], "pick_place"),
    ("ev-eval", ["task=reach", "policy={empty}", "episodes=1"], "policy checkpoint folder (with config.json"),
    ("ev-train-generator", ["store={store}", "train.ckpt_every=0"], "train.ckpt_every must be positive"),
    ("ev-train-generator", ["store={store}", "codec.lr=-1"], "codec.lr must be positive"),
    ("ev-train-generator", ["store={store}", "train.schedule=cosin"], "train.schedule must be one of"),
    ("ev-train-generator", ["store={store}", "train.ema_decay=1.5"], "train.ema_decay must be in [0, 1)"),
    ("ev-train-generator", ["store={store}", "preset=huge"], "small"),
    ("ev-eval-generator", ["checkpoint={empty}", "store={store}"], "not a checkpoint folder"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "train.ckpt_every=0"], "train.ckpt_every"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "train.lr=-1"], "train.lr must be positive"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "train.schedule=cosin"], "constant, cosine"),
    ("ev-train-policy", ["store={store}", "generator={empty}", "adapt.steps=5", "adapt.lr=0"], "adapt.lr"),
    ("ev-train-policy", ["store={store}", "generator={empty}"], "not a checkpoint folder"),
    ("ev-train-policy", ["store={store}"], "needs generator="),
    ("ev-train-policy", ["--steps", "3"], "key=value"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("entry", "args", "expected"), CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_user_errors_are_one_line_and_exit_2(
    entry: str, args: list[str], expected: str, policy_workdir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing lands in the repository
    (tmp_path / "empty").mkdir()
    fill = {"empty": str(tmp_path / "empty"), "store": str(policy_workdir / "store")}
    argv = [a.format(**fill) for a in args] + [f"out={tmp_path / 'out'}"] * (entry != "ev-collect")
    has_task = entry == "ev-eval-generator" or any(a.startswith("task=") for a in args)
    with pytest.raises(SystemExit) as e:
        importlib.import_module(ENTRY[entry]).main([*([] if has_task else ["task=reach"]), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    assert err and err[-1].startswith("error: ") and expected in err[-1], err
    assert not any("Traceback" in line for line in err)
