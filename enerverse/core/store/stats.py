"""Per-dimension normalisation statistics computed from an episode store, saved as ``stats.json``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .format import FORMAT_NAME, FORMAT_VERSION, STATS_FILE
from .reader import EpisodeStore

STD_FLOOR = 1e-6
STAT_FIELDS = ("mean", "std", "min", "max", "q01", "q99", "count")


def _root(store: EpisodeStore | str | os.PathLike) -> Path:
    return store.path if isinstance(store, EpisodeStore) else Path(store)


def compute_stats(store: EpisodeStore, keys: Sequence[str] = ("state", "action"),
                  only_success: bool = False) -> dict[str, dict[str, Any]]:
    """Statistics per key over all frames of all (or only successful) episodes.

    Each key's array [T, ...] is flattened to [T, D]; returns ``{key: {"mean", "std", "min",
    "max", "q01", "q99": list[float] of length D, "count": number of frames}}``. ``std`` is the
    population std floored at 1e-6. ValueError if no episode qualifies.
    """
    data: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    n_episodes = 0
    for view in store.episodes():
        if only_success and not view.attrs.get("success", False):
            continue
        n_episodes += 1
        for k in keys:
            arr = view.load(k)
            data[k].append(arr.reshape(arr.shape[0], -1).astype(np.float64))  # [T, D]
    if n_episodes == 0:
        what = "successful episodes" if only_success else "episodes"
        raise ValueError(f"cannot compute stats: store {store.path} has no {what}")
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        x = np.concatenate(data[k], axis=0)  # [N, D]
        q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
        out[k] = {
            "mean": x.mean(axis=0).tolist(),
            "std": np.maximum(x.std(axis=0), STD_FLOOR).tolist(),
            "min": x.min(axis=0).tolist(),
            "max": x.max(axis=0).tolist(),
            "q01": q01.tolist(),
            "q99": q99.tolist(),
            "count": int(x.shape[0]),
        }
    return out


def save_stats(store: EpisodeStore | str | os.PathLike, stats: dict[str, dict[str, Any]]) -> Path:
    """Write ``stats.json`` at the store root atomically (temp file + os.replace); return its path."""
    root = _root(store)
    for key, s in stats.items():
        missing = [f for f in STAT_FIELDS if f not in s]
        if missing:
            raise ValueError(f"stats for {key!r} lack fields {missing}")
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "stats": stats}
    text = json.dumps(payload, indent=1, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-stats-", suffix=".json", dir=root)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / STATS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return root / STATS_FILE


def load_stats(store: EpisodeStore | str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read ``stats.json`` written by :func:`save_stats`; FileNotFoundError if none was saved."""
    path = _root(store) / STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {STATS_FILE} in {path.parent}; run compute_stats + save_stats first")
    payload = json.loads(path.read_text())
    return payload["stats"]
