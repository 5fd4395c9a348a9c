"""Layers of the observation encoders: spatial-softmax keypoints, attention and keypoint pooling, and
the random shift / translation augmentations (images and feature maps)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from enerverse.core.device import channels_last_on_cpu


class AttentionPool(nn.Module):
    """One learned query attends over S tokens [N, S, C] (+ learned position embeddings) -> [N, C]."""

    def __init__(self, channels: int, positions: int, heads: int = 4) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, positions, channels) * 0.02)
        self.query = nn.Parameter(torch.randn(1, 1, channels) * 0.02)
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.pos.shape[1]:
            raise ValueError(
                f"attention pooling was built for {self.pos.shape[1]} positions, got {x.shape[1]}"
            )
        kv = self.norm(x) + self.pos
        return self.attn(self.query.expand(x.shape[0], -1, -1), kv, kv, need_weights=False)[0][:, 0]


class KeypointPool(nn.Module):
    """Feature maps [N, C, h, w] -> [N, 3K]: a small conv, then K spatial-softmax keypoints (x, y) and the
    mean of the K channels (where + what). ``linear``: one 1x1 conv instead of three 3x3 convs (a linear
    keypoint detector on features that already carry their neighbourhood; about 1/15 of the FLOPs)."""

    def __init__(self, channels: int, keypoints: int = 32, hidden: int = 32, linear: bool = False) -> None:
        super().__init__()
        if linear:
            self.conv: nn.Module = nn.Conv2d(channels, keypoints, 1)
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(hidden, hidden, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(hidden, keypoints, 3, padding=1),
            )
        self.keypoints = SpatialSoftmax()
        self.out_dim = 3 * keypoints

    def forward(self, x: Tensor) -> Tensor:
        f = self.conv(channels_last_on_cpu(x))
        return torch.cat([self.keypoints(f), f.mean(dim=(2, 3))], dim=1)


class SpatialSoftmax(nn.Module):
    """Feature map [N, C, H, W] -> expected (x, y) of each channel's softmax [N, 2C]."""

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        p = F.softmax(x.reshape(N, C, H * W), dim=-1).reshape(N, C, H, W)
        ys = torch.linspace(-1, 1, H, device=x.device)
        xs = torch.linspace(-1, 1, W, device=x.device)
        return torch.cat([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=1)


def random_shift(x: Tensor, pad: int) -> Tensor:
    """Translate each image [N, C, H, W] by a random integer offset in [-pad, pad] (edge padding)."""
    N, _, H, W = x.shape
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    iy = torch.arange(H, device=x.device)[None, :] + torch.randint(0, 2 * pad + 1, (N, 1), device=x.device)
    ix = torch.arange(W, device=x.device)[None, :] + torch.randint(0, 2 * pad + 1, (N, 1), device=x.device)
    rows = x.gather(2, iy[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))  # [N, C, H, W+2p]
    return rows.gather(3, ix[:, None, None, :].expand(-1, x.shape[1], H, -1))


def random_translate(x: Tensor, max_cells: float) -> Tensor:
    """Translate each map [N, C, h, w] by a random real offset in [-max_cells, max_cells] cells per axis
    (bilinear interpolation, border padding)."""
    N, _, h, w = x.shape
    offset = (torch.rand(N, 2, device=x.device) * 2 - 1) * max_cells  # [N, 2] (x, y) in cells
    theta = torch.zeros(N, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -offset[:, 0] * 2 / w  # the sampling grid moves against the content
    theta[:, 1, 2] = -offset[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
