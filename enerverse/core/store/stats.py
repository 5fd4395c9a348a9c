"""Per-dimension statistics of values [N, D]: the one place the project computes them (the policy's
normalisation, :meth:`policies.data.PolicyData.stats`, and the LeRobot export's ``meta/stats.json``)."""

from __future__ import annotations

from typing import Any

import numpy as np

STD_FLOOR = 1e-6


def summarize(x: np.ndarray, std_floor: float = STD_FLOOR) -> dict[str, Any]:
    """Statistics of values [N, D] per dimension: mean, std (population, floored at ``std_floor``), min,
    max, q01, q99 (numpy arrays [D]) and count N. ``x`` must be finite (callers check
    data where they read it, with :func:`~enerverse.core.store.format.check_finite`, naming the episode);
    NaN or inf here is a ValueError, not silently NaN statistics."""
    x = np.asarray(x, np.float64)
    if not len(x):
        raise ValueError("cannot compute statistics of no values")
    x = x.reshape(len(x), -1)
    if not np.isfinite(x).all():
        n_bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"statistics need finite values; got {n_bad} NaN or inf of {x.size}")
    q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
    return {"mean": x.mean(0), "std": np.maximum(x.std(0), std_floor), "min": x.min(0), "max": x.max(0),
            "q01": q01, "q99": q99, "count": int(len(x))}  # fmt: skip
