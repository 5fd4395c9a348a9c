"""Observation encoders: observation -> condition tokens [B, T, D] for the action head.

- :class:`FutureSpaceTokens` (EnerVerse-A): the generator's features (the first down level or the
  middle block) from one forward at the noisiest timestep over [memory frames + noise frames], pooled
  over views and space to one token per frame (T = n_memory + chunk), then an MLP. ``pool="keypoints"``
  (default) runs a small conv and a spatial softmax per view, so the token says where things are;
  ``"attention"`` is a learned query per frame over (view, position) tokens with position embeddings;
  ``"mean"`` is the paper's mean over views and space.
- :class:`ImageTokens` (baseline): a small CNN with GroupNorm and a spatial-softmax keypoint layer
  (Diffusion Policy style) per view and memory frame, one token per frame (T = n_memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.config import EncoderConfig


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
    mean of the K channels (where + what)."""

    def __init__(self, channels: int, keypoints: int = 32, hidden: int = 32) -> None:
        super().__init__()
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
        f = self.conv(x)
        return torch.cat([self.keypoints(f), f.mean(dim=(2, 3))], dim=1)


class FutureSpaceTokens(nn.Module):
    """Generator features [B, V, T, C, h, w] -> tokens [B, T, D] (pool over views and space + MLP).

    ``cell_px``: input pixels per feature cell (for ``cfg.feature_shift``, given in pixels)."""

    def __init__(
        self,
        cfg: EncoderConfig,
        channels: int,
        views: int,
        spatial: int,
        frames: int,
        dim: int,
        cell_px: float = 8.0,
    ) -> None:
        super().__init__()
        self.cfg, self.views, self.spatial, self.cell_px = cfg, views, spatial, cell_px
        heads = 4 if channels % 4 == 0 else 1
        self.pool: nn.Module | None = None
        width = channels
        if cfg.pool == "attention":
            self.pool = AttentionPool(channels, views * spatial, heads)
        elif cfg.pool == "keypoints":
            self.pool = KeypointPool(channels)
            width = views * self.pool.out_dim
        self.frame_pos = nn.Parameter(torch.randn(1, frames, dim) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, feats: Tensor) -> Tensor:
        B, V, T, C, h, w = feats.shape
        if V != self.views or h * w != self.spatial:
            raise ValueError(
                f"expected features for {self.views} views at {self.spatial} positions, "
                f"got {tuple(feats.shape)}"
            )
        if self.training and self.cfg.feature_shift > 0:
            maps = random_translate(
                feats.float().reshape(B * V * T, C, h, w), self.cfg.feature_shift / self.cell_px
            )
            feats = maps.reshape(B, V, T, C, h, w)
        if self.pool is None:
            pooled = feats.float().mean(dim=(1, 4, 5))  # [B, T, C]: the paper's mean over views and space
        elif self.cfg.pool == "keypoints":
            x = feats.float().permute(0, 2, 1, 3, 4, 5).reshape(B * T * V, C, h, w)
            pooled = self.pool(x).reshape(B, T, -1)  # [B, T, V * 3K]
        else:
            x = feats.float().permute(0, 2, 1, 4, 5, 3).reshape(B * T, V * h * w, C)
            pooled = self.pool(x).reshape(B, T, C)
        return self.mlp(pooled) + self.frame_pos[:, :T]


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


class ImageTokens(nn.Module):
    """Frames [B, V, T, 3, H, W] in [-1, 1] -> tokens [B, T, D]: a CNN per view, views concatenated."""

    def __init__(self, cfg: EncoderConfig, views: int, frames: int, dim: int) -> None:
        super().__init__()
        c = cfg.cnn_width
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (c, 2 * c, 4 * c):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.GroupNorm(8 if c_out % 8 == 0 else 1, c_out),
                nn.SiLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.SiLU(),
            ]
            c_in = c_out
        self.cnn = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax()
        self.view_emb = nn.Parameter(torch.zeros(1, views, 3, 1, 1))
        self.views, self.cfg = views, cfg
        self.frame_pos = nn.Parameter(torch.randn(1, frames, dim) * 0.02)
        self.proj = nn.Sequential(nn.Linear(views * (2 * c_in + c_in), dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, frames: Tensor) -> Tensor:
        B, V, T = frames.shape[:3]
        if V != self.views:
            raise ValueError(f"expected {self.views} views, got frames {tuple(frames.shape)}")
        x = frames.reshape(B * V * T, *frames.shape[3:])
        if self.training and self.cfg.shift > 0:
            x = random_shift(x, self.cfg.shift)
        x = x + self.view_emb[:, :, None].expand(B, V, T, 3, 1, 1).reshape(B * V * T, 3, 1, 1)
        f = self.cnn(x)  # [N, C, h, w]
        tok = torch.cat([self.keypoints(f), f.mean(dim=(2, 3))], dim=1)  # where + what
        tok = tok.reshape(B, V, T, -1).permute(0, 2, 1, 3).reshape(B, T, -1)
        return self.proj(tok) + self.frame_pos[:, :T]
