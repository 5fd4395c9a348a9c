"""Pictures people would rather look at than read: multi-view video grids and contact sheets (written
with :mod:`enerverse.core.media`)."""

from __future__ import annotations

import cv2
import numpy as np


def label(img: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` on a dark box in the top-left corner of an RGB image [H, W, 3] (returns a copy)."""
    out = np.ascontiguousarray(img).copy()
    scale = max(out.shape[0] / 320.0, 0.35)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (min(tw + 4, out.shape[1] - 1), th + base + 3), (0, 0, 0), -1)
    cv2.putText(out, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def grid_video(
    episodes: list[np.ndarray],
    view_names: list[str] | None = None,
    row_labels: list[str] | None = None,
    scale: int = 1,
) -> np.ndarray:
    """Episodes as rows, views as columns: list of [T_i, V, H, W, 3] -> video [T_max, R*H, V*W, 3].

    Shorter episodes hold their last frame. ``scale`` upsamples (nearest) small renders for viewing.
    """
    if not episodes:
        raise ValueError("grid_video needs at least one episode")
    T = max(e.shape[0] for e in episodes)
    V, H, W = episodes[0].shape[1:4]
    rows = []
    for r, ep in enumerate(episodes):
        if ep.shape[1:] != (V, H, W, 3):
            raise ValueError(f"episode {r} has frames of shape {ep.shape[1:]}, expected {(V, H, W, 3)}")
        pad = np.repeat(ep[-1:], T - ep.shape[0], axis=0)
        rows.append(np.concatenate([ep, pad], axis=0))
    vid = np.stack(rows, axis=1)  # [T, R, V, H, W, 3]
    if scale > 1:
        vid = vid.repeat(scale, axis=3).repeat(scale, axis=4)
        H, W = H * scale, W * scale
    R = vid.shape[1]
    for r in range(R):
        for v in range(V):
            parts = [row_labels[r] if row_labels and v == 0 else "", view_names[v] if view_names else ""]
            txt = " ".join(p for p in parts if p)
            if txt:
                vid[:, r, v] = np.stack([label(f, txt) for f in vid[:, r, v]])
    return vid.transpose(0, 1, 3, 2, 4, 5).reshape(T, R * H, V * W, 3)


def contact_sheet(video: np.ndarray, n: int = 4) -> np.ndarray:
    """``n`` evenly spaced frames of a video [T, H, W, 3] stacked vertically -> [n*H, W, 3]."""
    idx = np.linspace(0, video.shape[0] - 1, n).round().astype(int)
    return np.concatenate([video[i] for i in idx], axis=0)
