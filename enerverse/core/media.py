"""Writing pictures and videos: H.264 mp4 that browsers play, gif, png; every file written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _check_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` as uint8 [T>0, H, W, 3]; ValueError saying what was expected otherwise."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"a video takes uint8 frames [T>0, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


def _temp_beside(path: Path) -> Path:
    """A hidden temporary name next to ``path`` with the same suffix (writers pick the format by it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


class VideoSink:
    """An H.264 mp4 (yuv420p, faststart: plays in browsers) written frame batch by frame batch, so a
    long video never sits in memory; it appears at ``path`` only when :meth:`close` succeeds.

    ``crf``: x264's constant rate factor (lower is closer to lossless; None: imageio's default)."""

    def __init__(self, path: str | Path, fps: float, crf: int | None = None) -> None:
        self.path, self.fps, self.crf = Path(path), float(fps), crf
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_beside(self.path)
        self._writer = None
        self.frames = 0

    def append(self, frames: np.ndarray) -> None:
        """Add uint8 frames [T, H, W, 3] (odd sizes are padded by one black row/column)."""
        import imageio.v2 as imageio

        frames = _check_frames(frames)
        H, W = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))  # yuv420p needs even sizes
        if self._writer is None:
            params = ["-movflags", "+faststart"] + (["-crf", str(self.crf)] if self.crf is not None else [])
            self._writer = imageio.get_writer(
                self._tmp, fps=self.fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2,
                ffmpeg_params=params, ffmpeg_log_level="error", quality=None if self.crf is not None else 5,
            )  # fmt: skip
        for f in frames:
            self._writer.append_data(f)
        self.frames += len(frames)

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self._writer is None:
            raise ValueError(f"{self.path}: a video needs at least one frame")
        try:
            self._writer.close()
            os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
        return self.path


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write RGB frames [T, H, W, 3] uint8 as H.264 mp4 (:class:`VideoSink`) or, for a ``.gif`` suffix,
    as an endless gif."""
    import imageio.v2 as imageio

    path, frames = Path(path), _check_frames(frames)
    if path.suffix != ".gif":
        sink = VideoSink(path, fps)
        sink.append(frames)
        return sink.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        imageio.mimsave(tmp, list(frames), duration=1.0 / fps, loop=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """Frames [H, W, 3] uint8 of a video file, one at a time (padding rows/columns included)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    W, H = meta["size"]
    for buf in reader:
        yield np.frombuffer(buf, np.uint8).reshape(H, W, 3)


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
