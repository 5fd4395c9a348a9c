"""ev-train-policy stopping early and resuming: stop_at_step keeps the learning-rate schedule, and a
max_minutes budget counts training time over resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import train_tiny_policy


@pytest.fixture(scope="module")
def workdir(policy_workdir: Path) -> Path:
    return policy_workdir


def _train(workdir: Path, out: str, *extra: str) -> dict:
    return train_tiny_policy(workdir, out, *extra)


def test_stop_at_step_keeps_the_schedule_and_resume_matches_a_full_run(workdir: Path, capsys) -> None:
    from policies.io import load_policy
    from policies.train import parse_args

    common = ("policy.encoder.kind=cnn", "train.steps=6", "train.warmup_steps=2", "train.lr=1e-3")
    full = _train(workdir, "stop_full", *common)
    part = _train(workdir, "stop_split", *common, "stop_at_step=3")
    assert full["steps"] == 6 and part["steps"] == 3
    saved = json.loads((Path(part["checkpoint"]) / "config.json").read_text())
    assert saved["step"] == 3 and saved["train"]["train"]["steps"] == 6  # the config keeps the schedule
    assert _train(workdir, "stop_split", *common, "stop_at_step=3")["steps"] == 3  # same command: no step
    rest = _train(workdir, "stop_split", *common)  # the same folder: resumes at step 3
    assert rest["steps"] == 6
    a, b = (load_policy(Path(s["checkpoint"])).state_dict() for s in (full, rest))
    for k in a:  # a stop that shortened the learning-rate schedule would change the weights
        torch.testing.assert_close(a[k], b[k], msg=k)
    with pytest.raises(SystemExit):
        parse_args(["task=reach", "stop_at_step=0", "policy.encoder.kind=cnn"])
    assert "stop_at_step must be a positive step count" in capsys.readouterr().err


def test_a_spent_time_budget_stays_spent_when_the_run_is_resumed(workdir: Path) -> None:
    common = ("policy.encoder.kind=cnn", "train.steps=6", "train.ckpt_every=1", "max_minutes=1e-6")
    first = _train(workdir, "budget", *common)
    assert first["steps"] == 1  # the budget ran out during the first step
    assert _train(workdir, "budget", *common)["steps"] == 1  # a rerun trains no further step
    assert _train(workdir, "budget", *common[:3])["steps"] == 6  # without the budget it continues


def _train_generator(workdir: Path, out: str, *extra: str) -> dict:
    from enerverse.train import parse_args, train

    args = ["task=reach", "preset=tiny", f"store={workdir / 'store'}", "sample_every=0", "device=cpu"]
    cfg = parse_args([*args, f"out={workdir / out}", "train.ckpt_every=1", *extra])
    cfg.validate()
    return train(cfg, workdir / out)


def test_the_generator_time_budget_counts_the_codec_stage_and_spans_resumes(workdir: Path) -> None:
    codec = f"codec_from={workdir / 'gen' / 'codec' / 'final'}"
    first = _train_generator(workdir, "gen_budget", codec, "train.steps=4", "max_minutes=1e-6")
    assert first["steps"] == 1  # the budget ran out during the first step
    again = _train_generator(workdir, "gen_budget", codec, "train.steps=4", "max_minutes=1e-6")
    assert again["steps"] == 1  # a rerun trains no further step
    assert _train_generator(workdir, "gen_budget", codec, "train.steps=4")["steps"] == 4
    # with its own codec stage, the codec's training time counts: nothing is left for the denoiser
    both = _train_generator(workdir, "gen_budget_codec", "codec.steps=2", "train.steps=4", "max_minutes=1e-6")
    assert both["codec_minutes"] > 1e-6 and both["steps"] == 0
