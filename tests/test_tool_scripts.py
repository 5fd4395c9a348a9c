"""Every benchmark and script imports: a module they use that was renamed or removed fails here, not
in a user's hands (bench/codec_options.py once imported a deleted function)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FILES = sorted([*(REPO / "bench").glob("*.py"), *(REPO / "scripts").glob("*.py")])


def _load(path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # bench scripts import bench/common.py
    spec = importlib.util.spec_from_file_location(f"_tool_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs the imports and definitions, not main()
    return module


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_script_imports(path: Path, monkeypatch) -> None:
    module = _load(path, monkeypatch)
    assert path.name == "common.py" or callable(getattr(module, "main", None)), f"{path} has no main()"


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--checkpoint", "{tmp}/none"], "no policy checkpoint at"), (["--episodes", "0"], "must be positive")],
)
def test_the_demo_reports_a_users_mistake_in_one_line(args, expected, tmp_path: Path, monkeypatch, capsys):
    demo = _load(REPO / "scripts" / "demo.py", monkeypatch)
    argv = ["--out", str(tmp_path / "out"), *(a.format(tmp=tmp_path) for a in args)]
    with pytest.raises(SystemExit) as e:
        demo.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_the_future_ablation_zeroes_only_the_tokens_it_names(policy_workdir: Path, monkeypatch) -> None:
    from conftest import random_observation, train_tiny_policy

    from policies.runtime import PolicyRuntime

    ablate = _load(REPO / "scripts" / "ablate_future.py", monkeypatch)
    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(policy_workdir, "pol_ablate", "policy.encoder.kind=fused", gen, "train.steps=2")
    rt = PolicyRuntime(s["checkpoint"])
    enc = rt.policy.encoder
    imagined, future = ablate.zeroed_tokens(enc, "imagined"), ablate.zeroed_tokens(enc, "future")
    current = enc.future.decision_tokens[0]
    assert imagined and current not in imagined
    assert set(imagined) < set(future) == set(range(enc.future.frames))
    tokens = {}
    orig = rt.policy.observation_tokens

    def spy(batch, *a, **k):
        tokens[mode] = orig(batch, *a, **k).detach()
        return tokens[mode]

    rt.policy.observation_tokens = spy
    for mode in ("none", "imagined", "future"):
        rt.reset("reach the red sphere")
        if mode == "none":
            rt.act(random_observation(rt))
            continue
        with ablate.zeroing(mode):
            rt.act(random_observation(rt))
    zero = {m: [i for i in range(tokens[m].shape[1]) if not tokens[m][:, i].any()] for m in tokens}
    assert zero == {"none": [], "imagined": imagined, "future": future}
    kept = [i for i in range(tokens["none"].shape[1]) if i not in imagined]
    assert torch.equal(tokens["imagined"][:, kept], tokens["none"][:, kept])
