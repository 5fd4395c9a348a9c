"""The multi-view video denoiser of EnerVerse-G.

Input: latents ``x`` [B, C, V, T, h, w] (memory frames clean or lightly corrupted, chunk frames noisy)
concatenated with the 6-channel ray map [B, 6, V, T, h, w], a per-frame timestep [B, T], per-frame
relative positions [B, T] (frame index minus the current frame; memory frames are sparse in time),
instruction tokens [B, L, D_text] with a mask [B, L], and an optional domain id [B].

Each level of the U-shaped network stacks blocks of
  (2-D conv + temporal conv residual block) -> spatial self-attention jointly over all views of a
  frame (the cross-view mechanism, tokens (V*h*w)) -> bidirectional temporal attention over
  [memory + chunk] per view and pixel -> cross-attention to the instruction tokens.
The middle block's output is what the policy head reads (``return_features=True``).
Internal layout: frames [B*V*T, C, h, w].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from enerverse.presets import DenoiserConfig

RAY_CHANNELS = 6


def sinusoidal(x: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of real values x [...] -> [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _groups(c: int) -> int:
    return math.gcd(32, c) if c >= 8 else 1


class ResBlock(nn.Module):
    """Per-frame 2-D conv residual block with the frame embedding, then a temporal conv residual."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, temporal_kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.tnorm = nn.GroupNorm(_groups(c_out), c_out)
        self.tconv = nn.Conv1d(c_out, c_out, temporal_kernel, padding=temporal_kernel // 2)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        nn.init.zeros_(self.tconv.weight)
        nn.init.zeros_(self.tconv.bias)

    def forward(self, x: Tensor, emb: Tensor, T: int) -> Tensor:
        """x [N=B*V*T, C, h, w], emb [N, E] -> [N, C_out, h, w]."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        x = self.skip(x) + h
        N, C, H, W = x.shape
        t = F.silu(self.tnorm(x)).reshape(N // T, T, C, H, W).permute(0, 3, 4, 2, 1).reshape(-1, C, T)
        t = self.tconv(t).reshape(N // T, H, W, C, T).permute(0, 4, 3, 1, 2).reshape(N, C, H, W)
        return x + t


class Attention(nn.Module):
    """Pre-norm multi-head attention (SDPA) with a zero-initialised output projection."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x [N, S, D], context [N, L, Dc] (None: self-attention), mask [N, L] (True = attend)."""
        h = self.norm(x)
        ctx = h if context is None else context
        N, S, D = h.shape
        q = self.q(h).reshape(N, S, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).reshape(N, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return x + self.out(o.transpose(1, 2).reshape(N, S, D))


class AttentionBlock(nn.Module):
    """Spatial (all views of a frame) -> temporal (per view/pixel) -> cross-attention -> MLP."""

    def __init__(self, dim: int, heads: int, text_dim: int) -> None:
        super().__init__()
        self.spatial = Attention(dim, heads)
        self.temporal = Attention(dim, heads)
        self.cross = Attention(dim, heads, context_dim=text_dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(
        self, x: Tensor, B: int, V: int, T: int, text: Tensor, text_mask: Tensor, tpos: Tensor
    ) -> Tensor:
        """x [B*V*T, C, h, w]; text [B, L, Dt]; tpos [B*V*T, C] temporal position embedding."""
        N, C, H, W = x.shape
        x = x + tpos[:, :, None, None]
        s = x.reshape(B, V, T, C, H * W).permute(0, 2, 1, 4, 3).reshape(B * T, V * H * W, C)
        s = self.spatial(s)  # joint attention over every view's pixels of one frame
        t = s.reshape(B, T, V, H * W, C).permute(0, 2, 3, 1, 4).reshape(B * V * H * W, T, C)
        t = self.temporal(t)  # bidirectional over [memory + chunk]
        c = t.reshape(B, V * H * W * T, C)
        c = self.cross(c, text, text_mask)
        c = c + self.mlp(self.mlp_norm(c))
        return c.reshape(B, V, H, W, T, C).permute(0, 1, 4, 5, 2, 3).reshape(N, C, H, W)


class Level(nn.Module):
    """ResBlocks (+ attention blocks) at one resolution."""

    def __init__(self, c_in: int, c_out: int, n: int, attn: bool, cfg: DenoiserConfig, emb_dim: int) -> None:
        super().__init__()
        self.res = nn.ModuleList(
            [
                ResBlock(c_in if i == 0 else c_out, c_out, emb_dim, cfg.temporal_kernel, cfg.dropout)
                for i in range(n)
            ]
        )
        self.attn = (
            nn.ModuleList([AttentionBlock(c_out, c_out // cfg.head_channels, cfg.text_dim) for _ in range(n)])
            if attn
            else None
        )
        self.tpos = nn.Linear(emb_dim, c_out) if attn else None

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        pos: Tensor,
        shape: tuple[int, int, int],
        text: Tensor,
        text_mask: Tensor,
    ) -> Tensor:
        B, V, T = shape
        for i, rb in enumerate(self.res):
            x = rb(x, emb, T)
            if self.attn is not None:
                x = self.attn[i](x, B, V, T, text, text_mask, self.tpos(pos))
        return x


FEATURE_BLOCKS = ("mid", "first")
"""Blocks whose output the policy can read: the middle block (the paper) or the first down level."""


class Denoiser(nn.Module):
    """U-shaped multi-view video denoiser predicting v for every frame (see module docstring)."""

    def __init__(self, cfg: DenoiserConfig, latent_channels: int) -> None:
        super().__init__()
        self.cfg, self.latent_channels = cfg, latent_channels
        w = cfg.width
        emb_dim = 4 * w
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(w, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.pos_mlp = nn.Sequential(nn.Linear(w, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.domain = nn.Embedding(cfg.num_domains, emb_dim) if cfg.num_domains > 0 else None
        self.null_text = nn.Parameter(torch.zeros(1, 1, cfg.text_dim))  # "no instruction" token for CFG
        self.conv_in = nn.Conv2d(latent_channels + RAY_CHANNELS, w, 3, padding=1)
        widths = [w * m for m in cfg.channel_mult]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = w
        for i, cw in enumerate(widths):
            self.down.append(Level(c, cw, cfg.num_res_blocks, i in cfg.attention_levels, cfg, emb_dim))
            c = cw
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = Level(c, c, 1, True, cfg, emb_dim)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            self.up.append(
                Level(c + widths[i], widths[i], cfg.num_res_blocks, i in cfg.attention_levels, cfg, emb_dim)
            )
            c = widths[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.gradient_checkpointing = False
        """recompute each level's activations in the backward pass instead of keeping them (training)"""

    def feature_path(self, block: str = "mid") -> list[nn.Module]:
        """The modules a features-only forward of ``block`` runs through (input to that block): what
        the policy loss can train. The up path and the output layers are not among them."""
        if block not in FEATURE_BLOCKS:
            raise ValueError(f"feature_block must be one of {FEATURE_BLOCKS}, got {block!r}")
        stem: list[nn.Module] = [self.time_mlp, self.pos_mlp, self.conv_in]
        if block == "first":
            return [*stem, self.down[0]]
        return [*stem, *self.down, *self.downsample, self.mid]

    def _level(self, level: nn.Module, *args) -> Tensor:
        """``level(*args)``, with gradient checkpointing when it is on and gradients are needed."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(level, *args, use_reentrant=False)
        return level(*args)

    def feature_dim(self, block: str = "mid") -> int:
        """Channels of the features of ``block`` (see :data:`FEATURE_BLOCKS`)."""
        return self.cfg.width * self.cfg.channel_mult[-1 if block == "mid" else 0]

    def feature_downsampling(self, block: str = "mid") -> int:
        """How many times smaller than the latents the features of ``block`` are."""
        return 2 ** (len(self.cfg.channel_mult) - 1) if block == "mid" else 1

    def forward(
        self,
        x: Tensor,
        rays: Tensor,
        t: Tensor,
        pos: Tensor,
        text: Tensor,
        text_mask: Tensor,
        domain: Tensor | None = None,
        return_features: bool = False,
        features_only: bool = False,
        feature_block: str = "mid",
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x [B,C,V,T,h,w], rays [B,6,V,T,h,w], t [B,T] or [B,V,T] (per view and frame), pos [B,T],
        text [B,L,Dt], text_mask [B,L].

        Returns v [B,C,V,T,h,w]; with ``return_features`` also the middle-block features
        [B, V, T, C_mid, h', w']; with ``features_only`` just those features (the up path is skipped).
        ``feature_block="first"`` (with ``features_only``) returns the first down level's output instead,
        [B, V, T, width * channel_mult[0], h, w] at latent resolution, and skips everything after it.
        """
        B, C, V, T, H, W = x.shape
        h, emb, pemb, shape = self._stem(x, rays, t, pos, domain)
        if features_only:
            return self._down(h, emb, pemb, shape, text, text_mask, (feature_block,))[feature_block]
        skips: list[Tensor] = []
        h = self._down(h, emb, pemb, shape, text, text_mask, ("mid",), skips)["mid"]
        feats = h
        for j, level in enumerate(self.up):
            h = self._level(level, torch.cat([h, skips.pop()], dim=1), emb, pemb, shape, text, text_mask)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        v = out.reshape(B, V, T, C, H, W).permute(0, 3, 1, 2, 4, 5)
        if not return_features:
            return v
        return v, feats.reshape(B, V, T, *feats.shape[1:])

    def _stem(
        self, x: Tensor, rays: Tensor, t: Tensor, pos: Tensor, domain: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int, int]]:
        """Checked inputs -> (conv_in output [N=B*V*T, width, h, w], frame embedding [N, E], position
        embedding [N, E], (B, V, T))."""
        B, C, V, T, H, W = x.shape
        if C != self.latent_channels:
            raise ValueError(f"expected {self.latent_channels} latent channels, got {C}")
        if rays.shape != (B, RAY_CHANNELS, V, T, H, W):
            raise ValueError(
                f"ray map must have shape {(B, RAY_CHANNELS, V, T, H, W)}, got {tuple(rays.shape)}"
            )
        if t.ndim == 2:
            t = t[:, None].expand(B, V, T)
        if t.shape != (B, V, T) or pos.shape != (B, T):
            raise ValueError(
                f"t must have shape {(B, T)} or {(B, V, T)} and pos {(B, T)}, "
                f"got {tuple(t.shape)} and {tuple(pos.shape)}"
            )
        w = self.cfg.width
        emb = self.time_mlp(sinusoidal(t, w))  # [B, V, T, E]
        if self.domain is not None and domain is not None:
            emb = emb + self.domain(domain)[:, None, None]
        emb = emb.reshape(B * V * T, -1)
        pemb = self.pos_mlp(sinusoidal(pos.clamp(-self.cfg.max_frame_offset, self.cfg.max_frame_offset), w))
        pemb = pemb[:, None].expand(B, V, T, -1).reshape(B * V * T, -1)
        h = torch.cat([x, rays], dim=1).permute(0, 2, 3, 1, 4, 5).reshape(B * V * T, C + RAY_CHANNELS, H, W)
        h = self.conv_in(h)
        return h, emb, pemb, (B, V, T)

    def _down(
        self,
        h: Tensor,
        emb: Tensor,
        pemb: Tensor,
        shape: tuple[int, int, int],
        text: Tensor,
        text_mask: Tensor,
        blocks: tuple[str, ...],
        skips: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The down path and middle block from ``h`` = conv_in output [N, C, h, w], stopping after the
        deepest of ``blocks``; returns each block's output ("mid" and "first" [B, V, T, C', h', w'],
        or [N, C', h', w'] for "mid" when ``skips`` collects the skip connections of a full forward)."""
        for b in blocks:
            if b not in FEATURE_BLOCKS:
                raise ValueError(f"feature_block must be one of {FEATURE_BLOCKS}, got {b!r}")
        B, V, T = shape
        out: dict[str, Tensor] = {}
        for i, level in enumerate(self.down):
            h = self._level(level, h, emb, pemb, shape, text, text_mask)
            if i == 0 and "first" in blocks:
                out["first"] = h.reshape(B, V, T, *h.shape[1:])
                if "mid" not in blocks:
                    return out
            if skips is not None:
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self._level(self.mid, h, emb, pemb, shape, text, text_mask)
        out["mid"] = h if skips is not None else h.reshape(B, V, T, *h.shape[1:])
        return out

    def feature_maps(self, x: Tensor, rays: Tensor, t: Tensor, pos: Tensor, text: Tensor, text_mask: Tensor,
                     blocks: tuple[str, ...]) -> dict[str, Tensor]:  # fmt: skip
        """Features of several blocks from one forward (the down path up to the deepest one):
        {block: [B, V, T, C', h', w']}; arguments as :meth:`forward`."""
        h, emb, pemb, shape = self._stem(x, rays, t, pos, None)
        return self._down(h, emb, pemb, shape, text, text_mask, tuple(blocks))

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
