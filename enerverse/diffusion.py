"""Diffusion glue: the paper's schedule from diffusers schedulers, v-prediction targets, DDIM sampling,
and the cosine-scheduled corruption of sparse-memory frames.

Timesteps are per view and frame ([B, V, T]) so memory frames and observed views (sparse-view mode)
can sit at t = 0 while the frames being generated are noisy.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor

from enerverse.presets import DiffusionConfig, MemoryConfig


class Diffusion:
    """Noise schedule (linear β, 1000 steps, v-prediction) and a trailing-spaced DDIM sampler."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        common = {
            "num_train_timesteps": cfg.num_train_timesteps,
            "beta_start": cfg.beta_start,
            "beta_end": cfg.beta_end,
            "beta_schedule": "linear",
            "prediction_type": "v_prediction",
            "clip_sample": False,
        }
        self.train_scheduler = DDPMScheduler(**common)
        self._ddim = {**common, "timestep_spacing": "trailing", "set_alpha_to_one": False}
        self.alphas_cumprod = self.train_scheduler.alphas_cumprod.float()  # [1000], from diffusers

    @property
    def num_train_timesteps(self) -> int:
        return self.cfg.num_train_timesteps

    def _coeffs(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """sqrt(ᾱ_t), sqrt(1-ᾱ_t) for t [B, V, T], shaped to broadcast over [B, C, V, T, h, w]."""
        ab = self.alphas_cumprod.to(t.device)[t.long()]
        ab = ab[:, None, :, :, None, None] if ndim == 6 else ab
        return ab.sqrt(), (1 - ab).sqrt()

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε; x0/noise [B, C, V, T, h, w], t [B, V, T] (int)."""
        a, s = self._coeffs(t, x0.ndim)
        return a * x0 + s * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The v-prediction target v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x0 (same shapes as add_noise)."""
        a, s = self._coeffs(t, x0.ndim)
        return a * noise - s * x0

    def sampler(self, steps: int | None = None) -> DDIMScheduler:
        """A fresh DDIM scheduler (trailing spacing) with ``steps`` inference steps."""
        sched = DDIMScheduler(**self._ddim)
        sched.set_timesteps(steps or self.cfg.sample_steps)
        return sched


def memory_corruption_levels(
    batch: int, n_memory: int, cfg: MemoryConfig, T: int, generator: torch.Generator | None = None
) -> Tensor:
    """Per-memory-frame corruption timesteps [B, n_memory] (int), ascending toward the present.

    Level = (1 - cos u) * T / div with u ~ U(-π/2, π/2) clamped to [0, π/2] and div ~ U{min..max};
    sorted so that the frame nearest to the chunk gets the most noise (Genie-style corruption that
    grows toward the present, as in the paper's sparse memory).
    """
    if not cfg.corruption:
        return torch.zeros(batch, n_memory, dtype=torch.long)
    u = (torch.rand(batch, n_memory, generator=generator) - 0.5) * math.pi
    u = u.clamp(0.0, math.pi / 2)
    div = torch.randint(cfg.min_corruption_div, cfg.max_corruption_div + 1, (batch, 1), generator=generator)
    levels = ((1 - torch.cos(u)) * T / div).long().clamp(0, T - 1)
    return levels.sort(dim=1).values


def sparse_view_mask(batch: int, views: int, prob: float, generator: torch.Generator | None = None) -> Tensor:
    """[B, V] bool: the views given clean in each sample (sparse-view mode). A share ``prob`` of the
    samples gets a random subset of 1..V-1 views; the rest get none (every view is denoised)."""
    known = torch.zeros(batch, views, dtype=torch.bool)
    if views < 2 or prob <= 0:
        return known
    use = torch.rand(batch, generator=generator) < prob
    count = torch.randint(1, views, (batch,), generator=generator)  # how many views are given
    order = torch.rand(batch, views, generator=generator).argsort(dim=1)
    rank = order.argsort(dim=1)  # a random permutation's rank of each view
    return use[:, None] & (rank < count[:, None])


def motion_weight(z0: Tensor, n_memory: int, strength: float) -> Tensor:
    """Loss weight [B, 1, V, M, h, w] for the chunk frames of clean latents z0 [B, C, V, T, h, w].

    A position's change from the latest memory frame (mean |Δz| over channels), scaled by its
    sample's largest change, times ``strength``, plus 1: static positions weigh 1, the position that
    changes most weighs 1 + strength. strength 0 gives ones (the plain loss).
    """
    chunk = z0[:, :, :, n_memory:]
    if strength <= 0:
        return torch.ones_like(chunk[:, :1])
    change = (chunk - z0[:, :, :, n_memory - 1 : n_memory]).abs().mean(dim=1, keepdim=True)
    peak = change.flatten(1).amax(dim=1).clamp_min(1e-6)[:, None, None, None, None, None]
    return 1.0 + strength * change / peak
