"""Sample grids written during training and evaluation: real vs generated futures, every view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from enerverse.core.frames import to_uint8


@torch.no_grad()
def predict_window(
    model, item: dict, seed: int = 0, steps: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate the chunk of one dataset item from its real memory frames.

    Returns (real, generated) frames, each [V, M, 3, H, W] in [-1, 1].
    """
    m = model.cfg.memory.n_memory
    frames = item["frames"][None].to(model.device)  # [1, V, m+M, 3, H, W]
    memory = model.encode(frames[:, :, :m])
    z = model.sample_chunk(
        memory,
        item["rays"][None].to(model.device),
        item["pos"][None].to(model.device),
        [item["instruction"]],
        steps=steps,
        seed=seed,
    )
    return frames[0, :, m:], model.decode(z)[0]


def write_rows_video(rows: list[np.ndarray], path: Path, keyframes: list[int], fps: float = 4.0) -> Path:
    """Stack rows (each [V, F, H, W, 3] uint8: views side by side) into a video [F, R*H, V*W, 3].

    Writes ``path``.mp4 and a ``path``.png with the ``keyframes`` (indices; negatives count from the end)
    side by side; small frames are upsampled to ~128 px for viewing. Returns the mp4 path.
    """
    from enerverse.core.media import write_png, write_video

    n = min(x.shape[1] for x in rows)
    video = np.stack(
        [np.concatenate([np.concatenate(list(x[:, t]), axis=1) for x in rows], axis=0) for t in range(n)]
    )
    scale = max(1, 128 // rows[0].shape[2])
    video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    sheet = np.concatenate([video[k] for k in keyframes], axis=1)
    write_png(path.with_suffix(".png"), sheet)
    return write_video(path.with_suffix(".mp4"), video, fps)


def write_sample_grid(model, dataset, path: str | Path, seed: int = 0, n: int = 2) -> Path:
    """Rows: real and generated futures of ``n`` held-out windows; columns: views. Writes mp4 + png."""
    path = Path(path)
    was_training = model.training
    model.eval()
    rows = []
    picks = np.linspace(0, len(dataset) - 1, n).round().astype(int) if len(dataset) else []
    for i in picks:
        real, gen = predict_window(model, dataset[int(i)], seed=seed)
        rows += [to_uint8(real), to_uint8(gen)]  # each [V, M, H, W, 3]
    model.train(was_training)
    if not rows:
        return path
    write_rows_video(rows, path, [0, -1])
    return path.with_suffix(".png")


def write_rollout_grid(rollouts: list[dict], path: str | Path) -> Path:
    """Video grid of evaluation rollouts: per rollout a real row and a predicted row, views as columns."""
    rows = []
    for r in rollouts:
        n = min(r["real"].shape[1], r["pred"].shape[1])
        rows += [to_uint8(r["real"][:, :n]), to_uint8(r["pred"][:, :n])]  # [V, F, H, W, 3]
    if not rows:
        return Path(path)
    n = min(x.shape[1] for x in rows)
    return write_rows_video(rows, Path(path), [0, n // 2, -1])
