"""Writing pictures and videos: H.264 mp4 that browsers play, gif, png; every file written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _temp_beside(path: Path) -> Path:
    """A hidden temporary name next to ``path`` with the same suffix (writers pick the format by it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write RGB frames [T, H, W, 3] uint8 as H.264 mp4 (yuv420p, faststart: plays in browsers) or, for
    a ``.gif`` suffix, as an endless gif. Odd frame sizes are padded by one black row/column."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        got = f"{frames.dtype} {frames.shape}"
        raise ValueError(f"write_video expects uint8 frames [T>0, H, W, 3], got {got}")
    tmp = _temp_beside(path)
    try:
        if path.suffix == ".gif":
            imageio.mimsave(tmp, list(frames), duration=1.0 / fps, loop=0)
        else:
            H, W = frames.shape[1:3]
            frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))  # yuv420p needs even sizes
            with imageio.get_writer(
                tmp, fps=float(fps), codec="libx264", pixelformat="yuv420p", macro_block_size=2,
                ffmpeg_params=["-movflags", "+faststart"], ffmpeg_log_level="error",
            ) as writer:  # fmt: skip
                for f in frames:
                    writer.append_data(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_png(path: str | Path, img: np.ndarray) -> Path:
    """Write an RGB image [H, W, 3] uint8 as png."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
