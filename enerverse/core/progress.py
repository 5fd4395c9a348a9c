"""Progress bars: a thin tqdm wrapper with rate and ETA, silenced with ``EV_NO_PROGRESS=1``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

_OFF_VALUES = ("1", "true", "yes", "on")


def progress_disabled() -> bool:
    """True when the environment variable ``EV_NO_PROGRESS`` is set to 1/true/yes/on."""
    return os.environ.get("EV_NO_PROGRESS", "").strip().lower() in _OFF_VALUES


def progress(
    iterable: Iterable[Any] | None = None,
    total: int | float | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool | None = None,
    **kwargs: Any,
) -> tqdm:
    """Return a tqdm bar (on stderr) over ``iterable``, or a manual one to ``update()`` with ``total``.

    ``disable=None`` shows the bar unless ``EV_NO_PROGRESS=1``. The bar shows count, rate and ETA;
    extra keyword arguments go to tqdm.
    """
    if disable is None:
        disable = progress_disabled()
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, **kwargs)
