"""Cue recall on the memory task: does the imagined future put the cube on the plate the lamp showed?

In ``memory`` a lamp shows the colour of one of two plates in the first frames only; the cube must go
on that plate. A generator that remembers the cue imagines the cube moving to it. Measured here:

1. From the real first frame (main view, segmentation masks): the lamp's colour, the two plates'
   colours and image positions, the cube's colour. The cued plate is the one coloured like the lamp.
2. The generator starts after the cue is gone, late enough that ``n_memory`` consecutive frames hold
   no lit-lamp frame (only sparse memory, which keeps the first frame, can still see it), and rolls
   out until the real episode's end.
3. A colour classifier on the last imagined main-view frame: the centroid of cube-coloured pixels,
   and which plate it is nearer to. Recall = share of episodes where that is the cued plate (chance:
   50%). The same classifier on the real last frame validates it (it should read 100%).

``evaluate_cue_recall`` runs it for both memory modes of one model: sparse memory should recall the
cue and consecutive memory should not (the issue's target: a gap of >= 20 points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from enerverse.core.store import EpisodeStore
from enerverse.data import load_frames

CUE_FRAMES = 3  # the lamp is lit in recorded frames 0 .. 2 (sim.tasks.memory.MemoryTask.cue_steps)
MIN_CHROMA = 0.2  # pixels greyer than this (table, arm) are never the cube
MIN_COSINE = 0.97  # a pixel is cube-coloured when its hue direction matches the cube's this closely


@dataclass
class Scene:
    """What the first real frame tells: colours (RGB in [-1, 1]) and plate centroids (u, v), main view."""

    cube_rgb: np.ndarray
    plates: dict[str, np.ndarray]
    cued: str


def read_scene(frame: np.ndarray, seg: np.ndarray, names: list[str]) -> Scene:
    """frame [3, H, W] in [-1, 1], seg [H, W] labels (names[k] is label k + 1) of the first frame."""

    def mask(name: str) -> np.ndarray:
        return seg == names.index(name) + 1

    def colour(name: str) -> np.ndarray:
        return frame[:, mask(name)].mean(axis=1)

    plates = {}
    for p in ("plate_a", "plate_b"):
        v, u = np.nonzero(mask(p))
        plates[p] = np.array([u.mean(), v.mean()])
    lamp = colour("lamp")
    cued = min(("plate_a", "plate_b"), key=lambda p: float(np.abs(colour(p) - lamp).max()))
    return Scene(colour("cube"), plates, cued)


def chroma(x: np.ndarray) -> np.ndarray:
    """Colour without brightness: x [3, ...] minus its channel mean (shaded faces of one cube agree)."""
    return x - x.mean(axis=0, keepdims=True)


def chosen_plate(frame: np.ndarray, scene: Scene) -> str | None:
    """The plate nearest to the cube-coloured pixels of frame [3, H, W] (None: no such pixel)."""
    c = chroma(frame)  # [3, H, W]
    ref = chroma(scene.cube_rgb)
    norm = np.linalg.norm(c, axis=0)
    cos = np.einsum("chw,c->hw", c, ref) / np.maximum(norm * np.linalg.norm(ref), 1e-6)
    close = (norm > MIN_CHROMA) & (cos > MIN_COSINE)
    if not close.any():
        return None
    v, u = np.nonzero(close)
    c = np.array([u.mean(), v.mean()])
    return min(scene.plates, key=lambda p: float(np.linalg.norm(scene.plates[p] - c)))


def start_frame(n_memory: int, stride: int) -> int:
    """The first frame on the generator's grid whose ``n_memory`` consecutive frames are all past the cue."""
    s = (CUE_FRAMES + stride * (n_memory - 1) + stride - 1) // stride * stride
    return s


@torch.no_grad()
def episode_recall(model, store: EpisodeStore, e: int, modes: tuple[str, ...], steps: int, seed: int) -> dict:
    """Which plate the imagined future (per memory mode) and the real last frame put the cube on."""
    ep = store.episode(e)
    cfg = model.cfg
    k, M, R, view = cfg.frame_stride, cfg.memory.chunk, cfg.resolution, 0
    names = list(ep.attrs["seg_names"])
    first, K = load_frames(store, e, [0], R)
    scene = read_scene(first[view, 0].numpy(), ep.load("seg", 0)[view], names)
    T = ep.length
    s = start_frame(cfg.memory.n_memory, k)
    ctx_idx = np.arange(0, s + 1, k)
    chunks = max(1, -(-((T - 1 - s) // k) // M))  # enough chunks to reach the real end
    ctx, _ = load_frames(store, e, ctx_idx, R)
    last_real = load_frames(store, e, [T - 1], R)[0][view, 0].numpy()
    out = {"episode": e, "cued": scene.cued, "real": chosen_plate(last_real, scene)}
    cams, instruction = ep.load("T_cam_world", s), str(ep.attrs["instruction"])
    n_future = (T - 1 - s) // k  # the imagined frame that lines up with the real last frame
    for mode in modes:
        res = model.generate(ctx, K, cams, instruction, max_chunks=chunks, steps=steps, seed=seed,
                             stop_at_eos=False, memory_mode=mode)  # fmt: skip
        frame = res.frames[view, min(n_future, res.frames.shape[1]) - 1].numpy()
        out[mode] = chosen_plate(frame, scene)
    return out


def evaluate_cue_recall(
    model, store: EpisodeStore, episodes: list[int], steps: int = 10, seed: int = 0
) -> dict:
    """Recall (share of episodes whose imagined cube ends on the cued plate) per memory mode, and of
    the classifier on the real last frames."""
    modes = ("sparse", "consecutive")
    rows = [episode_recall(model, store, e, modes, steps, seed + i) for i, e in enumerate(episodes)]
    out = {f"{m}_recall": float(np.mean([r[m] == r["cued"] for r in rows])) for m in (*modes, "real")}
    out["gap_points"] = 100 * (out["sparse_recall"] - out["consecutive_recall"])
    out["episodes"] = rows
    return out
