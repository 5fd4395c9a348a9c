"""Per-dimension normalisation statistics computed from an episode store, saved as ``stats.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import write_json_atomic
from .format import FORMAT_NAME, FORMAT_VERSION, STATS_FILE, StoreFormatError, check_finite
from .reader import EpisodeStore

STD_FLOOR = 1e-6
STAT_FIELDS = ("mean", "std", "min", "max", "q01", "q99", "count")


def _root(store: EpisodeStore | str | os.PathLike) -> Path:
    return store.path if isinstance(store, EpisodeStore) else Path(store)


def summarize(x: np.ndarray, std_floor: float = STD_FLOOR) -> dict[str, Any]:
    """Statistics of values [N, D] per dimension: mean, std (population, floored at ``std_floor``), min,
    max, q01, q99 (numpy arrays [D]) and count N. The one place the project computes them: store
    stats, policy normalisation and LeRobot export all use it. ``x`` must be finite (callers check
    data where they read it, with :func:`~enerverse.core.store.format.check_finite`, naming the episode);
    NaN or inf here is a ValueError, not silently NaN statistics."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if not len(x):
        raise ValueError("cannot compute statistics of no values")
    if not np.isfinite(x).all():
        n_bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"statistics need finite values; got {n_bad} NaN or inf of {x.size}")
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
    return {"mean": x.mean(0), "std": np.maximum(x.std(0), std_floor), "min": x.min(0), "max": x.max(0),
            "q01": q01, "q99": q99, "count": int(len(x))}  # fmt: skip


def compute_stats(
    store: EpisodeStore, keys: Sequence[str] = ("state", "action"), only_success: bool = False
) -> dict[str, dict[str, Any]]:
    """Statistics per key over all frames of all (or only successful) episodes.

    Each key's array [T, ...] is flattened to [T, D]; returns ``{key: {"mean", "std", "min",
    "max", "q01", "q99": list[float] of length D, "count": number of frames}}``. ``std`` is the
    population std floored at 1e-6. ValueError if no episode qualifies; StoreFormatError naming the
    episode when one holds NaN or inf values.
    """
    data: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    n_episodes = 0
    for view in store.episodes():
        if only_success and not view.attrs.get("success", False):
            continue
        n_episodes += 1
        for k in keys:
            arr = view.load(k)
            check_finite(f"{store.path} episode {view.index}", {k: arr})
            data[k].append(arr.reshape(arr.shape[0], -1).astype(np.float64))  # [T, D]
    if n_episodes == 0:
        what = "successful episodes" if only_success else "episodes"
        raise ValueError(f"cannot compute stats: store {store.path} has no {what}")
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        s = summarize(np.concatenate(data[k], axis=0))  # over [N, D]
        out[k] = {f: (v if f == "count" else v.tolist()) for f, v in s.items()}
    return out


def save_stats(store: EpisodeStore | str | os.PathLike, stats: dict[str, dict[str, Any]]) -> Path:
    """Write ``stats.json`` at the store root atomically and durably; return its path.

    The file is ``{"format": "enerverse-episodes", "version": 1, "stats": stats}``.
    """
    root = _root(store)
    for key, s in stats.items():
        missing = [f for f in STAT_FIELDS if f not in s]
        if missing:
            raise ValueError(f"stats for {key!r} lack fields {missing}")
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "stats": stats}
    return write_json_atomic(root / STATS_FILE, payload, indent=1, allow_nan=False)


def load_stats(store: EpisodeStore | str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read ``stats.json`` written by :func:`save_stats`.

    FileNotFoundError if none was saved; StoreFormatError if the file is not valid JSON or names
    another format or version than this code writes.
    """
    path = _root(store) / STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {STATS_FILE} in {path.parent}; run compute_stats + save_stats first")
    expected = f"expected {FORMAT_NAME} version {FORMAT_VERSION} statistics"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise StoreFormatError(f"{path}: {expected}, found invalid JSON ({e})") from e
    if not isinstance(payload, dict):
        raise StoreFormatError(f"{path}: {expected}, found a JSON {type(payload).__name__}")
    found_fmt, found_ver = payload.get("format"), payload.get("version")
    if found_fmt != FORMAT_NAME:
        raise StoreFormatError(f"{path}: {expected}, found format={found_fmt!r}")
    if isinstance(found_ver, bool) or found_ver != FORMAT_VERSION:
        raise StoreFormatError(
            f"{path}: {expected}, found version {found_ver!r} "
            "(written by another release of this code; recompute it)"
        )
    stats = payload.get("stats")
    if not isinstance(stats, dict):
        raise StoreFormatError(f"{path}: {expected}, found no 'stats' object")
    return stats
