"""The diffusion policy: observation encoder -> condition tokens -> DiT action head.

``DiffusionPolicy`` holds the generator (EnerVerse-A) or a CNN (baseline), the head, and the
normalisation statistics as buffers, so one safetensors file restores everything. Batches:

- ``features`` [B, V, T, C, h, w] (cached generator features) or ``memory`` latents [B, C, V, m, h, w]
  with ``rays`` [B, 6, V, m+M, h, w] and ``pos`` [B, m+M] (EnerVerse-A); ``frames`` [B, V, m, 3, R, R]
  in [-1, 1] (baseline);
- ``state`` [B, S] (raw), ``instruction`` list[str];
- ``actions`` [B, H, A] (raw; training only);
- ``privileged`` [B, P] (raw object state at the decision frame; training with ``aux_weight`` > 0 only).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from enerverse.generator import ray_maps
from enerverse.text import shared_text_encoder
from policies.config import PolicyConfig
from policies.encoders import FutureSpaceTokens, ImageTokens
from policies.head import ActionHead

STATE_Z_CLIP = 5.0  # standardised state beyond the demonstrations' range is clipped, not extrapolated


class DiffusionPolicy(nn.Module):
    """EnerVerse-A (``encoder.kind="enerverse"``) or the image baseline (``"cnn"``); see module docstring."""

    def __init__(self, cfg: PolicyConfig, meta: dict, generator: nn.Module | None = None) -> None:
        """meta: ``views`` (names), ``resolution``, ``state_dim``, ``text_encoder``, ``text_model_path``,
        ``privileged_dim`` (P, needed when ``cfg.aux_weight`` > 0)."""
        super().__init__()
        cfg.validate()
        self.cfg, self.meta = cfg, dict(meta)
        V, D, S = len(meta["views"]), cfg.head.dim, int(meta["state_dim"])
        self.generator = generator
        if cfg.encoder.kind == "enerverse":
            if generator is None:
                raise ValueError("encoder.kind='enerverse' needs a generator")
            g = generator.cfg
            if g.memory.n_memory != cfg.n_memory:
                raise ValueError(
                    f"the generator keeps {g.memory.n_memory} memory frames, "
                    f"the policy n_memory={cfg.n_memory}"
                )
            if g.resolution != meta["resolution"]:
                raise ValueError(
                    f"the generator works at {g.resolution} px, the data at {meta['resolution']} px"
                )
            block = cfg.encoder.block
            lat = g.resolution // g.codec.factor // generator.denoiser.feature_downsampling(block)
            self.frames = g.memory.n_memory + g.memory.chunk
            self.encoder = FutureSpaceTokens(
                cfg.encoder,
                generator.denoiser.feature_dim(block),
                V,
                lat * lat,
                self.frames,
                D,
                cell_px=g.resolution / lat,
            )
            self.text_key = (g.text_encoder, g.text_model_path)
        else:
            self.frames = cfg.n_memory
            self.encoder = ImageTokens(cfg.encoder, V, self.frames, D)
            self.text_key = (meta.get("text_encoder", "minilm"), meta.get("text_model_path"))
        self.state_proj = nn.Linear(S, D)
        self.text_proj = nn.Linear(self.text.dim, D)
        self.type_emb = nn.Parameter(torch.zeros(3, D))  # observation / state / instruction tokens
        self.head = ActionHead(cfg.head)
        self.finetune_generator = False  # training: the policy loss also trains the generator's denoiser
        A = cfg.head.action_dim
        self.register_buffer("action_lo", -torch.ones(A))
        self.register_buffer("action_hi", torch.ones(A))
        self.register_buffer("state_mean", torch.zeros(S))
        self.register_buffer("state_std", torch.ones(S))
        self.aux_head: nn.Module | None = None  # training only: object state from the decision frame's token
        if cfg.aux_weight > 0:
            P = int(meta.get("privileged_dim") or 0)
            if P <= 0:
                raise ValueError("aux_weight > 0 needs meta['privileged_dim'] > 0 (the object-state size)")
            self.aux_head = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(), nn.Linear(D, P))
            self.register_buffer("privileged_mean", torch.zeros(P))
            self.register_buffer("privileged_std", torch.ones(P))

    # --- normalisation ---------------------------------------------------------------------------
    @property
    def text(self) -> nn.Module:
        return shared_text_encoder(*self.text_key)

    def set_stats(self, stats: dict[str, np.ndarray]) -> None:
        """Store normalisation statistics (``action_lo/hi`` [A], ``state_mean/std`` [S], and with the
        auxiliary loss ``privileged_mean/std`` [P])."""
        keys = ["action_lo", "action_hi", "state_mean", "state_std"]
        if self.aux_head is not None:
            keys += ["privileged_mean", "privileged_std"]
        for k in keys:
            getattr(self, k).copy_(torch.as_tensor(np.asarray(stats[k]), dtype=torch.float32))

    def _action_scale(self) -> tuple[Tensor, Tensor]:
        span = self.action_hi - self.action_lo
        flat = span < 1e-6  # a constant dimension maps to itself around its value
        centre = (self.action_hi + self.action_lo) / 2
        return centre, torch.where(flat, torch.ones_like(span), span / 2)

    def normalize_actions(self, a: Tensor) -> Tensor:
        c, s = self._action_scale()
        return ((a - c) / s).clamp(-1.5, 1.5)

    def unnormalize_actions(self, a: Tensor) -> Tensor:
        c, s = self._action_scale()
        return a * s + c

    # --- conditioning ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.action_lo.device

    def observation_tokens(self, batch: dict, finetune: bool = False, seed: int | None = None) -> Tensor:
        """Tokens [B, T, D] from cached features, generator inputs, or frames (see module docstring)."""
        if self.cfg.encoder.kind == "cnn":
            return self.encoder(batch["frames"].to(self.device).float())
        if "features" in batch:
            feats = batch["features"].to(self.device)
        else:
            args = (
                batch["memory"].to(self.device).float(),
                batch["rays"].to(self.device),
                batch["pos"].to(self.device),
                list(batch["instruction"]),
                seed,
                self.cfg.encoder.block,
            )
            feats = self.generator.features(*args) if finetune else self.generator.extract_features(*args)
        return self.encoder(feats)

    def condition(
        self, batch: dict, finetune: bool = False, seed: int | None = None, obs: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Condition tokens [B, L, D] and their padding mask [B, L] (True = ignore); ``obs`` [B, T, D]:
        observation tokens already computed."""
        obs = (self.observation_tokens(batch, finetune, seed) if obs is None else obs) + self.type_emb[0]
        B = obs.shape[0]
        parts, pads = [obs], [torch.zeros(B, obs.shape[1], dtype=torch.bool, device=obs.device)]
        if self.cfg.use_state:
            state = batch["state"].to(self.device).float()
            if state.ndim != 2 or state.shape[1] != self.state_mean.shape[0]:
                raise ValueError(f"expected state [B, {self.state_mean.shape[0]}], got {tuple(state.shape)}")
            z = ((state - self.state_mean) / self.state_std).clamp(-STATE_Z_CLIP, STATE_Z_CLIP)
            parts.append(self.state_proj(z)[:, None] + self.type_emb[1])
            pads.append(torch.zeros(B, 1, dtype=torch.bool, device=obs.device))
        if self.cfg.use_instruction:
            tok, mask = self.text(list(batch["instruction"]))
            parts.append(self.text_proj(tok.to(self.device)) + self.type_emb[2])
            pads.append(~mask.to(self.device))
        return torch.cat(parts, dim=1), torch.cat(pads, dim=1)

    # --- training and inference ------------------------------------------------------------------
    def loss(self, batch: dict, finetune: bool = False) -> tuple[Tensor, dict]:
        """Denoising loss of the normalised action chunk (+ ``aux_weight`` x the object-state loss)."""
        obs = self.observation_tokens(batch, finetune)
        cond, pad = self.condition(batch, obs=obs)
        actions = self.normalize_actions(batch["actions"].to(self.device).float())
        loss = self.head.loss(actions, cond, pad)
        logs = {"loss": float(loss.detach())}
        if self.aux_head is not None:
            aux = self.aux_loss(obs, batch)
            logs.update(action_loss=logs["loss"], aux_loss=float(aux.detach()))
            loss = loss + self.cfg.aux_weight * aux
            logs["loss"] = float(loss.detach())
        return loss, logs

    def aux_loss(self, obs: Tensor, batch: dict) -> Tensor:
        """Mean squared error of the standardised object state [B, P] predicted from the decision
        frame's observation token (``obs`` [B, T, D]; the decision frame is the last memory frame)."""
        if "privileged" not in batch:
            raise ValueError("aux_weight > 0: the training batch has no 'privileged' object state")
        target = (batch["privileged"].to(self.device).float() - self.privileged_mean) / self.privileged_std
        return F.mse_loss(self.object_state(obs, standardised=True), target)

    def object_state(self, obs: Tensor, standardised: bool = False) -> Tensor:
        """The auxiliary head's object state [B, P] at the decision frame (the last memory frame) from
        observation tokens ``obs`` [B, T, D]; in the store's units unless ``standardised``."""
        z = self.aux_head(obs[:, self.cfg.n_memory - 1])
        return z if standardised else z * self.privileged_std + self.privileged_mean

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        return self.loss(batch, finetune=self.finetune_generator)

    @torch.no_grad()
    def predict(self, batch: dict, steps: int | None = None, seed: int | None = None) -> Tensor:
        """Action chunks [B, H, A] in robot units; the condition is computed once for all DDIM steps."""
        cond, pad = self.condition(batch, seed=seed)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.unnormalize_actions(self.head.sample(cond, pad, steps, g))

    # --- observation -> model inputs (shared by the dataset and the runtime) ----------------------
    def generator_inputs(
        self, memory: Tensor, K: np.ndarray, cams: np.ndarray, pos_memory: np.ndarray
    ) -> dict[str, Tensor]:
        """``memory`` latents [B, C, V, m, h, w]; K [B, V, 3, 3]; cams [B, V, m, 4, 4] (memory frames'
        T_cam_world; future frames reuse the latest); pos_memory [B, m] (frame index - current frame).
        Returns ``memory``, ``rays`` [B, 6, V, m+M, h, w] and ``pos`` [B, m+M]."""
        g = self.generator.cfg
        M, R = g.memory.chunk, g.resolution
        B = memory.shape[0]
        full = np.concatenate([cams, np.repeat(cams[:, :, -1:], M, axis=2)], axis=2)
        rays = torch.stack([ray_maps(K[b], full[b], R, memory.shape[-1]) for b in range(B)])
        # in generator frames (every frame_stride-th recorded frame); sparse memory may fall between them
        pos_memory = np.asarray(pos_memory, dtype=np.float64) / g.frame_stride
        pos = np.concatenate([pos_memory, np.broadcast_to(np.arange(1, M + 1), (B, M))], axis=1)
        return {"memory": memory, "rays": rays, "pos": torch.as_tensor(pos, dtype=torch.float32)}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
