"""A deployable policy from an intermediate training step (``policies.snapshot``, via policies.io)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_module

pytestmark = pytest.mark.integration


def test_a_training_step_exports_to_the_policy_the_run_ends_with(
    policy_workdir: Path, tmp_path: Path
) -> None:
    from policies.io import load_policy

    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    args = ["task=reach", "preset=tiny", "store=store", "out=snap", gen, "policy.encoder.kind=fused",
            "policy.aux_weight=0.5", "train.steps=4", "train.ckpt_every=2"]  # fmt: skip
    r = run_module(policy_workdir, "policies.train", *args)
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 4
    run = policy_workdir / "snap"
    steps = sorted(p.name for p in (run / "policy").glob("step_*"))
    assert steps[-1] == "step_00000004"
    r = run_module(
        policy_workdir, "policies.io", str(run / "policy" / steps[-1]), str(tmp_path / "last"), "--float32"
    )
    assert "MiB" in r.stdout
    a, b = load_policy(tmp_path / "last").state_dict(), load_policy(run / "checkpoint").state_dict()
    assert a.keys() == b.keys()
    for k in a:  # the last step's EMA weights are what the run's final checkpoint holds
        torch.testing.assert_close(a[k], b[k], msg=k)
    run_module(policy_workdir, "policies.io", str(run / "policy" / "step_00000002"), str(tmp_path / "mid"))
    p = load_policy(tmp_path / "mid")
    assert any(not torch.equal(p.state_dict()[k], b[k]) for k in b if k.startswith("head."))
    bad = run_module(tmp_path, "policies.io", str(tmp_path), str(tmp_path / "x"), check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
