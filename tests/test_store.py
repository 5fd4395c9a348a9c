"""Episode store: round trips, validation, format errors, atomic commits, crash safety, stats."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from enerverse.core.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PROVENANCES,
    EpisodeStore,
    EpisodeWriter,
    StoreFormatError,
    WriterConflictError,
    compute_stats,
    load_stats,
    save_stats,
)

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "store_crash_writer.py"
_spec = importlib.util.spec_from_file_location("store_crash_writer", HELPER)
crash_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_writer)
make_episode, frame = crash_writer.make_episode, crash_writer.frame

VIEWS, KINDS = ["main", "anchor_left"], ["real", "anchor"]


def meta(ep: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = {
        "task": "push",
        "instruction": "push the cube",
        "seed": 3,
        "view_names": VIEWS,
        "view_kinds": KINDS,
        "fps": 10.0,
        "K": ep["K"],
    }
    return base | kw


def write(store: EpisodeStore, index: int, ep: dict[str, Any], **kw: Any) -> None:
    with store.write_episode(index, **meta(ep, **kw)) as w:
        for t in range(len(ep["rgb"])):
            w.add_frame(**frame(ep, t))


def assert_nothing_written(store: EpisodeStore) -> None:
    reopened = EpisodeStore.open(store.path)
    assert reopened.indices() == [] and len(reopened) == 0
    assert reopened.incomplete() == []
    assert sorted(os.listdir(store.episodes_dir)) == ["zarr.json"]


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    return EpisodeStore.create(tmp_path / "store")


def test_round_trip_arrays_and_attrs(store: EpisodeStore) -> None:
    ep = make_episode(0, T=19)
    with store.write_episode(4, flush_every=8, robot="panda", tags=["a", "b"], **meta(ep)) as w:
        assert isinstance(w, EpisodeWriter)
        for t in range(19):
            w.add_frame(**frame(ep, t))
        w.attrs["success"] = True
        w.set_attrs(note="ok")
    assert store.root_attrs["format"] == FORMAT_NAME and store.root_attrs["version"] == FORMAT_VERSION == 1
    assert store.indices() == [4] and len(store) == 1 and store.next_index() == 5
    assert store.has_episode(4) and not store.has_episode(3) and 4 in store
    assert np.int64(4) in store and np.uint8(4) in store and np.int32(3) not in store
    assert np.int64(-4) not in store and True not in store and "4" not in store and 4.0 not in store
    assert (store.episodes_dir / "episode_000004").is_dir() and store.incomplete() == []

    view = EpisodeStore.open(store.path).episode(4)
    assert view.length == 19
    for key in ("rgb", "depth", "state", "action", "T_cam_world", "K"):
        got = view.load(key)
        assert got.dtype == {"rgb": np.uint8, "depth": np.float16}.get(key, np.float32), key
        np.testing.assert_array_equal(got, ep[key], err_msg=key)
    assert view.rgb.shape == (19, 2, 8, 8, 3) and view.rgb.chunks == (1, 2, 8, 8, 3)
    np.testing.assert_array_equal(view.rgb[3:5], ep["rgb"][3:5])  # lazy slicing
    np.testing.assert_array_equal(view.load("state", [7, 2, 2, -1]), ep["state"][[7, 2, 2, 18]])
    np.testing.assert_array_equal(view.load("action", 5), ep["action"][5])
    with pytest.raises(IndexError):
        view.load("state", [19])
    assert view.attrs == {
        "task": "push",
        "instruction": "push the cube",
        "success": True,
        "seed": 3,
        "view_names": VIEWS,
        "view_kinds": KINDS,
        "fps": 10.0,
        "provenance": "sim",
        "generator_version": None,
        "length": 19,
        "robot": "panda",
        "tags": ["a", "b"],
        "note": "ok",
    }


def test_episode_without_depth_and_generated_provenance(store: EpisodeStore) -> None:
    ep = make_episode(1, T=3, with_depth=False)
    write(store, 0, ep, provenance="generated", generator_version="ev-g 0.1", success=True)
    view = store.episode(0)
    assert view.depth is None and view.keys() == ["rgb", "state", "action", "T_cam_world", "K"]
    assert view.attrs["provenance"] == "generated" and view.attrs["generator_version"] == "ev-g 0.1"
    with pytest.raises(KeyError, match="no array 'depth'"):
        view.load("depth")


def test_privileged_object_state_round_trips(store: EpisodeStore) -> None:
    ep = make_episode(5, T=3, with_depth=False)
    priv = np.arange(9, dtype=np.float64).reshape(3, 3) / 10  # e.g. the goal position per frame
    with store.write_episode(0, **meta(ep)) as w:
        for t in range(3):
            w.add_frame(**frame(ep, t), privileged=priv[t])
    view = EpisodeStore.open(store.path).episode(0)
    assert view.keys() == ["rgb", "state", "action", "T_cam_world", "privileged", "K"]
    got = view.load("privileged")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, priv.astype(np.float32))


@pytest.mark.parametrize("provenance", PROVENANCES)
def test_every_listed_provenance_is_accepted_and_stored(store: EpisodeStore, provenance: str) -> None:
    ep = make_episode(11, T=1, with_depth=False)
    write(store, 0, ep, provenance=provenance, generator_version="gen 1")
    assert EpisodeStore.open(store.path).episode(0).attrs["provenance"] == provenance


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
    "change", ["state shape", "state dtype", "rgb size", "depth vanishes", "privileged appears"]
)
def test_writer_rejects_frames_inconsistent_with_frame0(store: EpisodeStore, change: str) -> None:
    ep = make_episode(3, T=4)
    over = {
        "state shape": {"state": np.zeros(6, np.float32)},
        "state dtype": {"state": ep["state"][1].astype(np.float64)},
        "rgb size": {"rgb": np.zeros((2, 8, 9, 3), np.uint8)},
        "depth vanishes": {"depth": None},
        "privileged appears": {"privileged": np.zeros(3, np.float32)},
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


def test_open_rejects_non_stores_with_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(StoreFormatError, match="expected an episode store.*found nothing"):
        EpisodeStore.open(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreFormatError, match="found a file, not a directory"):
        EpisodeStore.open(tmp_path / "file")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreFormatError, match="expected an episode store.*found a directory without zarr"):
        EpisodeStore.open(tmp_path / "plain")
    zarr.open_group(str(tmp_path / "v2"), mode="w", zarr_format=2)
    with pytest.raises(StoreFormatError, match="found a zarr v2 group"):
        EpisodeStore.open(tmp_path / "v2")
    zarr.open_group(str(tmp_path / "other"), mode="w", zarr_format=3, attributes={"format": "lerobot"})
    with pytest.raises(StoreFormatError, match="expected .*'enerverse-episodes', found format='lerobot'"):
        EpisodeStore.open(tmp_path / "other")
    for bad_version in (2, "1"):
        p = tmp_path / f"ver{bad_version!s}"
        attrs = {"format": FORMAT_NAME, "version": bad_version}
        zarr.open_group(str(p), mode="w", zarr_format=3, attributes=attrs)
        msg = f"expected enerverse-episodes version 1, found version {bad_version!r}"
        with pytest.raises(StoreFormatError, match=msg):
            EpisodeStore.open(p)
        with pytest.raises(StoreFormatError):
            EpisodeStore.create(p)


def test_create_semantics(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    s = EpisodeStore.create(tmp_path / "empty")
    write(s, 2, make_episode(10, T=2))
    again = EpisodeStore.create(tmp_path / "empty")  # compatible store: just opened
    assert again.indices() == [2]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an episode store"):
        EpisodeStore.create(tmp_path / "busy")
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        EpisodeStore.create(tmp_path / "f")


@pytest.mark.integration
def test_sigkill_mid_episode_loses_only_that_episode(tmp_path: Path) -> None:
    path = tmp_path / "store"
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath)
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == crash_writer.MARKER, f"helper said {line!r}; stderr: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    store = EpisodeStore.open(path)
    assert store.indices() == [0, 1] and store.next_index() == 2
    for idx, T in crash_writer.LENGTHS.items():
        ep, view = make_episode(idx, T), store.episode(idx)
        assert view.length == T and view.attrs["success"] is True and view.attrs["seed"] == idx
        for key in ("rgb", "depth", "state", "action", "T_cam_world", "K"):
            np.testing.assert_array_equal(view.load(key), ep[key], err_msg=f"episode {idx} {key}")
    (partial,) = store.incomplete()
    assert partial.startswith(".tmp-episode_000002-")
    assert (store.episodes_dir / partial / "rgb" / "zarr.json").is_file()  # frames had reached disk
    assert store.cleanup_incomplete(min_age_s=3600) == 0  # too fresh
    assert store.cleanup_incomplete() == 1 and store.incomplete() == []
    assert not (store.episodes_dir / partial).exists() and store.indices() == [0, 1]
    write(store, 2, make_episode(2, T=2))
    assert store.indices() == [0, 1, 2]


@pytest.mark.integration
def test_store_imports_without_torch() -> None:
    code = "import sys, enerverse.core.store; assert 'torch' not in sys.modules, 'torch imported'"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_stats_match_numpy(store: EpisodeStore) -> None:
    eps = {i: make_episode(20 + i, T=T, with_depth=False) for i, T in enumerate((6, 9, 4))}
    eps[1]["state"][:, 2] = 0.5  # constant dimension: std floored
    for i, ep in eps.items():
        write(store, i, ep, success=i != 1)
    for only_success, members in ((False, [0, 1, 2]), (True, [0, 2])):
        stats = compute_stats(store, only_success=only_success)
        assert set(stats) == {"state", "action"}
        for key in ("state", "action"):
            x = np.concatenate([eps[i][key] for i in members]).astype(np.float64)
            s = stats[key]
            assert s["count"] == x.shape[0]
            np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-6)
            np.testing.assert_allclose(s["std"], np.maximum(x.std(0), 1e-6), rtol=1e-6)
            np.testing.assert_allclose(s["min"], x.min(0))
            np.testing.assert_allclose(s["max"], x.max(0))
            np.testing.assert_allclose(s["q01"], np.quantile(x, 0.01, axis=0), rtol=1e-6)
            np.testing.assert_allclose(s["q99"], np.quantile(x, 0.99, axis=0), rtol=1e-6)
            assert all(isinstance(v, float) for v in s["mean"]) and len(s["mean"]) == x.shape[1]
    only1 = EpisodeStore.create(store.path.parent / "one")
    write(only1, 0, eps[1])
    assert compute_stats(only1)["state"]["std"][2] == 1e-6

    with pytest.raises(FileNotFoundError, match="stats.json"):
        load_stats(store)
    stats = compute_stats(store)
    path = save_stats(store, stats)
    assert path == store.path / "stats.json" and load_stats(store) == stats
    assert json.loads(path.read_text())["stats"] == stats
    save_stats(store, compute_stats(store, only_success=True))
    assert load_stats(store)["state"]["count"] == 10
    assert sorted(p.name for p in store.path.iterdir()) == ["episodes", "stats.json", "zarr.json"]
    assert EpisodeStore.open(store.path).indices() == [0, 1, 2]  # stats.json does not disturb zarr


@pytest.mark.parametrize(
    "payload, msg",
    [
        (
            {"format": FORMAT_NAME, "version": 2, "stats": {}},
            r"expected enerverse-episodes version 1.*version 2",
        ),
        ({"format": FORMAT_NAME, "version": True, "stats": {}}, r"found version True"),
        ({"format": "lerobot", "version": 1, "stats": {}}, r"found format='lerobot'"),
        ({"stats": {}}, r"found format=None"),
        ({"format": FORMAT_NAME, "version": 1}, r"found no 'stats' object"),
        ([1, 2], r"found a JSON list"),
        ("{not json", r"found invalid JSON"),
    ],
)
def test_load_stats_checks_format_and_version(store: EpisodeStore, payload: Any, msg: str) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    (store.path / "stats.json").write_text(text)
    with pytest.raises(StoreFormatError, match=msg):
        load_stats(store)
