"""EnerVerse-G: chunkwise multi-view future-space generation with sparse memory and an EoS frame.

Modes (one model):
- training loss: v-prediction on the M chunk frames given (possibly corrupted) sparse-memory frames;
- full generation: chunk after chunk until the EoS frame appears (:meth:`generate`);
- sparse-view generation: observed views stay clean (t = 0), only missing views are denoised;
- feature extraction: one forward at the noisiest timestep, middle-block features for the policy head.

Frames are images in [-1, 1] laid out [B, V, T, 3, H, W]; latents are [B, C, V, T, h, w]; ray maps
[B, 6, V, T, h, w] at latent resolution (origin + unit direction, OpenCV cameras, world frame).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from enerverse.codec import build_codec
from enerverse.core.camera import ray_maps
from enerverse.core.store.sampler import memory_indices
from enerverse.denoiser import Denoiser
from enerverse.diffusion import Diffusion, memory_corruption_levels, motion_weight, sparse_view_mask
from enerverse.presets import GeneratorConfig
from enerverse.text import shared_text_encoder

EOS_VALUE = -1.0  # the EoS frame is a constant black image appended after every training episode


@dataclass
class GenerationResult:
    """Output of :meth:`EnerVerseGenerator.generate`."""

    frames: Tensor  # [V, T_gen, 3, H, W] in [-1, 1], generated frames only (EoS frames excluded)
    latents: Tensor  # [C, V, T_gen, h, w]
    eos_frame: int | None  # index in ``frames`` where EoS was detected (None: max_chunks reached)
    chunks: int


def make_codec(c):
    """The codec a :class:`~enerverse.presets.CodecConfig` describes (untrained for ``conv``)."""
    if c.kind == "diffusers_kl":
        return build_codec(c.kind, path=c.path)
    kw = {"channels": c.channels, "latent_channels": c.latent_channels, "factor": c.factor}
    return build_codec(c.kind, **kw, object_weight=c.object_weight)


class EnerVerseGenerator(nn.Module):
    """Codec + instruction encoder + multi-view video denoiser + diffusion schedule."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c = cfg.codec
        self.codec = make_codec(c)
        # the frozen instruction encoder is shared through a cache, not registered as a submodule: its
        # weights come from their own package/folder, stay out of checkpoints and are never copied (EMA)
        self._text_key = (cfg.text_encoder, cfg.text_model_path)
        cfg.denoiser.text_dim = self.text.dim
        self.denoiser = Denoiser(cfg.denoiser, c.latent_channels)
        self.diffusion = Diffusion(cfg.diffusion)
        self.latent_size = cfg.resolution // c.factor

    @property
    def text(self) -> nn.Module:
        """The frozen instruction encoder (``texts -> (tokens [B, L, D], mask [B, L])``)."""
        return shared_text_encoder(*self._text_key)

    # --- helpers ----------------------------------------------------------------------------------
    def check_frames(self, frames: Tensor) -> None:
        """Validate frames [B, V, T, 3, H, W] against the config."""
        V, R = self.cfg.num_views, self.cfg.resolution
        if frames.ndim != 6 or frames.shape[1] != V or frames.shape[3:] != (3, R, R):
            raise ValueError(f"expected frames [B, V={V}, T, 3, {R}, {R}], got {tuple(frames.shape)}")

    def encode(self, frames: Tensor) -> Tensor:
        """Frames [B, V, T, 3, H, W] -> latents [B, C, V, T, h, w]."""
        B, V, T = frames.shape[:3]
        z = self.codec.encode(frames.reshape(B * V * T, *frames.shape[3:]))
        return z.reshape(B, V, T, *z.shape[1:]).permute(0, 3, 1, 2, 4, 5)

    def decode(self, z: Tensor) -> Tensor:
        """Latents [B, C, V, T, h, w] -> frames [B, V, T, 3, H, W]."""
        B, C, V, T = z.shape[:4]
        x = self.codec.decode(z.permute(0, 2, 3, 1, 4, 5).reshape(B * V * T, C, *z.shape[4:]))
        return x.reshape(B, V, T, *x.shape[1:])

    @torch.no_grad()
    def eos_latent(self) -> Tensor:
        """Latent [C, h, w] of the EoS frame."""
        R = self.cfg.resolution
        img = torch.full((1, 3, R, R), EOS_VALUE, device=self.device)
        return self.codec.encode(img)[0]

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def text_tokens(self, instructions: list[str], drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Tokens [B, L, D] and mask [B, L]; rows in ``drop`` [B] (bool) get the null token (CFG)."""
        tok, mask = self.text(instructions)
        tok, mask = tok.to(self.device), mask.to(self.device)
        if drop is not None:  # always through torch.where, so null_text takes part in every step (DDP)
            null = self.denoiser.null_text.expand(len(instructions), 1, -1)
            tok = torch.where(drop[:, None, None], F.pad(null, (0, 0, 0, tok.shape[1] - 1)), tok)
            keep_first = torch.zeros_like(mask)
            keep_first[:, 0] = True
            mask = torch.where(drop[:, None], keep_first, mask)
        return tok, mask

    # --- training ---------------------------------------------------------------------------------
    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        """The training loss (so that DDP wraps it): see :meth:`training_loss`."""
        return self.training_loss(batch)

    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """v-prediction loss on chunk frames.

        batch: ``frames`` [B,V,T,3,H,W] (memory then chunk; chunk frames past an episode's end are the
        EoS frame) or their cached ``latents`` [B,C,V,T,h,w]; ``rays`` [B,6,V,T,h,w]; ``pos`` [B,T]
        (frame index minus the current frame); ``instruction`` list[str].
        """
        m = self.cfg.memory.n_memory
        if "latents" in batch:  # cached by enerverse.data.encode_episodes (frozen codec)
            z0 = batch["latents"].to(self.device)
        else:
            frames = batch["frames"].to(self.device)
            self.check_frames(frames)
            with torch.no_grad():
                z0 = self.encode(frames)
        B, _, V, T = z0.shape[:4]
        N = self.diffusion.num_train_timesteps
        t_chunk = torch.randint(0, N, (B,), generator=generator).to(self.device)
        t_mem = memory_corruption_levels(B, m, self.cfg.memory, N, generator).to(self.device)
        t = torch.cat([t_mem, t_chunk[:, None].expand(B, T - m)], dim=1)[:, None].expand(B, V, T)
        noise = torch.randn(z0.shape, generator=generator).to(self.device)
        x_t = self.diffusion.add_noise(z0, noise, t)
        t_in = t.clone()
        t_in[:, :, :m] = 0  # memory frames enter with the timestep-0 embedding
        known = sparse_view_mask(B, V, self.cfg.diffusion.sparse_view_prob, generator).to(self.device)
        x_t = torch.where(known[:, None, :, None, None, None], z0, x_t)  # given views: clean, t = 0
        t_in = torch.where(known[:, :, None], 0, t_in)
        drop = torch.rand(B, generator=generator).to(self.device) < self.cfg.diffusion.uncond_prob
        tok, mask = self.text_tokens(batch["instruction"], drop)
        v = self.denoiser(x_t, batch["rays"].to(self.device), t_in, batch["pos"].to(self.device), tok, mask)
        target = self.diffusion.velocity(z0, noise, t)
        err = (v[:, :, :, m:] - target[:, :, :, m:]).square()  # [B, C, V, M, h, w]
        weight = (~known).float()[:, None, :, None, None, None] * motion_weight(
            z0, m, self.cfg.diffusion.motion_weight
        )
        weight = weight.expand_as(err)
        loss = (err * weight).sum() / weight.sum()  # every sample keeps at least one view to denoise
        return loss, {"loss": float(loss.detach())}

    # --- inference --------------------------------------------------------------------------------
    def _velocity(
        self,
        x: Tensor,
        rays: Tensor,
        t: Tensor,
        pos: Tensor,
        text: tuple[Tensor, Tensor],
        null_text: tuple[Tensor, Tensor] | None,
        guidance: float,
    ) -> Tensor:
        """v for x [B,C,V,T,h,w]; with guidance != 1, classifier-free guidance against the null text."""
        if null_text is None or guidance == 1.0:
            return self.denoiser(x, rays, t, pos, *text)
        v = self.denoiser(
            torch.cat([x, x]),
            torch.cat([rays, rays]),
            torch.cat([t, t]),
            torch.cat([pos, pos]),
            torch.cat([text[0], null_text[0]]),
            torch.cat([text[1], null_text[1]]),
        )
        vc, vu = v.chunk(2)
        return vu + guidance * (vc - vu)

    @torch.no_grad()
    def sample_chunk(
        self,
        memory: Tensor,
        rays: Tensor,
        pos: Tensor,
        instructions: list[str],
        steps: int | None = None,
        seed: int | None = None,
        observed: Tensor | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """Denoise one chunk: memory latents [B,C,V,m,h,w] -> chunk latents [B,C,V,M,h,w].

        ``rays`` [B,6,V,m+M,h,w] and ``pos`` [B,m+M] cover memory then chunk frames. ``observed``
        [B,C,V,M,h,w] with NaN for missing views enables sparse-view mode: observed views are kept
        clean at t = 0 and only the missing views are denoised.
        """
        B, C, V, m = memory.shape[:4]
        M = pos.shape[1] - m
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        shape = (B, C, V, M, *memory.shape[4:])
        x = torch.randn(shape, generator=g).to(self.device)
        known = None  # [B, 1, V, 1, 1, 1]: views given in ``observed`` (sparse-view mode)
        if observed is not None:
            known = ~torch.isnan(observed[:, :1, :, :1, :1, :1]).reshape(B, 1, V, 1, 1, 1)
        sched = self.diffusion.sampler(steps)
        guidance = self.cfg.diffusion.guidance_scale if guidance is None else guidance
        text = self.text_tokens(instructions)
        null = (
            self.text_tokens(instructions, torch.ones(B, dtype=torch.bool, device=self.device))
            if guidance != 1.0
            else None
        )
        for step_t in sched.timesteps:
            if known is not None:
                x = torch.where(known, torch.nan_to_num(observed), x)
            t = torch.zeros(B, V, m + M, dtype=torch.long, device=self.device)
            t[:, :, m:] = int(step_t)
            if known is not None:
                t[:, :, m:] = torch.where(known[:, 0, :, 0, 0, 0][:, :, None], 0, t[:, :, m:])
            v = self._velocity(torch.cat([memory, x], dim=3), rays, t, pos, text, null, guidance)[:, :, :, m:]
            x = sched.step(v, step_t, x, generator=g).prev_sample
        if known is not None:
            x = torch.where(known, torch.nan_to_num(observed), x)
        return x

    @torch.no_grad()
    def extract_features(self, *args, **kwargs) -> Tensor:
        """:meth:`features` without autograd: features [B, V, m+M, C, h', w'] of ``block`` ("mid": the
        middle block; "first": the first down level, at latent resolution), one forward at the
        noisiest timestep."""
        return self.features(*args, **kwargs)

    def features(
        self,
        memory: Tensor,
        rays: Tensor,
        pos: Tensor,
        instructions: list[str],
        seed: int | None = None,
        block: str = "mid",
        noise_level: float = 1.0,
    ) -> Tensor:
        """:meth:`extract_features` with autograd (fine-tuning the generator through the policy loss).

        memory [B,C,V,m,h,w] clean latents, rays [B,6,V,m+M,h,w], pos [B,m+M]; one ``block`` (several:
        :meth:`feature_maps`)."""
        return self.feature_maps(memory, rays, pos, instructions, seed, (block,), noise_level)[block]

    def feature_maps(
        self,
        memory: Tensor,
        rays: Tensor,
        pos: Tensor,
        instructions: list[str],
        seed: int | None = None,
        blocks: tuple[str, ...] = ("mid",),
        noise_level: float = 1.0,
    ) -> dict[str, Tensor]:
        """Features {block: [B, V, m+M, C', h', w']} of every block in ``blocks`` from one forward of
        [memory + pure-noise future frames]. ``noise_level`` in (0, 1]: the future frames' timestep as a
        fraction of the schedule (1: the noisiest, the paper's choice); with autograd."""
        if not 0.0 < noise_level <= 1.0:
            raise ValueError(f"noise_level must be in (0, 1], got {noise_level}")
        B, C, V, m = memory.shape[:4]
        M = pos.shape[1] - m
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        noise = torch.randn((B, C, V, M, *memory.shape[4:]), generator=g).to(self.device)
        N = self.diffusion.num_train_timesteps
        t = torch.zeros(B, V, m + M, dtype=torch.long, device=self.device)
        t[:, :, m:] = max(0, round(noise_level * N) - 1)
        tok, mask = self.text_tokens(instructions)
        x = torch.cat([memory, noise], dim=3)
        return self.denoiser.feature_maps(x, rays, t, pos, tok, mask, tuple(blocks))

    def eos_distance(self, z: Tensor) -> Tensor:
        """Mean L1 distance of latent frames [C, V, T, h, w] to the EoS latent, per frame -> [T]."""
        eos = self.eos_latent()[:, None, None]
        return (z - eos).abs().mean(dim=(0, 1, 3, 4))

    @torch.no_grad()
    def generate(
        self,
        context: Tensor,
        K: np.ndarray,
        T_cam_world: np.ndarray,
        instruction: str,
        max_chunks: int = 10,
        steps: int | None = None,
        seed: int = 0,
        stop_at_eos: bool = True,
        memory_mode: str | None = None,
    ) -> GenerationResult:
        """Generate chunk after chunk from context frames [V, Tc, 3, H, W] until EoS or ``max_chunks``.

        Cameras: K [V,3,3] and T_cam_world [V,4,4] (static rig; future frames reuse it). Memory per chunk
        is bounded: 3 frames spread over the whole history + the latest frame (``memory_mode`` "sparse"),
        or the latest 4 frames ("consecutive"); None follows the config. With ``stop_at_eos=False`` all
        ``max_chunks`` are generated (evaluation) and ``eos_frame`` still reports the first EoS frame.
        """
        it = self.iter_chunks(
            context, K, T_cam_world, instruction, max_chunks, steps, seed, stop_at_eos, memory_mode
        )
        chunks = list(it)
        z = torch.cat([c for c, _ in chunks], dim=2) if chunks else torch.empty(0)
        eos = next((i for i, (_, e) in enumerate(chunks) if e is not None), None)
        eos_frame = None if eos is None else eos * self.cfg.memory.chunk + chunks[eos][1]
        if eos_frame is not None and stop_at_eos:
            z = z[:, :, :eos_frame]
        frames = self.decode(z[None])[0] if z.numel() else torch.empty(0)
        return GenerationResult(frames=frames, latents=z, eos_frame=eos_frame, chunks=len(chunks))

    def iter_chunks(
        self,
        context: Tensor,
        K: np.ndarray,
        T_cam_world: np.ndarray,
        instruction: str,
        max_chunks: int,
        steps: int | None,
        seed: int,
        stop_at_eos: bool = True,
        memory_mode: str | None = None,
    ) -> Iterator[tuple[Tensor, int | None]]:
        """Yield (chunk latents [C, V, M, h, w], index of the first EoS frame in it or None)."""
        self.check_frames(context[None])
        mode = memory_mode or self.cfg.memory.mode
        if mode not in ("sparse", "consecutive"):
            raise ValueError(f"memory mode must be 'sparse' or 'consecutive', got {mode!r}")
        m, M = self.cfg.memory.n_memory, self.cfg.memory.chunk
        V = self.cfg.num_views
        history = list(self.encode(context[None].to(self.device))[0].unbind(dim=2))  # [C, V, h, w] each
        cams = np.broadcast_to(np.asarray(T_cam_world)[:, None], (V, m + M, 4, 4))
        rays = torch.from_numpy(ray_maps(np.asarray(K), cams, self.cfg.resolution, self.latent_size))
        rays = rays[None].to(self.device)
        for k in range(max_chunks):
            n = len(history)
            idx = memory_indices(n - 1, m, mode)[0].tolist()  # the newest frame is history[n - 1]
            memory = torch.stack([history[i] for i in idx], dim=2)[None]
            pos = torch.tensor(
                [[i - (n - 1) for i in idx] + list(range(1, M + 1))], dtype=torch.float32, device=self.device
            )
            z = self.sample_chunk(memory, rays, pos, [instruction], steps, seed + k)[0]
            hits = (self.eos_distance(z) < self.cfg.eos_threshold).nonzero()
            first = int(hits[0]) if len(hits) else None
            yield z, first
            if first is not None and stop_at_eos:
                return
            history.extend(z.unbind(dim=2))
