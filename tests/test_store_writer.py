"""Episode writer: bad frames and metadata refused, nothing half-written committed, dead writers cleaned."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from helpers.store_crash_writer import frame, make_episode
from helpers.store_testing import REPO, assert_nothing_written, meta, write

from enerverse.core.store import (
    EpisodeStore,
    EpisodeWriter,
    WriterConflictError,
)


def _bad(ep: dict[str, Any], t: int, **over: Any) -> dict[str, Any]:
    return frame(ep, t) | over


BAD_FRAMES = {
    "rgb float": (lambda ep: _bad(ep, 0, rgb=ep["rgb"][0].astype(np.float32)), r"rgb: expected dtype uint8"),
    "rgb 3 views": (lambda ep: _bad(ep, 0, rgb=np.zeros((3, 8, 8, 3), np.uint8)), r"V=2.*got \(3, 8, 8, 3\)"),
    "rgb no channel": (lambda ep: _bad(ep, 0, rgb=np.zeros((2, 8, 8), np.uint8)), r"expected shape"),
    "T 3 views": (
        lambda ep: _bad(ep, 0, T_cam_world=np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))),
        r"T_cam_world: expected shape \(2, 4, 4\), got \(3, 4, 4\)",
    ),
    "nan action": (lambda ep: _bad(ep, 0, action=np.full(7, np.nan, np.float32)), r"action: contains NaN"),
    "inf state": (
        lambda ep: _bad(ep, 0, state=np.array([np.inf] * 5, np.float32)),
        r"state: contains NaN or inf",
    ),
    "int action": (
        lambda ep: _bad(ep, 0, action=np.zeros(7, np.int64)),
        r"action: expected a floating dtype",
    ),
    "bad T last row": (lambda ep: _bad(ep, 0, T_cam_world=np.zeros((2, 4, 4), np.float32)), r"last row"),
    "depth shape": (
        lambda ep: _bad(ep, 0, depth=np.ones((2, 4, 4), np.float32)),
        r"depth: expected shape \(2, 8, 8\), got \(2, 4, 4\)",
    ),
    "nan privileged": (
        lambda ep: _bad(ep, 0, privileged=np.array([0.1, np.nan], np.float32)),
        r"privileged: contains NaN",
    ),
    "seg int64": (
        lambda ep: _bad(ep, 0, seg=np.zeros((2, 8, 8), np.int64)),
        r"seg: expected object labels of dtype uint8",
    ),
    "seg shape": (
        lambda ep: _bad(ep, 0, seg=np.zeros((2, 8, 4), np.uint8)),
        r"seg: expected shape \(2, 8, 8\), got \(2, 8, 4\)",
    ),
    "privileged 2-D": (
        lambda ep: _bad(ep, 0, privileged=np.zeros((2, 3), np.float32)),
        r"privileged: expected a non-empty 1-D array",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_writer_rejects_bad_frame_and_commits_nothing(store: EpisodeStore, case: str) -> None:
    ep = make_episode(2, T=4)
    make_bad, msg = BAD_FRAMES[case]
    with pytest.raises(ValueError, match=msg), store.write_episode(0, **meta(ep)) as w:
        w.add_frame(**make_bad(ep))
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "change",
    ["state shape", "state dtype", "rgb size", "depth vanishes", "privileged appears", "seg appears"],
)
def test_writer_rejects_frames_inconsistent_with_frame0(store: EpisodeStore, change: str) -> None:
    ep = make_episode(3, T=4)
    over = {
        "state shape": {"state": np.zeros(6, np.float32)},
        "state dtype": {"state": ep["state"][1].astype(np.float64)},
        "rgb size": {"rgb": np.zeros((2, 8, 9, 3), np.uint8)},
        "depth vanishes": {"depth": None},
        "privileged appears": {"privileged": np.zeros(3, np.float32)},
        "seg appears": {"seg": np.zeros((2, 8, 8), np.uint8)},
    }[change]
    with pytest.raises(ValueError, match="expected|frame 0"), store.write_episode(0, **meta(ep)) as w:
        w.add_frame(**frame(ep, 0))
        w.add_frame(**_bad(ep, 1, **over))
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"provenance": "dreamed"}, r"unknown provenance 'dreamed'; expected one of"),
        ({"provenance": "gs4d"}, r"requires a non-empty 'generator_version'"),
        ({"view_kinds": ["real", "virtual"]}, r"view_kinds"),
        (
            {"view_names": ["main"], "view_kinds": ["real"]},
            r"K must be .*shape \(1, 3, 3\).*got .*\(2, 3, 3\)",
        ),
        ({"fps": 0}, r"fps"),
        ({"blob": object()}, r"not JSON-serialisable"),
    ],
)
def test_write_episode_rejects_bad_metadata(store: EpisodeStore, kw: dict[str, Any], msg: str) -> None:
    ep = make_episode(4, T=2)
    with pytest.raises(ValueError, match=msg):
        store.write_episode(0, **meta(ep, **kw))
    assert_nothing_written(store)


def test_empty_episode_and_bad_attrs_at_commit_are_rejected(store: EpisodeStore) -> None:
    ep = make_episode(5, T=2)
    with pytest.raises(ValueError, match="empty episode"), store.write_episode(0, **meta(ep)):
        pass
    with pytest.raises(ValueError, match="'success' must be a bool"), store.write_episode(0, **meta(ep)) as w:
        w.add_frame(**frame(ep, 0))
        w.attrs["success"] = "yes"
    assert_nothing_written(store)


def test_rejected_frame_never_reaches_committed_episode(store: EpisodeStore) -> None:
    ep = make_episode(6, T=3)
    with store.write_episode(0, **meta(ep)) as w:
        w.add_frame(**frame(ep, 0))
        with pytest.raises(ValueError):
            w.add_frame(**_bad(ep, 1, action=np.full(7, np.nan, np.float32)))
        w.add_frame(**frame(ep, 2))
    view = store.episode(0)
    assert view.length == 2 and np.isfinite(view.load("action")).all()
    np.testing.assert_array_equal(view.load("action"), ep["action"][[0, 2]])


def test_exception_inside_block_leaves_no_episode_and_no_temp(store: EpisodeStore) -> None:
    ep = make_episode(7, T=38)
    with pytest.raises(RuntimeError, match="boom"), store.write_episode(0, flush_every=4, **meta(ep)) as w:
        for t in range(38):
            w.add_frame(**frame(ep, t))
        (tmp,) = store.incomplete()
        assert tmp.startswith(".tmp-episode_000000-") and store.indices() == []
        on_disk = zarr.open_group(str(store.episodes_dir / tmp), mode="r")
        assert on_disk["rgb"].shape[0] == on_disk["state"].shape[0] == 36  # appended every 4 frames
        raise RuntimeError("boom")
    assert_nothing_written(store)


def test_existing_index_needs_overwrite_and_is_replaced_only_at_commit(store: EpisodeStore) -> None:
    old, new = make_episode(8, T=3), make_episode(9, T=5)
    write(store, 0, old)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        store.write_episode(0, **meta(new))
    with pytest.raises(RuntimeError), store.write_episode(0, overwrite=True, **meta(new)) as w:
        w.add_frame(**frame(new, 0))
        raise RuntimeError("abandon")
    np.testing.assert_array_equal(store.episode(0).load("rgb"), old["rgb"])
    with store.write_episode(0, overwrite=True, **meta(new)) as w:
        for t in range(5):
            w.add_frame(**frame(new, t))
        np.testing.assert_array_equal(store.episode(0).load("rgb"), old["rgb"])  # old still there
    assert store.indices() == [0] and store.incomplete() == []
    np.testing.assert_array_equal(store.episode(0).load("rgb"), new["rgb"])


def _start(store: EpisodeStore, ep: dict[str, Any], n: int, flush_every: int = 32) -> EpisodeWriter:
    w = store.write_episode(0, flush_every=flush_every, **meta(ep))
    for t in range(n):
        w.add_frame(**frame(ep, t))
    return w


def test_cleanup_keeps_live_writers_folder_and_commit_is_complete(store: EpisodeStore) -> None:
    """Reproducer: a resume-time cleanup used to delete a live writer's temp folder; zarr re-created
    the folders and the commit produced a 50-frame episode whose first 32 frames were zeros."""
    ep = make_episode(12, T=50)
    w = _start(store, ep, 40)  # frames 0..31 flushed to disk, 32..39 buffered
    (name,) = store.incomplete()
    other = EpisodeStore.open(store.path)  # e.g. a resumed collector
    assert other.incomplete(in_use=True) == [name] and other.incomplete(in_use=False) == []
    assert other.cleanup_incomplete() == 0 and store.incomplete() == [name]
    for t in range(40, 50):
        w.add_frame(**frame(ep, t))
    assert w.commit() == 0
    view = EpisodeStore.open(store.path).episode(0)
    assert view.length == 50
    for key in ("rgb", "depth", "state", "action", "T_cam_world"):
        np.testing.assert_array_equal(view.load(key), ep[key], err_msg=key)
    assert not (store.episodes_dir / "episode_000000" / ".writer.lock").exists()
    assert store.incomplete() == []


def test_cleanup_removes_only_dead_writers_leftovers(store: EpisodeStore) -> None:
    ep = make_episode(13, T=8)
    live = _start(store, ep, 8, flush_every=4)
    dropped = store.write_episode(1, flush_every=4, **meta(ep))
    dropped.add_frame(**frame(ep, 0))
    dropped.flush()
    dropped_name = dropped.tmp_path.name
    del dropped  # dropped without commit/abort (like a writer whose process died): lock released
    gc.collect()
    legacy = store.episodes_dir / ".tmp-episode_000002-0123abcd"  # written before writer locks existed
    legacy.mkdir()
    (legacy / "zarr.json").write_text("{}")
    (store.episodes_dir / ".tmp-stray-file").write_text("x")
    dead = sorted([dropped_name, legacy.name, ".tmp-stray-file"])
    assert store.incomplete(in_use=False) == dead
    assert store.incomplete(in_use=True) == [live.tmp_path.name]
    assert store.cleanup_incomplete(min_age_s=3600) == 0  # all too fresh
    assert store.cleanup_incomplete() == 3
    assert store.incomplete() == [live.tmp_path.name]
    live.commit()
    assert store.indices() == [0] and store.incomplete() == []


@pytest.mark.parametrize("tamper", ["deleted", "replaced by a copy", "lock file removed"])
def test_writer_refuses_to_commit_when_its_temp_folder_was_replaced(
    store: EpisodeStore, tmp_path: Path, tamper: str
) -> None:
    ep = make_episode(14, T=50)
    conflict = pytest.raises(WriterConflictError, match="removed or replaced.*nothing is committed")
    with conflict, store.write_episode(0, flush_every=32, **meta(ep)) as w:
        for t in range(40):
            w.add_frame(**frame(ep, t))
        if tamper == "deleted":  # what a lock-ignoring cleanup (or rm -rf) does
            shutil.rmtree(w.tmp_path)
        elif tamper == "replaced by a copy":
            w.tmp_path.rename(tmp_path / "aside")
            shutil.copytree(tmp_path / "aside", w.tmp_path)
        else:
            (w.tmp_path / ".writer.lock").unlink()
        for t in range(40, 50):  # buffered only: the check at commit must catch it
            w.add_frame(**frame(ep, t))
    assert_nothing_written(store)


def test_writer_notices_a_deleted_temp_folder_at_the_next_flush(store: EpisodeStore) -> None:
    ep = make_episode(15, T=12)
    w = _start(store, ep, 4, flush_every=4)
    shutil.rmtree(w.tmp_path)
    with pytest.raises(WriterConflictError, match="episode 0: temp folder"):
        for t in range(4, 8):
            w.add_frame(**frame(ep, t))
    w.abort()
    assert_nothing_written(store)


@pytest.mark.integration
def test_cleanup_in_another_process_skips_live_writer(store: EpisodeStore) -> None:
    ep = make_episode(16, T=45)
    w = _start(store, ep, 40)
    code = (
        "import sys; from enerverse.core.store import EpisodeStore; "
        "s = EpisodeStore.open(sys.argv[1]); print(s.incomplete(in_use=True), s.cleanup_incomplete())"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code, str(store.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.split() == [f"['{w.tmp_path.name}']", "0"]
    for t in range(40, 45):
        w.add_frame(**frame(ep, t))
    w.commit()
    np.testing.assert_array_equal(store.episode(0).load("rgb"), ep["rgb"])


def test_seg_masks_round_trip_with_their_names(store: EpisodeStore) -> None:
    ep = make_episode(5, T=3)
    masks = np.random.default_rng(0).integers(0, 3, size=(3, 2, 8, 8), dtype=np.uint8)
    with store.write_episode(0, **meta(ep, seg_names=["cube", "plate"])) as w:
        for t in range(3):
            w.add_frame(**frame(ep, t), seg=masks[t])
    view = store.episode(0)
    np.testing.assert_array_equal(view.load("seg"), masks)
    assert view.seg_names == ["cube", "plate"] and view.seg.chunks == (1, 2, 8, 8)
    with store.write_episode(1, **meta(ep)) as w:
        w.add_frame(**frame(ep, 0))
    assert store.episode(1).seg is None and store.episode(1).seg_names == []
