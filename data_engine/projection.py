"""Projection of 3D Gaussians to the image plane (EWA splatting), in differentiable PyTorch.

Conventions (docs/design.md §3): cameras are OpenCV (x right, y down, z forward), ``viewmats``
[C, 4, 4] world->camera (gsplat's ``viewmat``), ``Ks`` [C, 3, 3] pixel intrinsics. Quaternions are
wxyz and need not be normalised; scales are activated (``exp(log_scales)``). Pixel centres lie at
integer + 0.5, as in gsplat: a point projecting to (u, v) = (fx x/z + cx, fy y/z + cy) covers pixel
(floor(u), floor(v)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SIGMA_CUTOFF = 3.0  # a Gaussian's footprint ends at 3 standard deviations (its bounding radius)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] of wxyz quaternions [..., 4] (normalised here)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances [N, 3, 3] = R S S^T R^T of quaternions [N, 4] and scales [N, 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]  # R @ diag(s)
    return M @ M.transpose(-1, -2)


@dataclass
class Projected:
    """Gaussians projected into C cameras (every field [C, N, ...])."""

    means2d: Tensor
    """pixel coordinates [C, N, 2]"""
    conics: Tensor
    """inverse 2D covariances, upper triangle (a, b, c) [C, N, 3]: the exponent is
    -0.5 (a dx^2 + 2 b dx dy + c dy^2)"""
    depths: Tensor
    """camera-space z [C, N]"""
    radii: Tensor
    """bounding radius in pixels [C, N] (0: culled)"""


def project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Projected:
    """Project N Gaussians (means [N, 3], quats [N, 4], scales [N, 3]) into C cameras with the EWA
    Jacobian of the pinhole model; ``eps2d`` is added to the 2D covariance's diagonal (a minimum
    footprint, gsplat's default). Gaussians outside (near, far) or off-image get radius 0."""
    R, t = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]  # [C, 1, 3, 3], [C, 1, 3]
    p = (R @ means[None, :, :, None])[..., 0] + t  # camera-space means [C, N, 3]
    x, y, z = p.unbind(-1)
    zs = z.clamp_min(near_plane)
    fx, fy = Ks[:, None, 0, 0], Ks[:, None, 1, 1]
    cx, cy = Ks[:, None, 0, 2], Ks[:, None, 1, 2]
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * x / zs**2, zero, fy / zs, -fy * y / zs**2], dim=-1).reshape(
        *zs.shape, 2, 3
    )  # [C, N, 2, 3]
    cov_cam = R @ covariance_3d(quats, scales)[None] @ R.transpose(-1, -2)  # [C, N, 3, 3]
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    with torch.no_grad():  # the footprint only decides which tiles a Gaussian touches
        mid = 0.5 * (a + c)
        lam = mid + (mid * mid - det).clamp_min(0.1).sqrt()
        radii = torch.ceil(SIGMA_CUTOFF * lam.sqrt())
        u, v = means2d.unbind(-1)
        visible = (z > near_plane) & (z < far_plane)
        visible &= (u + radii > 0) & (u - radii < width) & (v + radii > 0) & (v - radii < height)
        radii = torch.where(visible, radii, torch.zeros_like(radii))
    return Projected(means2d, conics, z, radii)


def gaussian_alpha(opacity: Tensor, conic: Tensor, delta: Tensor, max_alpha: float = 0.99) -> Tensor:
    """alpha = opacity * exp(-0.5 d^T Sigma^-1 d), clamped to ``max_alpha``, for offsets ``delta``
    [..., 2] (pixel centre - mean), ``conic`` [..., 3] and ``opacity`` [...]."""
    dx, dy = delta.unbind(-1)
    a, b, c = conic.unbind(-1)
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    return (opacity * torch.exp(power.clamp_max(0.0))).clamp_max(max_alpha)


def pixel_centres(width: int, height: int, dtype=torch.float32) -> Tensor:
    """Pixel centres [H, W, 2] as (u, v) = (column + 0.5, row + 0.5)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype) + 0.5, torch.arange(width, dtype=dtype) + 0.5, indexing="ij"
    )
    return torch.stack([u, v], dim=-1)
