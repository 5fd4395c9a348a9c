"""Image and multi-view metrics for generated futures (images in [-1, 1])."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from enerverse.codec import psnr
from enerverse.core.camera import unproject_depth

__all__ = ["psnr", "ssim", "ssim_map", "masked_psnr", "masked_ssim", "moved_object_mask", "depth_warp_error"]


def _gaussian(size: int = 7, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # [1, 1, k, k]


def ssim(x: Tensor, y: Tensor, window: int = 7) -> Tensor:
    """Per-image SSIM (Gaussian window, on [0, 1]-scaled images): x, y [N, 3, H, W] -> [N]."""
    return ssim_map(x, y, window).flatten(1).mean(dim=1)


def ssim_map(x: Tensor, y: Tensor, window: int = 7) -> Tensor:
    """Per-pixel SSIM averaged over channels: x, y [N, 3, H, W] in [-1, 1] -> [N, H, W]."""
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
    C = x.shape[1]
    w = _gaussian(window).to(x.device).expand(C, 1, window, window)
    pad = window // 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), w, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=1)


def _check_mask(x: Tensor, mask: Tensor) -> Tensor:
    if mask.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"mask must be [N, H, W] = {(x.shape[0], *x.shape[2:])}, got {tuple(mask.shape)}")
    return mask.to(x.device, torch.float32)


def masked_psnr(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """PSNR (dB) over the pixels where ``mask`` is set: x, y [N, 3, H, W] in [-1, 1], mask [N, H, W]
    -> [N] (NaN for an image whose mask is empty). The object-pixel metric of codecs and generators."""
    if x.shape != y.shape:
        raise ValueError(f"masked_psnr needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    m = _check_mask(x, mask)
    err = (x.float() - y.float()).pow(2).mean(dim=1)  # [N, H, W]
    n = m.flatten(1).sum(dim=1)
    mse = ((err * m).flatten(1).sum(dim=1) / n.clamp_min(1)).clamp_min(1e-10)
    return torch.where(n > 0, 10.0 * torch.log10(4.0 / mse), torch.full_like(mse, float("nan")))


def moved_object_mask(
    seg_future: Tensor, seg_now: Tensor, future: Tensor, now: Tensor, threshold: float = 0.1
) -> Tensor:
    """Object pixels that moved [N, H, W] (bool): object in the future frame or in the present one
    (segmentation labels > 0), where the colour changed by more than ``threshold`` (images in [-1, 1],
    largest channel difference). Static objects drop out, so copying the present frame scores badly
    here by construction, and a model scores well only by predicting where the arm moves things.
    seg_future [N, H, W], seg_now [N, H, W] (or [H, W]), future and now [N, 3, H, W]."""
    changed = (future.float() - now.float()).abs().amax(dim=1) > threshold
    return ((seg_future > 0) | (seg_now > 0)) & changed


def masked_ssim(x: Tensor, y: Tensor, mask: Tensor, window: int = 7) -> Tensor:
    """Mean per-pixel SSIM over the pixels where ``mask`` is set: [N] (NaN for an empty mask)."""
    m = _check_mask(x, mask)
    s = ssim_map(x, y, window)
    n = m.flatten(1).sum(dim=1)
    mean = (s * m).flatten(1).sum(dim=1) / n.clamp_min(1)
    return torch.where(n > 0, mean, torch.full_like(mean, float("nan")))


def depth_warp_error(frames: Tensor, depth: Tensor, K: np.ndarray, T_cam_world: np.ndarray) -> float:
    """Mean absolute colour difference between view 0 and every other view, warped through depth.

    frames [V, F, 3, H, W] in [-1, 1]; depth [F, V, H, W] (metres along the optical axis, inf = none);
    K [V, 3, 3] and T_cam_world [V, 4, 4] at this resolution. Pixels of view 0 with a finite depth are
    lifted to 3-D, projected into view v, and the colours compared where they land inside the image
    and are not occluded (view v's depth agrees within 2 cm). Real frames give the floor of this error
    (lighting differences between viewpoints, resampling).
    """
    V, Fr, _, H, W = frames.shape
    if V < 2:
        raise ValueError("depth_warp_error needs at least two views")
    K0, T0 = np.asarray(K, np.float64)[0], np.asarray(T_cam_world, np.float64)[0]
    K = torch.as_tensor(np.asarray(K), dtype=torch.float32)
    T = torch.as_tensor(np.asarray(T_cam_world), dtype=torch.float32)
    errs = []
    for f in range(Fr):
        d0 = depth[f, 0]
        ok0 = torch.isfinite(d0)
        with np.errstate(invalid="ignore"):  # world points [H, W, 3]; inf depth: masked by ok0
            pw = torch.from_numpy(unproject_depth(K0, T0, d0.double().numpy()).astype(np.float32))
        for v in range(1, V):
            pv = pw @ T[v, :3, :3].T + T[v, :3, 3]
            z = pv[..., 2]
            uv = (pv @ K[v].T)[..., :2] / z[..., None].clamp_min(1e-6)
            inside = (
                ok0 & (z > 1e-3) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
            )
            grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)[None]
            grid = torch.nan_to_num(grid, nan=-2.0, posinf=-2.0, neginf=-2.0)
            sampled = F.grid_sample(frames[v, f][None].float(), grid, align_corners=False)[0]
            dv = F.grid_sample(
                torch.nan_to_num(depth[f, v], posinf=1e6)[None, None],
                grid,
                mode="nearest",
                align_corners=False,
            )[0, 0]
            visible = inside & ((dv - z).abs() < 0.02)
            if visible.any():
                errs.append((sampled - frames[0, f].float()).abs().mean(dim=0)[visible].mean())
    return float(torch.stack(errs).mean()) if errs else float("nan")
