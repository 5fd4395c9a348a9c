"""The diffusion action head shared by EnerVerse-A and the image baseline.

A stack of DiT blocks over the action tokens of one chunk (``horizon`` tokens): adaLN-Zero
modulation by the diffusion timestep, self-attention over the chunk, cross-attention to the
condition tokens (observation features, proprioception, instruction), MLP. A linear layer maps each
token back to an action. The head predicts the clean, normalised chunk (x0); training uses a DDPM
squared-cosine schedule and sampling a DDIM scheduler from diffusers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn

from enerverse.denoiser import sinusoidal
from policies.config import HeadConfig


class DiTBlock(nn.Module):
    """adaLN-Zero block: self-attention, cross-attention to the condition tokens, MLP."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_x = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def cross_kv(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [B, heads, L, D/heads] of the condition tokens cond [B, L, D]. They do not
        depend on the noisy chunk, so sampling computes them once for all DDIM steps."""
        a = self.cross_attn
        D = a.embed_dim
        k = F.linear(cond, a.in_proj_weight[D : 2 * D], a.in_proj_bias[D : 2 * D])
        v = F.linear(cond, a.in_proj_weight[2 * D :], a.in_proj_bias[2 * D :])
        return self._heads(k), self._heads(v)

    def _heads(self, x: Tensor) -> Tensor:  # [B, N, D] -> [B, heads, N, D/heads]
        B, N, D = x.shape
        return x.view(B, N, self.cross_attn.num_heads, D // self.cross_attn.num_heads).transpose(1, 2)

    def _cross(self, h: Tensor, kv: tuple[Tensor, Tensor], cond_pad: Tensor | None) -> Tensor:
        """Cross-attention of h [B, H, D] to cached keys/values, with the weights of ``cross_attn``."""
        a = self.cross_attn
        D = a.embed_dim
        q = self._heads(F.linear(h, a.in_proj_weight[:D], a.in_proj_bias[:D]))
        mask = None if cond_pad is None else ~cond_pad[:, None, None, :]  # True = attend
        drop = a.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, dropout_p=drop)
        return a.out_proj(o.transpose(1, 2).reshape(h.shape))

    def forward(
        self,
        x: Tensor,
        t_emb: Tensor,
        cond: Tensor,
        cond_pad: Tensor | None,
        kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x [B, H, D] action tokens, t_emb [B, D], cond [B, L, D], cond_pad [B, L] (True = padding);
        ``kv``: this block's :meth:`cross_kv` of ``cond``, when the caller cached it."""
        s1, b1, g1, s2, b2, g2 = self.ada(F.silu(t_emb))[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + s1) + b1
        x = x + g1 * self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self._cross(self.norm_x(x), kv if kv is not None else self.cross_kv(cond), cond_pad)
        h = self.norm2(x) * (1 + s2) + b2
        return x + g2 * self.mlp(h)


class ActionHead(nn.Module):
    """Denoises a normalised action chunk [B, horizon, action_dim] given condition tokens [B, L, D]."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.inp = nn.Linear(cfg.action_dim, D)
        self.pos = nn.Parameter(torch.randn(1, cfg.horizon, D) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        self.blocks = nn.ModuleList([DiTBlock(D, cfg.heads, cfg.dropout) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False)
        self.ada_out = nn.Linear(D, 2 * D)
        self.out = nn.Linear(D, cfg.action_dim)
        for m in (self.ada_out, self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        common = {
            "num_train_timesteps": cfg.train_timesteps,
            "beta_schedule": "squaredcos_cap_v2",
            "prediction_type": "sample",
            "clip_sample": True,
            "clip_sample_range": 1.0,
        }
        self.train_scheduler = DDPMScheduler(**common)
        self._ddim = common

    def forward(
        self,
        noisy: Tensor,
        t: Tensor,
        cond: Tensor,
        cond_pad: Tensor | None = None,
        kv: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """noisy [B, H, A], t [B] (int), cond [B, L, D] -> predicted clean chunk [B, H, A]; ``kv``: the
        blocks' cached condition keys/values (:meth:`cross_kv`)."""
        B, H, A = noisy.shape
        if (H, A) != (self.cfg.horizon, self.cfg.action_dim):
            raise ValueError(
                f"expected action chunks [B, {self.cfg.horizon}, {self.cfg.action_dim}], "
                f"got {tuple(noisy.shape)}"
            )
        t_emb = self.t_mlp(sinusoidal(t, self.cfg.dim))
        x = self.inp(noisy) + self.pos
        for i, blk in enumerate(self.blocks):
            x = blk(x, t_emb, cond, cond_pad, None if kv is None else kv[i])
        shift, scale = self.ada_out(F.silu(t_emb))[:, None].chunk(2, dim=-1)
        return self.out(self.norm_out(x) * (1 + scale) + shift)

    def cross_kv(self, cond: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every block's cross-attention keys/values of cond [B, L, D]."""
        return [blk.cross_kv(cond) for blk in self.blocks]

    def loss(
        self, actions: Tensor, cond: Tensor, cond_pad: Tensor | None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Denoising MSE on the clean chunk: actions [B, H, A] normalised to [-1, 1]."""
        B = actions.shape[0]
        noise = torch.randn(actions.shape, generator=generator).to(actions.device)
        t = torch.randint(0, self.cfg.train_timesteps, (B,), generator=generator).to(actions.device)
        noisy = self.train_scheduler.add_noise(actions, noise, t)
        return F.mse_loss(self(noisy, t, cond, cond_pad), actions)

    @torch.no_grad()
    def sample(
        self,
        cond: Tensor,
        cond_pad: Tensor | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """DDIM sampling of a normalised chunk [B, H, A]; the condition is computed once by the caller."""
        B = cond.shape[0]
        sched = DDIMScheduler(**self._ddim)
        sched.set_timesteps(steps or self.cfg.sample_steps)
        x = torch.randn((B, self.cfg.horizon, self.cfg.action_dim), generator=generator).to(cond.device)
        kv = self.cross_kv(cond)  # the condition is the same at every step
        for t in sched.timesteps:
            x0 = self(x, t.expand(B).to(cond.device), cond, cond_pad, kv)
            x = sched.step(x0, t, x, generator=generator).prev_sample
        return x.clamp(-1, 1)
