"""Episode store: round trips, provenance, opening and creating, crash safety, statistics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import store_crash_writer as crash_writer
from helpers.store_crash_writer import KINDS, VIEWS, frame, make_episode
from helpers.store_testing import CRASH_WRITER as HELPER
from helpers.store_testing import REPO, meta, write

from enerverse.core.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PROVENANCES,
    EpisodeStore,
    EpisodeWriter,
    StoreFormatError,
)


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


def test_summarize_matches_numpy() -> None:
    from enerverse.core.store.stats import summarize

    x = np.random.default_rng(0).normal(size=(40, 3))
    x[:, 2] = 0.5  # constant dimension: std floored
    s = summarize(x)
    assert s["count"] == 40
    np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s["std"], np.maximum(x.std(0), 1e-6), rtol=1e-6)
    assert s["std"][2] == 1e-6
    np.testing.assert_allclose(s["min"], x.min(0))
    np.testing.assert_allclose(s["max"], x.max(0))
    np.testing.assert_allclose(s["q01"], np.quantile(x, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(s["q99"], np.quantile(x, 0.99, axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="no values"):
        summarize(np.zeros((0, 2)))


def test_summarize_refuses_non_finite_values() -> None:
    """Callers check the data they read (check_finite names the episode); NaN reaching the statistics
    is a caller's bug, never silently NaN statistics."""
    from enerverse.core.store.stats import summarize

    with pytest.raises(ValueError, match="NaN or inf"):
        summarize(np.array([[0.0], [np.nan]]))
