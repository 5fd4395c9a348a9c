"""Run output folders, atomic JSON files and the one-line summary every entry point prints at the end."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import fsutil


def make_output_dir(entry: str, out: str | Path | None = None, root: str | Path = "outputs") -> Path:
    """Create and return the output folder of one run.

    With ``out`` given, that folder is created (it may already exist) and returned. Otherwise the folder
    is ``<root>/<entry>/<YYYYmmdd-HHMMSS>``, with ``-1``, ``-2``, ... appended when that name is taken
    (creation is exclusive, so two runs started in the same second never share a folder).
    """
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    if not entry or "/" in entry or entry in (".", ".."):
        raise ValueError(f"entry must be a plain name, got {entry!r}")
    base = Path(root) / entry
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(10_000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a unique output folder under {base}")


def to_jsonable(obj: Any) -> Any:
    """Recursively convert ``obj`` to plain JSON types.

    numpy scalars/arrays and torch tensors become numbers/lists, Paths strings, enums their name,
    dataclasses dicts, tuples and sets lists. Non-finite floats are kept (``NaN``/``Infinity`` in JSON).
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # torch tensors and other array types
    if callable(tolist):
        return to_jsonable(tolist())
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` (converted with :func:`to_jsonable`) as JSON to ``path`` atomically and durably.

    Temp file in the same folder + fsync + ``os.replace`` + fsync of the folder (see
    :func:`enerverse.core.fsutil.write_bytes_atomic`): readers see either the old file or the complete
    new one, never a partial write.
    """
    return fsutil.write_json_atomic(path, to_jsonable(obj), indent=indent)


def _round_floats(obj: Any, digits: int) -> Any:
    if isinstance(obj, float) and math.isfinite(obj):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round_floats(v, digits) for v in obj]
    return obj


def print_summary(d: dict, digits: int | None = 6) -> str:
    """Print ``d`` as exactly one line of compact JSON to stdout (flushed) and return that line.

    Floats are rounded to ``digits`` decimals (``None`` keeps them as they are).
    """
    plain = to_jsonable(d)
    if digits is not None:
        plain = _round_floats(plain, digits)
    line = json.dumps(plain, separators=(",", ":"))
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader is gone (`| head`, a killed runner): the run's files hold it all
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return line
