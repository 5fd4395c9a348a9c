"""The 4D part: a HexPlane deformation field that moves canonical Gaussians to time t.

:class:`HexPlane` holds six 2D feature planes over the coordinate pairs xy, xz, yz (space) and xt,
yt, zt (time), at several spatial resolutions. A point's feature is the elementwise product of its
six bilinear samples, concatenated over resolutions (the K-Planes/HexPlane form that 4DGaussians
uses). Space is normalised to [-1, 1] by an axis-aligned box; time is given in [-1, 1] (so the whole
temporal grid is used). Spatial planes start uniform in [0.1, 0.5], time planes at 1.

:class:`Deformation` reads the field through a linear trunk and three small MLP heads: Δposition (3),
Δrotation (4, added to the wxyz quaternion) and Δlog-scale (3). The heads' last layers start at zero,
so a fresh field is exactly the identity.

Regularisers (:meth:`HexPlane.regularisers`): second-difference smoothness of the spatial planes
("plane"), of the time planes along time ("time"), and the mean |1 - time plane| ("l1_time").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAIRS = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # xy, xz, yz, xt, yt, zt
TIME_PLANES = (3, 4, 5)


class HexPlane(nn.Module):
    """Multi-resolution HexPlane field: (xyz [N, 3], t [N]) -> features [N, channels * levels]."""

    def __init__(
        self,
        aabb: Tensor,
        channels: int = 16,
        resolution: tuple[int, int, int, int] = (32, 32, 32, 16),
        multires: tuple[int, ...] = (1, 2),
    ) -> None:
        """``aabb`` [2, 3] (min, max corners of the scene box); ``resolution`` (x, y, z, t) at the
        coarsest level; spatial resolutions are multiplied by each ``multires`` factor."""
        super().__init__()
        self.register_buffer("aabb", aabb.float().clone())
        self.channels, self.levels = channels, len(multires)
        self.planes = nn.ParameterList()
        for m in multires:
            res = [r * m for r in resolution[:3]] + [resolution[3]]
            for i, (a, b) in enumerate(PAIRS):
                shape = (1, channels, res[b], res[a])  # [1, F, H = second axis, W = first axis]
                init = torch.ones(shape) if i in TIME_PLANES else torch.empty(shape).uniform_(0.1, 0.5)
                self.planes.append(nn.Parameter(init))

    @property
    def dim(self) -> int:
        return self.channels * self.levels

    def forward(self, xyz: Tensor, t: Tensor) -> Tensor:
        lo, hi = self.aabb[0], self.aabb[1]
        p = ((xyz - lo) / (hi - lo).clamp_min(1e-9)) * 2 - 1
        coords = torch.cat([p, t.reshape(-1, 1).expand(p.shape[0], 1)], dim=-1)  # [N, 4] in [-1, 1]
        feats = []
        for level in range(self.levels):
            f = 1.0
            for i, (a, b) in enumerate(PAIRS):
                grid = coords[:, (a, b)][None, None]  # [1, 1, N, 2]: (x -> width, y -> height)
                plane = self.planes[level * len(PAIRS) + i]
                s = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
                f = f * s[0, :, 0].T  # [N, F]
            feats.append(f)
        return torch.cat(feats, dim=-1)

    def regularisers(self) -> dict[str, Tensor]:
        """``plane``, ``time`` (second-difference smoothness) and ``l1_time`` (see module docstring)."""
        plane, time, l1 = [], [], []
        for j, p in enumerate(self.planes):
            if j % len(PAIRS) in TIME_PLANES:
                if p.shape[2] > 2:
                    time.append((p[:, :, 2:] - 2 * p[:, :, 1:-1] + p[:, :, :-2]).square().mean())
                l1.append((1 - p).abs().mean())
            else:
                for d in (2, 3):
                    if p.shape[d] > 2:
                        n = p.shape[d]
                        a, b, c = p.narrow(d, 2, n - 2), p.narrow(d, 1, n - 2), p.narrow(d, 0, n - 2)
                        plane.append((a - 2 * b + c).square().mean())
        zero = self.planes[0].new_zeros(())
        return {
            "plane": torch.stack(plane).mean() if plane else zero,
            "time": torch.stack(time).mean() if time else zero,
            "l1_time": torch.stack(l1).mean() if l1 else zero,
        }


def _head(width: int, out: int) -> nn.Sequential:
    """ReLU -> Linear -> ReLU -> Linear(out), the last layer zero (the identity at start)."""
    head = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out))
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class Deformation(nn.Module):
    """Canonical Gaussians -> Gaussians at time t (see module docstring)."""

    def __init__(self, aabb: Tensor, channels: int = 16, width: int = 64, **hexplane) -> None:
        super().__init__()
        self.field = HexPlane(aabb, channels, **hexplane)
        self.trunk = nn.Linear(self.field.dim, width)
        self.d_means, self.d_quats, self.d_scales = _head(width, 3), _head(width, 4), _head(width, 3)

    def forward(
        self, means: Tensor, quats: Tensor, log_scales: Tensor, t: float | Tensor
    ) -> tuple[Tensor, ...]:
        """Deformed (means [N, 3], quats [N, 4], log_scales [N, 3]) at time ``t`` in [-1, 1]."""
        t = torch.as_tensor(t, dtype=means.dtype, device=means.device)
        h = self.trunk(self.field(means, t))
        return means + self.d_means(h), quats + self.d_quats(h), log_scales + self.d_scales(h)

    def mlp_parameters(self) -> list[nn.Parameter]:
        """The trunk's and heads' weights (the grid has its own learning rate)."""
        return [p for n, p in self.named_parameters() if not n.startswith("field.")]
