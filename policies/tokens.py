"""Token modules of the observation encoders: generator feature maps or camera frames -> one token
per frame [B, T, D] (:mod:`policies.encoders` registers the encoders built from them)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from enerverse.core.device import channels_last_on_cpu
from policies.config import EncoderConfig
from policies.layers import AttentionPool, KeypointPool, SpatialSoftmax, random_shift, random_translate


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
        elif cfg.pool in ("keypoints", "keypoints_linear"):
            self.pool = KeypointPool(channels, linear=cfg.pool == "keypoints_linear")
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
        elif isinstance(self.pool, KeypointPool):
            x = feats.float().permute(0, 2, 1, 3, 4, 5).reshape(B * T * V, C, h, w)
            pooled = self.pool(x).reshape(B, T, -1)  # [B, T, V * 3K]
        else:
            x = feats.float().permute(0, 2, 1, 4, 5, 3).reshape(B * T, V * h * w, C)
            pooled = self.pool(x).reshape(B, T, C)
        return self.mlp(pooled) + self.frame_pos[:, :T]


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
        f = self.cnn(channels_last_on_cpu(x))  # [N, C, h, w]
        tok = torch.cat([self.keypoints(f), f.mean(dim=(2, 3))], dim=1)  # where + what
        tok = tok.reshape(B, V, T, -1).permute(0, 2, 1, 3).reshape(B, T, -1)
        return self.proj(tok) + self.frame_pos[:, :T]
