"""Frame conversions between the simulator/store layout and the models' layout, in one place."""

from __future__ import annotations

import numpy as np
import torch


def to_model(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1]."""
    x = torch.as_tensor(rgb)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames [..., H, W, 3], got {x.dtype}")
    return x.movedim(-1, -3).float() / 127.5 - 1.0


def resize_frames(rgb: np.ndarray, R: int, nearest: bool = False) -> np.ndarray:
    """uint8 frames [..., H, W, 3] (or label maps [..., H, W] with ``nearest``) -> [..., R, R(, 3)]:
    area interpolation for images, nearest for labels; unchanged when already R x R."""
    import cv2

    rgb = np.asarray(rgb)
    hw_axis = rgb.ndim - (2 if nearest else 3)
    if rgb.shape[hw_axis : hw_axis + 2] == (R, R):
        return rgb
    flat = rgb.reshape(-1, *rgb.shape[hw_axis:])
    mode = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    out = np.stack([cv2.resize(f, (R, R), interpolation=mode) for f in flat])
    return out.reshape(*rgb.shape[:hw_axis], *out.shape[1:])


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3] (values outside are clipped)."""
    x = ((frames.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
