"""Latency statistics, one format for every report (runtime, evaluation sweeps)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_summary(ms: Sequence[float]) -> dict:
    """Count, mean, p50, p95 and max of latencies in milliseconds (``{"chunks": 0}`` for none)."""
    x = np.asarray(ms, dtype=float)
    if not len(x):
        return {"chunks": 0}
    return {
        "chunks": int(len(x)),
        "mean_ms": float(x.mean()),
        "p50_ms": float(np.percentile(x, 50)),
        "p95_ms": float(np.percentile(x, 95)),
        "max_ms": float(x.max()),
    }
