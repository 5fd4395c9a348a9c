"""Which pixels of a view some other view also sees: the co-visibility mask a sparse-view fit is scored
on next to the whole image (a pixel no training view saw cannot be reconstructed, only generated)."""

from __future__ import annotations

import numpy as np

from enerverse.core.camera import project_points, unproject_depth


def covisible_mask(
    depth: np.ndarray,
    K: np.ndarray,
    T_cam_world: np.ndarray,
    other_depths: np.ndarray,
    other_Ks: np.ndarray,
    other_T_cam_world: np.ndarray,
    tol: float = 0.02,
) -> np.ndarray:
    """[H, W] bool: the surface point of each pixel (``depth`` [H, W] metres, ``K`` [3, 3],
    ``T_cam_world`` [4, 4]) lands inside one of the other views (``other_depths`` [V, H', W'],
    ``other_Ks`` [V, 3, 3], ``other_T_cam_world`` [V, 4, 4]) within ``tol`` metres of that view's
    depth there (so it is seen, not occluded). Pixels without a finite depth are False."""
    H, W = depth.shape
    ok = np.isfinite(depth) & (depth > 0)
    pts = unproject_depth(K, T_cam_world, np.where(ok, depth, 0.0)).reshape(-1, 3)
    seen = np.zeros(H * W, dtype=bool)
    for d, k, T in zip(other_depths, other_Ks, other_T_cam_world):
        uv, z = project_points(k, T, pts)
        h, w = d.shape
        with np.errstate(invalid="ignore"):
            inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        u = np.clip(np.nan_to_num(uv[:, 0]).astype(int), 0, w - 1)
        v = np.clip(np.nan_to_num(uv[:, 1]).astype(int), 0, h - 1)
        seen |= inside & (np.abs(d[v, u] - z) < tol)
    return seen.reshape(H, W) & ok
