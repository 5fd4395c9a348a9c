"""3D Gaussians: parameters, colour from spherical harmonics, and initialisation from RGB-D frames.

Parameters (unconstrained, optimised directly): ``means`` [N, 3] (world, metres), ``quats`` [N, 4]
(wxyz, normalised when used), ``log_scales`` [N, 3], ``logit_opacities`` [N] and ``sh`` [N, K, 3]
spherical-harmonic colour coefficients, K = (degree + 1)^2 with degree <= 3 (degree 0: a plain
colour). :meth:`Gaussians.activated` gives what a rasteriser takes (docs/data_engine.md).

Initialisation unprojects the pixels of RGB-D frames through their cameras (OpenCV convention,
``T_cam_world`` world->camera) and sets each Gaussian's scale to the mean distance to its nearest
neighbours, so the first render already covers the surfaces the cameras saw.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from data_engine.neighbours import knn
from data_engine.plane import plane_fill
from enerverse.core.camera import unproject_depth

SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi)): the constant band
MAX_SH_DEGREE = 3


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Colour in [0, 1] -> the degree-0 coefficient that renders it."""
    return (rgb - 0.5) / SH_C0


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real spherical-harmonic basis [..., (degree + 1)^2] at unit directions [..., 3] (the ordering
    and signs of the 3D Gaussian Splatting papers, so coefficients carry over)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        c1 = 0.4886025119029199
        out += [-c1 * y, c1 * z, -c1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.31539156525252005 * (2 * zz - xx - yy),
            -1.0925484305920792 * xz, 0.5462742152960396 * (xx - yy),
        ]  # fmt: skip
    if degree >= 3:
        out += [
            -0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * xy * z,
            -0.4570457994644658 * y * (4 * zz - xx - yy), 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
            -0.4570457994644658 * x * (4 * zz - xx - yy), 1.445305721320277 * z * (xx - yy),
            -0.5900435899266435 * x * (xx - 3 * yy),
        ]  # fmt: skip
    return torch.stack(out, dim=-1)


class Gaussians(nn.Module):
    """A set of N 3D Gaussians (see module docstring)."""

    def __init__(
        self, means: Tensor, rgb: Tensor, scales: Tensor, opacity: float = 0.1, sh_degree: int = 0
    ) -> None:
        """``means`` [N, 3], ``rgb`` [N, 3] in [0, 1], ``scales`` [N, 3] (activated) or [N]."""
        super().__init__()
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {sh_degree}")
        N = means.shape[0]
        if means.shape != (N, 3) or rgb.shape != (N, 3):
            raise ValueError(
                f"expected means [N, 3] and rgb [N, 3], got {tuple(means.shape)}, {tuple(rgb.shape)}"
            )
        if scales.ndim == 1:
            scales = scales[:, None].expand(N, 3)
        self.sh_degree = sh_degree
        sh = torch.zeros(N, (sh_degree + 1) ** 2, 3)
        sh[:, 0] = rgb_to_sh0(rgb.float().clamp(0, 1))
        self.means = nn.Parameter(means.float().clone())
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(N, 1))
        self.log_scales = nn.Parameter(scales.float().clamp_min(1e-6).log().clone())
        self.logit_opacities = nn.Parameter(torch.full((N,), math.log(opacity / (1 - opacity))))
        self.sh = nn.Parameter(sh)

    def __len__(self) -> int:
        return self.means.shape[0]

    def colors(self, viewmats: Tensor | None = None, means: Tensor | None = None) -> Tensor:
        """Colours [N, 3] (degree 0) or per camera [C, N, 3] seen from ``viewmats`` [C, 4, 4], in
        [0, 1]; ``means`` [N, 3] overrides the Gaussians' positions (a deformed set)."""
        if self.sh_degree == 0 or viewmats is None:
            return (SH_C0 * self.sh[:, 0] + 0.5).clamp_min(0.0)
        means = self.means if means is None else means
        R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
        centres = -(R.transpose(1, 2) @ t[..., None])[..., 0]  # camera centres in the world [C, 3]
        d = means[None] - centres[:, None]
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        basis = sh_basis(d, self.sh_degree)  # [C, N, K]
        return ((basis[..., None] * self.sh[None]).sum(-2) + 0.5).clamp_min(0.0)

    def activated(self) -> dict[str, Tensor]:
        """``means`` [N, 3], ``quats`` [N, 4], ``scales`` [N, 3], ``opacities`` [N] for a rasteriser."""
        return {
            "means": self.means,
            "quats": self.quats,
            "scales": self.log_scales.exp(),
            "opacities": torch.sigmoid(self.logit_opacities),
        }


def nearest_neighbour_scale(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """Mean distance [N] of each point to its ``k`` nearest neighbours (the initial Gaussian scale)."""
    dist, _ = knn(points, points, k + 1, chunk)  # the nearest is the point itself
    return dist[:, 1:].mean(-1).clamp_min(1e-4)


def init_from_rgbd(
    rgb: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    T_cam_world: np.ndarray,
    n: int = 5000,
    max_depth: float = 10.0,
    seed: int = 0,
    sh_degree: int = 0,
    fill_plane: bool = False,
) -> Gaussians:
    """Gaussians from V RGB-D views: ``rgb`` [V, H, W, 3] uint8, ``depth`` [V, H, W] metres, ``K``
    [V, 3, 3], ``T_cam_world`` [V, 4, 4]; ``n`` pixels drawn at random among the valid ones (finite
    depth in (0, max_depth)). ``fill_plane``: also Gaussians on the support plane where no view saw it
    (:func:`data_engine.plane.plane_fill`). ValueError when the inputs disagree or no pixel is valid."""
    V, H, W = depth.shape
    if rgb.shape != (V, H, W, 3) or K.shape != (V, 3, 3) or T_cam_world.shape != (V, 4, 4):
        raise ValueError(
            f"expected rgb [V, H, W, 3], depth [V, H, W], K [V, 3, 3], T_cam_world [V, 4, 4] (one V, H, W); "
            f"got {rgb.shape}, {depth.shape}, {K.shape}, {T_cam_world.shape}"
        )
    finite = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)  # no depth: dropped below
    pts = np.concatenate([unproject_depth(K[i], T_cam_world[i], finite[i]) for i in range(V)])
    pts, cols = pts.reshape(-1, 3), rgb.reshape(-1, 3)
    d = depth.reshape(-1)
    ok = np.isfinite(d) & (d > 0) & (d < max_depth)
    if not ok.any():
        raise ValueError(f"no pixel has a valid depth in (0, {max_depth}) m: cannot initialise Gaussians")
    idx = np.flatnonzero(ok)
    idx = np.random.default_rng(seed).choice(idx, size=min(n, len(idx)), replace=False)
    means, colours = pts[idx], cols[idx]
    if fill_plane:
        extra, extra_cols = plane_fill(pts[ok], cols[ok], seed=seed)
        means, colours = np.concatenate([means, extra]), np.concatenate([colours, extra_cols])
    means = torch.from_numpy(means).float()
    return Gaussians(
        means,
        torch.from_numpy(colours).float() / 255.0,
        nearest_neighbour_scale(means),
        sh_degree=sh_degree,
    )
