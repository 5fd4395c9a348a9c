"""Fill in missing camera views of an episode with EnerVerse-G (sparse-view mode), and regenerate.

The generator denoises every (view, frame) entry that is not observed while the observed ones sit
clean at t = 0 (the generator's sparse-view mode, :meth:`Generator.sample_chunk`, extended here to
memory frames). An episode is walked chunk by chunk on the generator's frame grid, the way
:meth:`Generator.iter_chunks` imagines a future: each window reads sparse memory from the frames
already filled and fills the next chunk. The first window has no filled history, so its memory
entries of the missing views are denoised too (entries that repeat one frame are kept equal).

:func:`regenerate` is the flywheel's re-noise step (SDEdit): given current estimates of the missing
views (e.g. 4DGS renders), noise them to ``strength`` of the schedule and denoise from there, so
the generator keeps their geometry and repairs their appearance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from enerverse.core.camera import ray_maps
from enerverse.core.store.sampler import memory_indices


def _tie_duplicates(x: Tensor, frame_ids: list[int], unknown: Tensor) -> Tensor:
    """Average the unknown entries of ``x`` [C, V, W, h, w] that show the same frame."""
    ids = np.asarray(frame_ids)
    for f in np.unique(ids):
        cols = np.flatnonzero(ids == f)
        if len(cols) > 1:
            mean = x[:, :, cols].mean(dim=2, keepdim=True)
            x[:, :, cols] = torch.where(unknown[None, :, cols, None, None], mean, x[:, :, cols])
    return x


@torch.no_grad()
def denoise_window(
    model, window: Tensor, known: Tensor, rays: Tensor, pos: Tensor, instruction: str, frame_ids: list[int],
    steps: int | None = None, seed: int = 0, strength: float = 1.0, init: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Denoise the unknown entries of one window: ``window`` latents [C, V, W, h, w] (unknown entries
    ignored), ``known`` [V, W] bool, ``rays`` [6, V, W, h, w], ``pos`` [W] frame positions,
    ``frame_ids`` [W] (which recorded frame each position shows). With ``strength`` < 1 the unknown
    entries start from ``init`` noised to that fraction of the schedule (SDEdit) instead of pure noise."""
    g = torch.Generator().manual_seed(seed)
    C, V, W = window.shape[:3]
    unknown = ~known
    sched = model.diffusion.sampler(steps)
    timesteps = [int(t) for t in sched.timesteps]
    noise = torch.randn(window.shape, generator=g)
    if strength < 1.0:
        if init is None:
            raise ValueError("strength < 1 needs init latents to re-noise")
        t0 = int(round(strength * (model.diffusion.num_train_timesteps - 1)))
        timesteps = [t for t in timesteps if t <= t0] or [timesteps[-1]]
        t_init = torch.full((1, V, W), timesteps[0], dtype=torch.long)
        x = model.diffusion.add_noise(init[None], noise[None], t_init)[0]
    else:
        x = noise
    known6 = known[None, :, :, None, None]
    text = model.text_tokens([instruction])
    dev = model.device
    for step_t in timesteps:
        x = torch.where(known6, window, x)
        t = torch.where(known, 0, step_t).long()[None]  # [1, V, W]
        v = model.denoiser(x[None].to(dev), rays[None].to(dev), t.to(dev), pos[None].to(dev), *text)[0].cpu()
        x = sched.step(v, step_t, x, generator=g).prev_sample
        x = _tie_duplicates(x, frame_ids, unknown)
    return torch.where(known6, window, x)


@torch.no_grad()
def fill_views(
    model, latents: Tensor, observed: list[int], K: np.ndarray, T_cam_world: np.ndarray, instruction: str,
    steps: int | None = None, seed: int = 0, strength: float = 1.0, init: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Latents [C, V, T, h, w] of every view of T grid frames, given those of the ``observed`` views
    (the others are ignored). ``K`` [V, 3, 3], ``T_cam_world`` [T, V, 4, 4] at the grid frames. With
    ``strength`` < 1 and ``init`` [C, V, T, h, w] the missing views are regenerated from ``init``."""
    C, V, T = latents.shape[:3]
    m, M = model.cfg.memory.n_memory, model.cfg.memory.chunk
    filled = torch.zeros(T, dtype=torch.bool)
    out = latents.clone()
    R, lat = model.cfg.resolution, latents.shape[-1]
    known_views = torch.zeros(V, dtype=torch.bool)
    known_views[observed] = True
    newest = 0  # the newest filled grid frame; the first window also fills frame 0 itself
    while True:
        chunk = list(range(newest + 1, min(T, newest + 1 + M)))
        mem = memory_indices(newest, m, "sparse")[0].tolist()
        ids = mem + chunk
        known = known_views[:, None].expand(V, len(ids)).clone()
        known[:, : len(mem)] |= filled[mem][None]  # filled history is known memory
        cams = np.transpose(T_cam_world[ids], (1, 0, 2, 3))  # [V, W, 4, 4]
        rays = torch.from_numpy(ray_maps(K, cams, R, lat))
        pos = torch.tensor([i - newest for i in ids], dtype=torch.float32)
        win = denoise_window(
            model, out[:, :, ids], known, rays, pos, instruction, ids, steps, seed + newest, strength,
            None if init is None else init[:, :, ids],
        )  # fmt: skip
        out[:, :, ids] = win
        filled[ids] = True
        if not chunk or chunk[-1] >= T - 1:
            break
        newest = chunk[-1]
    return out
