"""Checkpoint folders: round trip, atomic replace, clear errors, latest_checkpoint, RNG state."""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from enerverse.core import checkpoint as ckpt  # noqa: E402
from enerverse.core import fsutil  # noqa: E402
from enerverse.core.checkpoint import (  # noqa: E402
    CheckpointError,
    capture_rng_state,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _trained_model() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        loss = model(torch.randn(5, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_with_optimizer_state(tmp_path: Path) -> None:
    model, opt, sched = _trained_model()
    config = {"model": {"width": 8}, "lr": 1e-2, "name": "tiny"}
    train_state = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": 3,
        "rng": capture_rng_state(),
    }
    folder = save_checkpoint(tmp_path / "step_00000003", config, model.state_dict(), train_state)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]

    ck = load_checkpoint(folder)
    assert ck.config == config and ck.train_state is not None and ck.train_state["step"] == 3
    for key, value in model.state_dict().items():
        assert torch.equal(ck.state_dict[key], value)

    model2, _, _ = _trained_model()
    with torch.no_grad():
        for p in model2.parameters():
            p.zero_()
    model2.load_state_dict(ck.state_dict)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1.0)
    opt2.load_state_dict(ck.train_state["optimizer"])
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    sched2.load_state_dict(ck.train_state["scheduler"])
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"])
    x = torch.randn(3, 4)
    assert torch.equal(model(x), model2(x))


def test_rng_state_restores_sequences(tmp_path: Path) -> None:
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(tmp_path / "c", {}, {"w": torch.zeros(1)}, {"rng": state})
    restore_rng_state(load_checkpoint(tmp_path / "c").train_state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_tied_weights_and_no_train_state(tmp_path: Path) -> None:
    w = torch.randn(3, 3)
    ck_path = save_checkpoint(tmp_path / "tied", {"a": 1}, {"enc": w, "dec": w})
    ck = load_checkpoint(ck_path)
    assert torch.equal(ck.state_dict["enc"], ck.state_dict["dec"]) and ck.train_state == {}
    (ck_path / "train_state.pt").unlink()  # a weights-only export is still loadable
    assert load_checkpoint(ck_path).train_state is None


def test_failed_save_keeps_existing_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "step_00000001"
    save_checkpoint(folder, {"v": 1}, {"w": torch.ones(2)}, {"step": 1})
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        save_checkpoint(folder, {"v": 2}, {"w": torch.zeros(2), "bad": [1, 2]}, {"step": 2})
    with pytest.raises(TypeError, match="train_state"):
        save_checkpoint(folder, {"v": 2}, {"w": torch.zeros(2)}, {"opt": object()})

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(folder, {"v": 2}, {"w": torch.zeros(2)}, {"step": 2})
    monkeypatch.undo()
    ck = load_checkpoint(folder)
    assert ck.config == {"v": 1} and torch.equal(ck.state_dict["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]  # no temp folders left

    save_checkpoint(folder, {"v": 3}, {"w": torch.full((2,), 3.0)}, {"step": 3})
    assert load_checkpoint(folder).config == {"v": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"w": torch.ones(1)}, pickled / "model.pt")
    with pytest.raises(CheckpointError, match=r"not a checkpoint folder.*model\.pt.*never loaded"):
        load_checkpoint(pickled)
    folder = save_checkpoint(tmp_path / "ok", {}, {"w": torch.ones(1)})
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete: missing model.safetensors"):
        load_checkpoint(folder)


def test_pickled_object_in_train_state_is_refused(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path / "ck", {}, {"w": torch.ones(1)})
    with open(folder / "train_state.pt", "wb") as f:
        pickle.dump({"obj": Path("/etc")}, f, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(folder)


def test_latest_checkpoint(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "nope") is None
    for step in (5, 120, 30):
        save_checkpoint(checkpoint_dir(tmp_path, step), {"step": step}, {"w": torch.ones(1)})
    (tmp_path / "step_00000999").mkdir()  # incomplete: ignored
    (tmp_path / f".step_00001000{ckpt.CONFIG_FILE}").mkdir()  # hidden temp names: ignored
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000120"
    assert checkpoint_dir(tmp_path, 7).name == "step_00000007"


class _Killed(BaseException):
    """Stands in for a SIGKILL right after one rename step."""


class _KillAfter:
    """Wraps rename functions: performs the rename, then raises _Killed once ``n`` renames happened."""

    def __init__(self, n: int) -> None:
        self.n, self.renames = n, 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            result = fn(*args)
            if result is not False:  # False: an unsupported renameat2 did nothing
                self.renames += 1
                if self.renames > self.n:
                    raise _Killed
            return result

        return wrapped


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "fallback"])
def test_replacing_a_checkpoint_never_leaves_the_path_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    """Interrupt the replacement after each rename in turn: the path must hold a complete checkpoint
    (old or new). With the documented fallback, a kill between its two renames leaves the complete old
    checkpoint in the ``.<name>.old-*`` folder instead."""
    real_rename, real_renameat2 = os.rename, fsutil._renameat2
    for kill_after in range(10):
        run = tmp_path / f"run{kill_after}"
        folder = save_checkpoint(run / "step_00000001", {"v": 1}, {"w": torch.ones(2)}, {"step": 1})
        kill = _KillAfter(kill_after)
        with monkeypatch.context() as m:
            m.setattr(os, "rename", kill.wrap(real_rename))
            m.setattr(fsutil, "_renameat2", kill.wrap(real_renameat2 if exchange else lambda *a: False))
            try:
                save_checkpoint(folder, {"v": 2}, {"w": torch.full((2,), 2.0)}, {"step": 2})
                killed = False
            except _Killed:
                killed = True
        if folder.exists() or exchange:
            config = load_checkpoint(folder).config
            assert config in ({"v": 1}, {"v": 2}), (kill_after, config)
        else:
            (old,) = run.glob(".step_00000001.old-*")
            assert load_checkpoint(old).config == {"v": 1}
        if not killed:
            assert config == {"v": 2} and kill.renames == 1 + (not exchange)
            assert [p.name for p in run.iterdir()] == ["step_00000001"]
            break
    else:
        pytest.fail("save_checkpoint kept renaming")


def test_a_local_hub_cache_folder_loads_its_snapshot(tmp_path: Path) -> None:
    """models--org--name/ as huggingface_hub caches it (snapshot files are links to blobs): the folder
    itself loads, through refs/main, with no download."""
    model, _, _ = _trained_model()
    src = save_checkpoint(tmp_path / "export", {"name": "tiny"}, model.state_dict(), None)
    repo = tmp_path / "hub" / "models--enerverse--tiny"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in src.iterdir():
        blob = repo / "blobs" / f"{f.name}.blob"
        blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    with pytest.raises(CheckpointError, match="2 snapshots and no refs/main"):
        (repo / "snapshots" / "def456").mkdir()
        load_checkpoint(repo)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    ck = load_checkpoint(repo)
    assert ck.path == snap and ck.config == {"name": "tiny"}
    assert all(torch.equal(ck.state_dict[k], v) for k, v in model.state_dict().items())
