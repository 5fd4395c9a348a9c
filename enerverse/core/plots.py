"""Small line plots (png, drawn with OpenCV: no plotting library needed): loss curves, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from enerverse.core.media import write_png

COLOURS = [(200, 110, 50), (50, 140, 220), (60, 170, 60), (40, 40, 200), (150, 80, 160)]  # BGR


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) <= window:
        return y
    k = np.ones(window) / window
    return np.convolve(np.pad(y, (window // 2, window - 1 - window // 2), mode="edge"), k, mode="valid")


def line_plot(
    series: dict[str, list[float]], path: str | Path, title: str = "", log_y: bool = True, size=(640, 360)
) -> Path:
    """Plot each named series against its index (smoothed, raw faint) and write a png to ``path``."""
    import cv2

    W, H = size
    left, right, top, bottom = 60, 15, 30, 30
    img = np.full((H, W, 3), 255, np.uint8)
    vals = [np.asarray(v, np.float64) for v in series.values() if len(v)]
    finite = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.array([1.0])
    if log_y:
        finite = finite[finite > 0]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    f = (lambda v: np.log10(np.maximum(v, 1e-12))) if log_y else (lambda v: v)  # noqa: E731
    flo, fhi = f(lo), f(hi)
    fhi = fhi if fhi > flo else flo + 1.0
    n = max((len(v) for v in vals), default=1)

    def px(i: np.ndarray, v: np.ndarray) -> np.ndarray:
        x = left + i / max(1, n - 1) * (W - left - right)
        y = top + (1 - (f(v) - flo) / (fhi - flo)) * (H - top - bottom)
        return np.stack([x, y], axis=1).astype(np.int32)

    for q in np.linspace(0, 1, 5):
        y = int(top + (1 - q) * (H - top - bottom))
        cv2.line(img, (left, y), (W - right, y), (225, 225, 225), 1)
        v = 10 ** (flo + q * (fhi - flo)) if log_y else flo + q * (fhi - flo)
        cv2.putText(img, f"{v:.3g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (90, 90, 90), 1)
    for j, (name, v) in enumerate(series.items()):
        v = np.asarray(v, np.float64)
        if not len(v):
            continue
        c = COLOURS[j % len(COLOURS)]
        i = np.arange(len(v))
        ok = np.isfinite(v) & ((v > 0) if log_y else True)
        faint = tuple(int(255 - (255 - ch) * 0.3) for ch in c)
        cv2.polylines(img, [px(i[ok], v[ok])], False, faint, 1)
        cv2.polylines(img, [px(i[ok], _smooth(v[ok], max(1, len(v) // 50)))], False, c, 2)
        cv2.putText(img, name, (W - 150, top + 15 + 15 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, f"step (0..{n})", (W // 2 - 40, H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1)
    return write_png(path, cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
