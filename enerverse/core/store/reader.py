"""Opening, listing and reading an episode store (see ``format.py`` for the layout)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .format import (
    ARRAY_KEYS,
    EPISODES_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    TMP_PREFIX,
    StoreFormatError,
    check_index,
    check_root_attrs,
    episode_name,
    parse_episode_name,
)
from .lock import is_locked, lock_dir
from .writer import EpisodeWriter

Index = int | slice | Sequence[int] | np.ndarray | None


def _as_list(x: Any) -> Any:
    return x if isinstance(x, str) else list(x)


class EpisodeView:
    """Read-only view of one committed episode; arrays are lazy zarr arrays (slice them to load).

    ``rgb`` [T, V, H, W, 3] uint8, ``depth`` [T, V, H, W] float16 or None, ``state`` [T, S],
    ``action`` [T, A], ``T_cam_world`` [T, V, 4, 4], ``K`` [V, 3, 3] (float32).
    """

    def __init__(self, path: str | os.PathLike, index: int) -> None:
        self.path = Path(path)
        self.index = index
        self._group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        self.attrs: dict[str, Any] = dict(self._group.attrs)
        self.length: int = int(self.attrs["length"])
        self._arrays: dict[str, Any] = {}

    def keys(self) -> list[str]:
        """Names of the arrays this episode has (``depth`` is optional)."""
        return [k for k in ARRAY_KEYS if self.has(k)]

    def has(self, key: str) -> bool:
        return key in self._arrays or (key in ARRAY_KEYS and (self.path / key / "zarr.json").is_file())

    def array(self, key: str) -> Any:
        """The lazy zarr array ``key``; KeyError naming the available keys if absent."""
        if key not in self._arrays:
            if not self.has(key):
                raise KeyError(f"episode {self.index} has no array {key!r}; it has {self.keys()}")
            self._arrays[key] = self._group[key]
        return self._arrays[key]

    @property
    def rgb(self) -> Any:  # [T, V, H, W, 3] uint8
        return self.array("rgb")

    @property
    def depth(self) -> Any | None:  # [T, V, H, W] float16, or None when not recorded
        return self.array("depth") if self.has("depth") else None

    @property
    def seg(self) -> Any | None:  # [T, V, H, W] uint8 object labels, or None when not recorded
        return self.array("seg") if self.has("seg") else None

    @property
    def seg_names(self) -> list[str]:
        """Object names of the ``seg`` labels (label k + 1 is ``seg_names[k]``); [] without masks."""
        return list(self.attrs.get("seg_names", []))

    @property
    def state(self) -> Any:  # [T, S] float32
        return self.array("state")

    @property
    def action(self) -> Any:  # [T, A] float32
        return self.array("action")

    @property
    def T_cam_world(self) -> Any:  # [T, V, 4, 4] float32
        return self.array("T_cam_world")

    @property
    def K(self) -> Any:  # [V, 3, 3] float32
        return self.array("K")

    def load(self, key: str, idx: Index = None) -> np.ndarray:
        """Load ``key`` as numpy, indexed along axis 0 by None (all), an int, a slice or int indices.

        Integer index arrays may be unsorted and repeat (e.g. padded memory frames); negative
        indices count from the end; out-of-range indices raise IndexError.
        """
        arr = self.array(key)
        if idx is None:
            return np.asarray(arr[...])
        if isinstance(idx, slice | int | np.integer):
            return np.asarray(arr[idx])
        ids = np.asarray(idx)
        if ids.dtype.kind not in "iu" or ids.ndim != 1:
            raise IndexError(f"index for {key!r} must be None, int, slice or 1-D ints, got {idx!r}")
        n = arr.shape[0]
        ids = np.where(ids < 0, ids + n, ids)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise IndexError(f"index out of range for {key!r} of length {n}: {np.asarray(idx).tolist()}")
        if ids.size == 0:
            return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
        uniq, inverse = np.unique(ids, return_inverse=True)
        if uniq.size == uniq[-1] - uniq[0] + 1:  # contiguous: one slice read
            data = np.asarray(arr[int(uniq[0]) : int(uniq[-1]) + 1])
        else:
            data = np.asarray(arr.oindex[uniq])
        return data[inverse]

    def __repr__(self) -> str:
        return f"EpisodeView(index={self.index}, length={self.length}, task={self.attrs.get('task')!r})"


class EpisodeStore:
    """A directory of episodes in the ``enerverse-episodes`` zarr v3 format.

    ``durable`` (default True) fsyncs every episode before its commit rename, so a committed
    episode also survives a power cut; a process crash never loses one either way.
    """

    def __init__(self, path: str | os.PathLike, root_attrs: dict[str, Any], durable: bool = True) -> None:
        self.path = Path(path)
        self.episodes_dir = self.path / EPISODES_DIR
        self._root_attrs = dict(root_attrs)
        self.durable = durable

    @classmethod
    def create(
        cls, path: str | os.PathLike, *, attrs: dict[str, Any] | None = None, durable: bool = True
    ) -> EpisodeStore:
        """Create a new store at ``path`` (absent or an empty directory), or open a compatible one.

        FileExistsError if ``path`` is a file or a non-empty directory that is not a store;
        StoreFormatError if it is a store of another format or version.
        """
        p = Path(path)
        if p.exists():
            if not p.is_dir():
                raise FileExistsError(f"cannot create an episode store at {p}: it exists and is a file")
            if any(p.iterdir()):
                if (p / "zarr.json").is_file():
                    return cls.open(p, durable=durable)
                raise FileExistsError(
                    f"cannot create an episode store at {p}: it is a non-empty directory "
                    "that is not an episode store"
                )
        root_attrs = {**(attrs or {}), "format": FORMAT_NAME, "version": FORMAT_VERSION}
        # episodes/ first, root zarr.json last: a store whose root exists is always complete.
        zarr.open_group(str(p / EPISODES_DIR), mode="w-", zarr_format=3)
        zarr.create_group(store=str(p), zarr_format=3, attributes=root_attrs)
        return cls(p, root_attrs, durable=durable)

    @classmethod
    def open(cls, path: str | os.PathLike, *, durable: bool = True) -> EpisodeStore:
        """Open an existing store; StoreFormatError saying what was expected and what was found."""
        p = Path(path)
        expected = f"expected an episode store ({FORMAT_NAME} version {FORMAT_VERSION}, zarr v3 group)"
        if not p.exists():
            raise StoreFormatError(f"{p}: {expected}, found nothing at that path")
        if not p.is_dir():
            raise StoreFormatError(f"{p}: {expected}, found a file, not a directory")
        meta_path = p / "zarr.json"
        if not meta_path.is_file():
            is_v2 = (p / ".zgroup").exists()
            found = "a zarr v2 group (.zgroup)" if is_v2 else "a directory without zarr.json"
            raise StoreFormatError(f"{p}: {expected}, found {found}")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise StoreFormatError(f"{p}: {expected}, found an unreadable zarr.json ({e})") from e
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
            found = (meta.get("zarr_format"), meta.get("node_type")) if isinstance(meta, dict) else meta
            raise StoreFormatError(f"{p}: {expected}, found zarr.json with (zarr_format, node_type)={found}")
        attrs = meta.get("attributes") or {}
        check_root_attrs(attrs, str(p))
        if not (p / EPISODES_DIR / "zarr.json").is_file():
            raise StoreFormatError(f"{p}: {expected}, found no '{EPISODES_DIR}' group inside")
        return cls(p, attrs, durable=durable)

    # -- listing ----------------------------------------------------------------------------
    @property
    def root_attrs(self) -> dict[str, Any]:
        return dict(self._root_attrs)

    def indices(self) -> list[int]:
        """Sorted indices of committed episodes (temp ``.tmp-*`` entries are ignored)."""
        out = []
        for entry in os.scandir(self.episodes_dir):
            idx = parse_episode_name(entry.name)
            if idx is not None and entry.is_dir():
                out.append(idx)
        return sorted(out)

    def __len__(self) -> int:
        return len(self.indices())

    def has_episode(self, index: int) -> bool:
        return (self.episodes_dir / episode_name(index)).is_dir()

    def __contains__(self, index: object) -> bool:
        """True for a committed index (int or numpy integer); False for anything else, never an error."""
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
            return False
        return self.has_episode(int(index))

    def next_index(self) -> int:
        """Max committed index + 1 (0 for an empty store)."""
        idx = self.indices()
        return idx[-1] + 1 if idx else 0

    def episode(self, index: int) -> EpisodeView:
        """The committed episode ``index``; KeyError if it is not committed."""
        path = self.episodes_dir / episode_name(check_index(index))
        if not path.is_dir():
            raise KeyError(f"episode {index} is not committed in {self.path} ({len(self)} episodes)")
        return EpisodeView(path, index)

    def episodes(self) -> Iterator[EpisodeView]:
        """Iterate over committed episodes in index order."""
        for i in self.indices():
            yield self.episode(i)

    # -- incomplete episodes ------------------------------------------------------------
    def incomplete(self, *, in_use: bool | None = None) -> list[str]:
        """Sorted names of temp entries in ``episodes/``: episodes being written or left by a crash.

        ``in_use=None`` lists all; True only those a live writer holds locked (being written now, by
        any process); False only abandoned ones (their writer died or was dropped), which
        :meth:`cleanup_incomplete` would remove.
        """
        names = sorted(e.name for e in os.scandir(self.episodes_dir) if e.name.startswith(TMP_PREFIX))
        if in_use is None:
            return names
        return [n for n in names if is_locked(self.episodes_dir / n) == in_use]

    def cleanup_incomplete(self, min_age_s: float = 0.0) -> int:
        """Remove abandoned temp entries last modified at least ``min_age_s`` seconds ago; return how many.

        Temp folders whose writer is alive (it holds the folder's ``flock``, in this or any other
        process) are never removed, whatever their age: only leftovers of writers that died
        (crash, SIGKILL) or were dropped without commit/abort. Each folder is removed while holding
        its lock, so no writer can start using it meanwhile.
        """
        now, removed = time.time(), 0
        for name in self.incomplete():
            p = self.episodes_dir / name
            try:
                if now - p.lstat().st_mtime < min_age_s:
                    continue
            except FileNotFoundError:
                continue
            if p.is_symlink() or not p.is_dir():
                p.unlink(missing_ok=True)
                removed += 1
                continue
            try:
                fd = lock_dir(p)
            except NotADirectoryError:
                continue
            if fd is None:  # in use by a live writer, or already gone
                continue
            try:
                shutil.rmtree(p, ignore_errors=True)
            finally:
                os.close(fd)
            removed += 1
        return removed

    # -- writing ------------------------------------------------------------------------
    def write_episode(
        self,
        index: int,
        *,
        task: str,
        instruction: str,
        seed: int,
        view_names: Sequence[str],
        view_kinds: Sequence[str],
        fps: float,
        K: Any,
        provenance: str = "sim",
        generator_version: str | None = None,
        success: bool = False,
        overwrite: bool = False,
        flush_every: int = 32,
        **extra_attrs: Any,
    ) -> EpisodeWriter:
        """Start writing episode ``index``; use the returned writer as a context manager.

        ``K`` [V, 3, 3]; extra keyword arguments are stored as JSON attributes. FileExistsError
        if ``index`` is committed and ``overwrite`` is False (with True, the old episode is
        replaced atomically at commit time).
        """
        if "length" in extra_attrs:
            raise ValueError("'length' is set by the store at commit time; do not pass it")
        attrs = {
            "task": task,
            "instruction": instruction,
            "success": success,
            "seed": seed,
            "view_names": _as_list(view_names),
            "view_kinds": _as_list(view_kinds),
            "fps": fps,
            "provenance": provenance,
            "generator_version": generator_version,
            **extra_attrs,
        }
        return EpisodeWriter(
            self.episodes_dir,
            index,
            attrs=attrs,
            K=K,
            overwrite=overwrite,
            flush_every=flush_every,
            durable=self.durable,
        )

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r}, episodes={len(self)})"
