"""Crash-safe writing of one episode: temp group, validated frames, buffered appends, atomic rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..fsutil import fsync_path, fsync_tree, rename_noreplace, replace_dir_atomic
from .format import (
    OPTIONAL_FRAME_KEYS,
    STORED_DTYPES,
    TMP_PREFIX,
    WriterConflictError,
    check_index,
    episode_name,
    validate_episode_attrs,
    validate_K,
)
from .lock import LOCK_FILE, lock_dir

SMALL_CHUNK_FRAMES = 128  # frames per chunk of state / action / T_cam_world
CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}  # flat chunk files (c.12.0.0.0.0), no dir tree


def _frame_array(name: str, value: Any, shape: tuple[int, ...], dtype: np.dtype | None) -> np.ndarray:
    """Check one per-frame array against the expected shape (and dtype, when fixed by frame 0)."""
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if dtype is not None and arr.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (as in frame 0), got {arr.dtype}")
    return arr


class EpisodeWriter:
    """Writes one episode into ``episodes/.tmp-episode_NNNNNN-<hex>`` and commits it by renaming.

    Use as a context manager: leaving the block normally commits, an exception discards the temp
    group. Frames are validated in :meth:`add_frame`, buffered, and appended to the zarr arrays
    every ``flush_every`` frames, so a long episode is never held in memory.

    For its whole life the writer holds an exclusive ``flock`` on ``.writer.lock`` inside its temp
    folder (released by the kernel if the process dies), so
    :meth:`~enerverse.core.store.EpisodeStore.cleanup_incomplete` leaves the folder alone. Before
    every flush and before the commit rename it checks that the temp folder (and lock file) is still
    the one it created; if not, :class:`~enerverse.core.store.WriterConflictError` is raised and
    nothing is committed.
    """

    def __init__(
        self,
        episodes_dir: str | os.PathLike,
        index: int,
        *,
        attrs: dict[str, Any],
        K: Any,
        overwrite: bool = False,
        flush_every: int = 32,
        durable: bool = True,
    ) -> None:
        self.index = check_index(index)
        self.attrs: dict[str, Any] = validate_episode_attrs(attrs)
        self.n_views = len(self.attrs["view_names"])
        self._K = validate_K(K, self.n_views)  # [V, 3, 3]
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.flush_every = int(flush_every)
        self.overwrite = overwrite
        self.durable = durable
        self.episodes_dir = Path(episodes_dir)
        self.final_path = self.episodes_dir / episode_name(self.index)
        if self.final_path.exists() and not overwrite:
            raise FileExistsError(
                f"episode {self.index} is already committed at {self.final_path} "
                "(pass overwrite=True to replace it)"
            )
        self._lock_fd: int | None = None
        self.tmp_path, self._tmp_stat = self._make_locked_tmp()
        try:
            self._group = zarr.create_group(
                store=str(self.tmp_path), zarr_format=3, attributes={**self.attrs, "length": None}
            )
            self._group.create_array("K", data=self._K, chunks=self._K.shape)
        except BaseException:
            self._release(remove_tmp=True)
            raise
        self._spec: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None  # per key: frame shape, dtype
        self._has_depth = False
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._arrays: dict[str, Any] = {}
        self.n_frames = 0
        self.closed = False

    # -- temp folder ownership -------------------------------------------------------------
    def _make_locked_tmp(self) -> tuple[Path, os.stat_result]:
        """Create a fresh temp folder and take its writer lock (see ``lock.py``)."""
        for _ in range(8):
            tmp = self.episodes_dir / f"{TMP_PREFIX}{self.final_path.name}-{uuid.uuid4().hex}"
            os.mkdir(tmp)
            st = os.stat(tmp)
            for _ in range(5):
                fd = lock_dir(tmp)
                if fd is not None:
                    self._lock_fd = fd
                    return tmp, st
                if not os.path.lexists(tmp):  # a cleaner took the brand-new folder: use a new name
                    break
                time.sleep(0.001)  # someone was probing the lock (``incomplete(in_use=...)``)
        raise WriterConflictError(
            f"could not create and lock a temp folder in {self.episodes_dir} "
            "(something keeps deleting new temp folders)"
        )

    def _check_tmp_owned(self) -> None:
        """WriterConflictError unless ``tmp_path`` is still the folder (and lock file) this writer made.

        Catches a temp folder deleted or replaced under a live writer (e.g. ``rm -rf``, or a cleaner
        that ignores the writer lock): zarr would silently re-create the folders and the episode
        would be missing frames.
        """
        try:
            st = os.stat(self.tmp_path)
            lock_st = os.stat(self.tmp_path / LOCK_FILE)
        except FileNotFoundError:
            st = lock_st = None
        assert self._lock_fd is not None
        ok = (
            st is not None
            and lock_st is not None
            and os.path.samestat(st, self._tmp_stat)
            and os.path.samestat(lock_st, os.fstat(self._lock_fd))
        )
        if not ok:
            raise WriterConflictError(
                f"episode {self.index}: temp folder {self.tmp_path} was removed or replaced while this "
                "writer was using it (frames are lost); nothing is committed"
            )

    def _release(self, remove_tmp: bool) -> None:
        """Remove the temp folder (if asked), then drop the writer lock."""
        if remove_tmp:
            shutil.rmtree(self.tmp_path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:  # dropped without commit/abort: release the lock so cleanup may take it
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            self._lock_fd = None
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
                os.close(fd)

    # -- frames ---------------------------------------------------------------------------
    def add_frame(
        self,
        *,
        rgb: Any,
        state: Any,
        action: Any,
        T_cam_world: Any,
        depth: Any = None,
        privileged: Any = None,
        seg: Any = None,
    ) -> None:
        """Validate and buffer one frame.

        rgb uint8 [V, H, W, 3]; state float [S]; action float [A]; T_cam_world float [V, 4, 4]
        (world -> camera); depth float [V, H, W] (metres, >= 0, no NaN) or None; privileged float [P]
        (the simulator's object state, finite) or None; seg uint8 [V, H, W] (object labels, names in
        the ``seg_names`` attribute) or None. Every frame must match frame 0 in shapes and
        dtypes, and in which optional arrays it has; V must match ``view_names`` and ``K``.
        """
        self._check_open()
        frame = self._validate_frame(rgb, state, action, T_cam_world, depth, privileged, seg)
        for key, value in frame.items():
            self._buffer.setdefault(key, []).append(value)
        self.n_frames += 1
        if len(self._buffer["rgb"]) >= self.flush_every:
            self.flush()

    def _validate_frame(
        self, rgb: Any, state: Any, action: Any, T: Any, depth: Any, privileged: Any, seg: Any = None
    ) -> dict[str, np.ndarray]:
        V = self.n_views
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            raise ValueError(f"rgb: expected dtype uint8, got {rgb.dtype}")
        if rgb.ndim != 4 or rgb.shape[0] != V or rgb.shape[3] != 3:
            raise ValueError(
                f"rgb: expected shape [V={V}, H, W, 3] (V = len(view_names) = K.shape[0]), got {rgb.shape}"
            )
        given = {"rgb": rgb, "state": state, "action": action, "T_cam_world": T}
        optional = {"depth": depth, "privileged": privileged, "seg": seg}
        given.update({k: v for k, v in optional.items() if v is not None})
        if "seg" in given:
            given["seg"] = np.asarray(given["seg"])
            if given["seg"].dtype != np.uint8:
                raise ValueError(f"seg: expected object labels of dtype uint8, got {given['seg'].dtype}")
        ndims = {"state": 1, "action": 1, "T_cam_world": 3, "privileged": 1}
        for name in given:
            if name in ("rgb", "seg"):
                continue
            arr = given[name] = np.asarray(given[name])
            if arr.dtype.kind != "f":
                raise ValueError(f"{name}: expected a floating dtype, got {arr.dtype}")
            if name in ndims and (arr.ndim != ndims[name] or arr.size == 0):
                raise ValueError(f"{name}: expected a non-empty {ndims[name]}-D array, got shape {arr.shape}")
        if self._spec is None:  # frame 0 fixes every key's shape and dtype for the episode
            H, W = rgb.shape[1:3]
            by_layout = {"rgb": (V, H, W, 3), "T_cam_world": (V, 4, 4), "depth": (V, H, W), "seg": (V, H, W)}
            spec = {k: (by_layout.get(k, a.shape), a.dtype) for k, a in given.items()}
        else:
            spec = self._spec
            for key in OPTIONAL_FRAME_KEYS:
                if (key in given) != (key in spec):
                    raise ValueError(
                        f"{key}: every frame must have {key} or none may (frame 0 "
                        f"{'had' if key in spec else 'had no'} {key})"
                    )
        out = {}
        for key, arr in given.items():
            shape, dtype = spec[key]
            arr = _frame_array(key, arr, shape, dtype)
            stored = arr.astype(STORED_DTYPES[key])  # always a copy: the caller may reuse its buffers
            if key in ("state", "action", "T_cam_world", "privileged") and not np.isfinite(stored).all():
                raise ValueError(f"{key}: contains NaN or inf (or a value too large for float32)")
            out[key] = stored
        if not np.allclose(out["T_cam_world"][:, 3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
            raise ValueError(
                "T_cam_world: expected homogeneous [V, 4, 4] transforms with last row "
                f"[0, 0, 0, 1], got last rows {out['T_cam_world'][:, 3].tolist()}"
            )
        if "depth" in out and (np.isnan(out["depth"]).any() or (out["depth"] < 0).any()):
            raise ValueError("depth: contains NaN or negative values")
        self._spec = spec
        return out

    def flush(self) -> None:
        """Append buffered frames to the zarr arrays and empty the buffer."""
        self._check_open()
        if not self._buffer or not self._buffer["rgb"]:
            return
        assert self._spec is not None
        self._check_tmp_owned()
        for key, frames in self._buffer.items():
            if key not in self._arrays:
                shape = self._spec[key][0]
                per_frame = key in ("rgb", "depth", "seg")
                chunks = (1, *shape) if per_frame else (SMALL_CHUNK_FRAMES, *shape)
                self._arrays[key] = self._group.create_array(
                    key,
                    shape=(0, *shape),
                    dtype=STORED_DTYPES[key],
                    chunks=chunks,
                    chunk_key_encoding=CHUNK_KEY_ENCODING,
                )
            self._arrays[key].append(np.stack(frames), axis=0)
        self._buffer = {}

    # -- attributes -----------------------------------------------------------------------
    def set_attrs(self, **attrs: Any) -> None:
        """Update episode attributes (validated at commit)."""
        self.attrs.update(attrs)

    # -- commit / abort -------------------------------------------------------------------
    def commit(self) -> int:
        """Flush, write attributes and atomically rename the temp group to its final name.

        Returns the episode index. ValueError for an empty episode or invalid attributes;
        FileExistsError when the index was committed meanwhile and ``overwrite`` is False;
        WriterConflictError when the temp folder was removed or replaced under this writer (the
        episode would be torn, so nothing is committed). With ``overwrite`` an existing episode is
        swapped out in one step (see :func:`enerverse.core.fsutil.replace_dir_atomic`).
        """
        self._check_open()
        if self.n_frames == 0:
            raise ValueError(f"episode {self.index}: cannot commit an empty episode (0 frames)")
        attrs = validate_episode_attrs(self.attrs)
        if len(attrs["view_names"]) != self.n_views:
            raise ValueError(
                f"view_names has {len(attrs['view_names'])} entries but the frames have {self.n_views} views"
            )
        attrs["length"] = self.n_frames
        self.flush()
        self._check_tmp_owned()
        self._group.attrs.update(attrs)
        if self.durable:
            fsync_tree(self.tmp_path)
        self._check_tmp_owned()  # under our lock no cleaner can touch it from here on
        if os.path.lexists(self.final_path):
            if not self.overwrite:
                raise FileExistsError(f"episode {self.index} was committed meanwhile at {self.final_path}")
            replace_dir_atomic(self.tmp_path, self.final_path, durable=self.durable)
        else:
            try:
                rename_noreplace(self.tmp_path, self.final_path)
            except FileExistsError as e:
                if not self.overwrite:
                    raise FileExistsError(f"episode {self.index} was committed concurrently") from e
                replace_dir_atomic(self.tmp_path, self.final_path, durable=self.durable)
            else:
                if self.durable:
                    fsync_path(self.episodes_dir)
        self.attrs = attrs
        self.closed = True
        (self.final_path / LOCK_FILE).unlink(missing_ok=True)  # committed: the lock file is not data
        self._release(remove_tmp=False)
        return self.index

    def abort(self) -> None:
        """Discard the episode: drop buffers, remove the temp group, release the lock. Safe to call twice."""
        self._buffer = {}
        self.closed = True
        self._release(remove_tmp=True)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"episode writer for {self.index} is already committed or aborted")

    def __len__(self) -> int:
        return self.n_frames

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self.closed:
            return False
        if exc_type is not None:
            self.abort()
            return False
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise
        return False
