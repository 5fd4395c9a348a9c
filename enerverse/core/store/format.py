"""On-disk format of the episode store: names, constants, errors and validation.

Layout (zarr v3 on a local directory)::

    <root>/zarr.json                 group, attrs {"format": "enerverse-episodes", "version": 1}
    <root>/episodes/zarr.json        group
    <root>/episodes/episode_000000/  one committed episode (group)
    <root>/episodes/.tmp-episode_000003-<hex>/   an episode being written (ignored by readers);
                                     its writer holds a flock on ``.writer.lock`` inside it

Per-episode arrays: ``rgb`` uint8 [T, V, H, W, 3] (one frame per chunk), optional ``depth``
float16 [T, V, H, W], optional ``seg`` uint8 [T, V, H, W] (object masks: 0 background, k + 1 the
object named ``seg_names[k]`` in the episode attributes), ``state`` float32 [T, S], ``action``
float32 [T, A], ``T_cam_world`` float32 [T, V, 4, 4] (world -> camera, OpenCV convention), ``K``
float32 [V, 3, 3] and optional ``privileged`` float32 [T, P] (simulation only: the task's ground-truth
object state, e.g. the goal position; used as an auxiliary training target, never as a policy input).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from enerverse.core.errors import EnerVerseError

FORMAT_NAME = "enerverse-episodes"
FORMAT_VERSION = 1
PROVENANCES = ("sim", "real", "generated", "gs4d")
SYNTHETIC_PROVENANCES = ("generated", "gs4d")
VIEW_KINDS = ("real", "anchor")

EPISODES_DIR = "episodes"
TMP_PREFIX = ".tmp-"
EPISODE_RE = re.compile(r"^episode_(\d{6,})$")

FRAME_KEYS = ("rgb", "depth", "seg", "state", "action", "T_cam_world", "privileged")  # leading T axis
OPTIONAL_FRAME_KEYS = ("depth", "seg", "privileged")  # every frame of an episode has them, or none does
ARRAY_KEYS = (*FRAME_KEYS, "K")
STORED_DTYPES = {
    "rgb": np.dtype(np.uint8),
    "depth": np.dtype(np.float16),
    "seg": np.dtype(np.uint8),
    "state": np.dtype(np.float32),
    "action": np.dtype(np.float32),
    "T_cam_world": np.dtype(np.float32),
    "privileged": np.dtype(np.float32),
    "K": np.dtype(np.float32),
}
# Attributes the store owns; everything else the caller passes is kept as an extra attribute.
REQUIRED_ATTRS = (
    "task",
    "instruction",
    "success",
    "seed",
    "view_names",
    "view_kinds",
    "fps",
    "provenance",
    "generator_version",
)


class StoreFormatError(EnerVerseError):
    """The path is not an episode store this code can read (wrong format, version or layout), or an
    episode breaks the format's rules (e.g. NaN or inf actions)."""


class WriterConflictError(EnerVerseError, RuntimeError):
    """An episode writer's temp folder was removed or replaced under it; the episode is not committed."""


def episode_name(index: int) -> str:
    """Directory name of committed episode ``index`` (``episode_000042``)."""
    index = check_index(index)
    return f"episode_{index:06d}"


def parse_episode_name(name: str) -> int | None:
    """Episode index of a committed-episode directory name, or None for anything else."""
    m = EPISODE_RE.match(name)
    return int(m.group(1)) if m else None


def check_index(index: Any) -> int:
    """Return ``index`` as int; ValueError unless it is a non-negative integer."""
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise ValueError(f"episode index must be a non-negative int, got {index!r}")
    return int(index)


def check_finite(
    where: str, arrays: Mapping[str, Any], error: type[EnerVerseError] = StoreFormatError
) -> None:
    """Raise ``error`` unless every array in ``arrays`` holds finite values, as the format requires of
    ``state``, ``action``, ``T_cam_world``, ``privileged`` and ``K``; the message names ``where`` (the
    episode), the array and its first non-finite frame (per-frame arrays [T, ...])."""
    for key, value in arrays.items():
        a = np.asarray(value)
        if np.isfinite(a).all():
            continue
        at = ""
        if key in FRAME_KEYS and a.ndim >= 1:
            frames = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
            at = f" in {len(frames)} of {len(a)} frames (first: frame {frames[0]})"
        raise error(f"{where}: {key} has NaN or inf values{at}; expected finite {key} values")


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def validate_episode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Check episode attributes; return a normalised copy (plain Python types).

    ValueError says which attribute is wrong, what was expected and what was given.
    """
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"episode attributes missing: {missing}")
    out = dict(attrs)
    for key in ("task", "instruction"):
        if not isinstance(out[key], str):
            raise ValueError(f"attribute {key!r} must be a str, got {type(out[key]).__name__}")
    success = out["success"]
    if not isinstance(success, bool | np.bool_):
        raise ValueError(f"attribute 'success' must be a bool, got {success!r}")
    out["success"] = bool(success)
    seed = out["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"attribute 'seed' must be an int, got {seed!r}")
    out["seed"] = int(seed)
    fps = out["fps"]
    if (
        isinstance(fps, bool)
        or not isinstance(fps, int | float | np.number)
        or not (math.isfinite(float(fps)) and float(fps) > 0)
    ):
        raise ValueError(f"attribute 'fps' must be a finite number > 0, got {fps!r}")
    out["fps"] = float(fps)
    names, kinds = out["view_names"], out["view_kinds"]
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"'view_names' must be a list of non-empty str, got {names!r}")
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"'view_names' must be non-empty and unique, got {names!r}")
    if isinstance(kinds, str) or len(list(kinds)) != len(names):
        raise ValueError(f"'view_kinds' must be a list with one entry per view ({len(names)}), got {kinds!r}")
    kinds = list(kinds)
    bad = [k for k in kinds if k not in VIEW_KINDS]
    if bad:
        raise ValueError(f"'view_kinds' entries must be one of {VIEW_KINDS}, got {bad!r}")
    out["view_names"], out["view_kinds"] = names, kinds
    prov = out["provenance"]
    if prov not in PROVENANCES:
        raise ValueError(f"unknown provenance {prov!r}; expected one of {PROVENANCES}")
    gv = out["generator_version"]
    if gv is not None and not isinstance(gv, str):
        raise ValueError(f"'generator_version' must be a str or None, got {gv!r}")
    if prov in SYNTHETIC_PROVENANCES and not gv:
        raise ValueError(f"provenance {prov!r} requires a non-empty 'generator_version', got {gv!r}")
    for key, value in out.items():
        if not isinstance(key, str):
            raise ValueError(f"attribute names must be str, got {key!r}")
        if not _is_json(value):
            raise ValueError(f"attribute {key!r} is not JSON-serialisable (finite numbers only): {value!r}")
    return out


def validate_K(K: Any, n_views: int) -> np.ndarray:
    """Check intrinsics ``K`` [V, 3, 3] (pixels, finite, fx, fy > 0, last row [0, 0, 1])."""
    K = np.asarray(K)
    if K.dtype.kind != "f" or K.shape != (n_views, 3, 3):
        raise ValueError(
            f"K must be a float array of shape ({n_views}, 3, 3) (one per view name), "
            f"got dtype {K.dtype} shape {K.shape}"
        )
    K32 = K.astype(np.float32)
    if not np.isfinite(K32).all():
        raise ValueError("K contains NaN or inf")
    if not np.allclose(K32[:, 2], [0.0, 0.0, 1.0]) or (K32[:, 0, 0] <= 0).any() or (K32[:, 1, 1] <= 0).any():
        raise ValueError("K must have last row [0, 0, 1] and positive fx, fy for every view")
    return K32


def check_root_attrs(attrs: Mapping[str, Any], where: str) -> None:
    """Raise StoreFormatError unless ``attrs`` name this format and version."""
    found_fmt = attrs.get("format")
    if found_fmt != FORMAT_NAME:
        raise StoreFormatError(
            f"{where}: expected a zarr group with attribute format={FORMAT_NAME!r}, "
            f"found format={found_fmt!r}"
        )
    found_ver = attrs.get("version")
    if isinstance(found_ver, bool) or found_ver != FORMAT_VERSION:
        raise StoreFormatError(
            f"{where}: expected {FORMAT_NAME} version {FORMAT_VERSION}, found version {found_ver!r} "
            "(written by another release of this code)"
        )
