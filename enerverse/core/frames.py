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


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3] (values outside are clipped)."""
    x = ((frames.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
