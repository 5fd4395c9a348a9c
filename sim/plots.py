"""The evaluation's success plot: a bar per task with its 95% confidence interval (png, OpenCV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FONT_SCALE = 0.4
MIN_SLOT = 120  # px per task


def _text_width(text: str, scale: float) -> int:
    import cv2

    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]


def layout(names: list[str]) -> tuple[int, int, list[tuple[int, int]]]:
    """(x of the first bar, slot width, each name's (left, right) pixel span under its bar). The slot is
    as wide as the widest name plus a margin and the chart starts far enough right for the first
    name, so names never overlap each other or leave the image."""
    widest = max((_text_width(n, FONT_SCALE) for n in names), default=0)
    slot, x0 = max(MIN_SLOT, widest + 16), 70 + max(0, widest // 2 - 30)
    spans = []
    for i, n in enumerate(names):
        centre, w = x0 + slot * i + 30, _text_width(n, FONT_SCALE)
        spans.append((centre - w // 2, centre - w // 2 + w))
    return x0, slot, spans


def success_plot(rows: list[dict], path: Path) -> Path:
    """Bar chart of ``rows`` (``success_rate``, ``ci95``, named by ``label`` or else ``task``) with CI
    whiskers, written to ``path``."""
    import cv2

    from enerverse.core.media import write_png

    names = [r.get("label", r["task"]) for r in rows]
    x0, slot, spans = layout(names)
    W, H, pad = x0 + slot * len(rows) + 10, 300, 40
    img = np.full((H, W, 3), 255, np.uint8)
    y = lambda v: int(H - pad - v * (H - 2 * pad))  # noqa: E731
    for v in (0.0, 0.5, 1.0):
        cv2.line(img, (50, y(v)), (W - 10, y(v)), (210, 210, 210), 1)
        cv2.putText(img, f"{v:.1f}", (8, y(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1)
    for i, r in enumerate(rows):
        x = x0 + slot * i
        cv2.rectangle(img, (x, y(r["success_rate"])), (x + 60, y(0)), (70, 130, 200), -1)
        lo, hi = r["ci95"]
        cv2.line(img, (x + 30, y(lo)), (x + 30, y(hi)), (0, 0, 0), 2)
        cv2.putText(img, names[i], (spans[i][0], H - 15), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, (0, 0, 0), 1)
        top = min(y(r["success_rate"]), y(hi)) - 6  # above the bar and its whisker
        rate = f"{r['success_rate']:.2f}"
        cv2.putText(img, rate, (x + 12, top), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return write_png(path, img)
