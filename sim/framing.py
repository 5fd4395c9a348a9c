"""How large the task objects appear to the cameras, measured with MuJoCo's segmentation rendering.

An object's size in a view is the square root of its pixel area in the segmentation mask (a 10 x 10
px square reads 10). docs/design.md §3 "Framing" asks for every task object to be at least
:data:`MIN_OBJECT_PX` across in the main view at the default resolution; :func:`framing_table`
measures it over seeds at reset, and ``python scripts/object_sizes.py`` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_OBJECT_PX = 8.0


@dataclass
class ObjectSizes:
    """Sizes [n_seeds] (px, 0 when not visible) of one object of one task in one view, and whether its
    mask stays off the image border [n_seeds] (the whole object is in view)."""

    task: str
    name: str
    sizes: np.ndarray
    inside: np.ndarray

    @property
    def share_ok(self) -> float:
        """Fraction of seeds where the object is at least :data:`MIN_OBJECT_PX` across."""
        return float(np.mean(self.sizes >= MIN_OBJECT_PX))

    def row(self) -> dict:
        """One table row: task, object, min / 5th percentile / median size, share >= 8 px, visible."""
        s = self.sizes
        return {
            "task": self.task,
            "object": self.name,
            "min_px": round(float(s.min()), 2),
            "p5_px": round(float(np.percentile(s, 5)), 2),
            "median_px": round(float(np.median(s)), 2),
            "share_ge_8px": round(self.share_ok, 3),
            "visible": round(float(np.mean(s > 0)), 3),
            "in_frame": round(float(np.mean(self.inside & (s > 0))), 3),
        }


def mask_sizes(seg: np.ndarray, n_objects: int) -> np.ndarray:
    """Size (sqrt of pixel area) [n_objects] of labels 1..n_objects in one mask seg [H, W]."""
    counts = np.bincount(seg.ravel(), minlength=n_objects + 1)[1 : n_objects + 1]
    return np.sqrt(counts.astype(np.float64))


def off_border(seg: np.ndarray, n_objects: int) -> np.ndarray:
    """bool [n_objects]: label k + 1 touches no pixel of the outermost rows and columns of seg [H, W]."""
    border = np.concatenate([seg[0], seg[-1], seg[:, 0], seg[:, -1]])
    return ~np.isin(np.arange(1, n_objects + 1), border)


def measure_task(task: str, seeds: list[int], resolution: int, view: str = "main") -> list[ObjectSizes]:
    """Object sizes of ``task`` in ``view`` at reset for each seed, at ``resolution`` x ``resolution``."""
    from sim.env import EnerVerseEnv

    env = EnerVerseEnv(task=task, views=[view], width=resolution, height=resolution, seg=True)
    try:
        names = env.seg_names
        sizes = np.zeros((len(seeds), len(names)))
        inside = np.zeros((len(seeds), len(names)), dtype=bool)
        for i, seed in enumerate(seeds):
            obs, _ = env.reset(seed=int(seed))
            sizes[i] = mask_sizes(obs["seg"][0], len(names))
            inside[i] = off_border(obs["seg"][0], len(names))
    finally:
        env.close()
    return [ObjectSizes(task, n, sizes[:, k], inside[:, k]) for k, n in enumerate(names)]


def framing_table(
    tasks: list[str], seeds: list[int], resolution: int, view: str = "main"
) -> list[ObjectSizes]:
    """:func:`measure_task` for every task, concatenated."""
    return [row for t in tasks for row in measure_task(t, seeds, resolution, view)]
