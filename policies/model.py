"""The diffusion policy: observation encoder -> condition tokens -> DiT action head.

``DiffusionPolicy`` holds a registered observation encoder (:mod:`policies.encoder_api`), the generator
it reads (if any), the head, and the normalisation statistics as buffers, so one safetensors file
restores everything. Batches:

- the encoder's inputs: ``features`` [B, V, T, C, h, w] (cached generator features) or ``memory``
  latents [B, C, V, m, h, w] with ``rays`` [B, 6, V, m+M, h, w] and ``pos`` [B, m+M] (EnerVerse-A);
  ``frames`` [B, V, m, 3, R, R] in [-1, 1] (baseline); both (fused);
- ``state`` [B, S] (raw), ``instruction`` list[str];
- ``actions`` [B, H, A] (raw; training only);
- ``privileged`` [B, P] (raw object state at the decision frame; training with ``aux_weight`` > 0 only).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from enerverse.core.config import ConfigError
from enerverse.text import shared_text_encoder
from policies.config import PolicyConfig
from policies.encoder_api import DataSpec, InputFeature, encoder_class
from policies.head import ActionHead

STATE_Z_CLIP = 5.0  # standardised state beyond the demonstrations' range is clipped, not extrapolated


class DiffusionPolicy(nn.Module):
    """EnerVerse-A, the image baseline or the fused variant (``encoder.kind``); see module docstring."""

    def __init__(self, cfg: PolicyConfig, spec: DataSpec | dict, generator: nn.Module | None = None) -> None:
        """``spec``: the training data's views, resolution, state size, text encoder (and ``privileged_dim``,
        needed when ``cfg.aux_weight`` > 0); a checkpoint's ``meta`` dict is read into a DataSpec."""
        super().__init__()
        cfg.validate()
        self.cfg, self.spec = cfg, DataSpec.from_dict(spec)
        D, S = cfg.head.dim, int(self.spec.state_dim)
        self.generator = generator if encoder_class(cfg.encoder.kind).needs_generator else None
        self.encoder = encoder_class(cfg.encoder.kind)(cfg, self.spec, D, self.generator)
        self.text_key = self.encoder.text_key
        self.state_proj = nn.Linear(S, D)
        self.text_proj = nn.Linear(self.text.dim, D)
        self.type_emb = nn.Parameter(torch.zeros(3, D))  # observation / state / instruction tokens
        self.head = ActionHead(cfg.head)
        self.finetune_generator = False  # training: the policy loss also trains the generator's denoiser
        self.video_weight = 0.0  # training: + this x the generator's video loss (one-stage co-training)
        A = cfg.head.action_dim
        self.register_buffer("action_lo", -torch.ones(A))
        self.register_buffer("action_hi", torch.ones(A))
        self.register_buffer("state_mean", torch.zeros(S))
        self.register_buffer("state_std", torch.ones(S))
        self.aux_head: nn.Module | None = None  # training only: object state from the decision frame's token
        if cfg.aux_weight > 0:
            P = self.spec.privileged_dim
            if P <= 0:
                raise ConfigError("aux_weight > 0 needs the data's privileged_dim > 0 (an object state)")
            self.aux_head = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(), nn.Linear(D, P))
            if cfg.aux_condition:
                self.aux_proj = nn.Linear(P, D)  # the object-state estimate as a condition token
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

    @property
    def meta(self) -> dict:
        """The data spec as saved in a checkpoint's config.json."""
        return self.spec.to_dict()

    def input_features(self) -> list[InputFeature]:
        """Every observation entry the policy reads: its encoder's and the state."""
        return [*self.encoder.input_features(), InputFeature("state", "float", (self.spec.state_dim,))]

    def observation_tokens(self, batch: dict, finetune: bool = False, seed: int | None = None) -> Tensor:
        """Observation tokens [B, T, D] from an encoder batch (see module docstring)."""
        return self.encoder(batch, finetune, seed)

    def condition(
        self,
        batch: dict,
        finetune: bool = False,
        seed: int | None = None,
        obs: Tensor | None = None,
        teacher: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Condition tokens [B, L, D] and their padding mask [B, L] (True = ignore); ``obs`` [B, T, D]:
        observation tokens already computed; ``teacher``: training, where ``aux_teacher`` applies."""
        raw = self.observation_tokens(batch, finetune, seed) if obs is None else obs
        obs = raw + self.type_emb[0]
        B = obs.shape[0]
        parts, pads = [obs], [torch.zeros(B, obs.shape[1], dtype=torch.bool, device=obs.device)]
        if self.cfg.aux_condition:  # the estimate is trained by the auxiliary loss only
            est = self.object_state(raw, standardised=True).detach()
            if teacher and self.cfg.aux_teacher > 0:
                est = self.teacher_estimate(est, batch)
            parts.append(self.aux_proj(est)[:, None])
            pads.append(torch.zeros(B, 1, dtype=torch.bool, device=obs.device))
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

    def teacher_estimate(self, est: Tensor, batch: dict) -> Tensor:
        """``est`` [B, P] (standardised) with an ``aux_teacher`` fraction of its rows replaced by the
        simulator's object state + noise (entries the task lacks, NaN, keep the estimate)."""
        true = self.standardised_privileged(batch, "aux_teacher > 0")
        noisy = true + self.cfg.aux_teacher_noise * torch.randn_like(true)
        rows = torch.rand(est.shape[0], 1, device=est.device) < self.cfg.aux_teacher
        return torch.where(rows & torch.isfinite(true), noisy, est)

    def standardised_privileged(self, batch: dict, who: str) -> Tensor:
        """The batch's simulator object state [B, P], standardised (NaN where the task lacks it)."""
        if "privileged" not in batch:
            raise ValueError(f"{who}: the training batch has no 'privileged' object state")
        return (batch["privileged"].to(self.device).float() - self.privileged_mean) / self.privileged_std

    # --- training and inference ------------------------------------------------------------------
    def loss(self, batch: dict, finetune: bool = False) -> tuple[Tensor, dict]:
        """Denoising loss of the normalised action chunk (+ ``aux_weight`` x the object-state loss, +
        ``video_weight`` x the generator's video loss on the window's ``latents``)."""
        obs = self.observation_tokens(batch, finetune)
        cond, pad = self.condition(batch, obs=obs, teacher=True)
        actions = self.normalize_actions(batch["actions"].to(self.device).float())
        loss = self.head.loss(actions, cond, pad)
        logs = {"loss": float(loss.detach())}
        if self.aux_head is not None or self.video_weight > 0:
            logs["action_loss"] = logs["loss"]
        if self.aux_head is not None:
            aux = self.aux_loss(obs, batch)
            logs["aux_loss"] = float(aux.detach())
            loss = loss + self.cfg.aux_weight * aux
        if self.video_weight > 0:
            if "latents" not in batch:
                raise ValueError("video_weight > 0: the batch has no window 'latents' for the video loss")
            video, _ = self.generator.training_loss(
                {k: batch[k] for k in ("latents", "rays", "pos", "instruction")}
            )
            logs["video_loss"] = float(video.detach())
            loss = loss + self.video_weight * video
        logs["loss"] = float(loss.detach())
        return loss, logs

    def aux_loss(self, obs: Tensor, batch: dict) -> Tensor:
        """Mean squared error (over the known entries) of the standardised object state [B, P] predicted
        from the decision frame's tokens (``obs`` [B, T, D]; the encoder's ``decision_tokens``)."""
        target = self.standardised_privileged(batch, "aux_weight > 0")
        known = torch.isfinite(target)  # NaN: the task has no such object (multi-task padding)
        err = (self.object_state(obs, standardised=True) - target.nan_to_num()).square() * known
        return err.sum() / known.sum().clamp_min(1)

    def object_state(self, obs: Tensor, standardised: bool = False) -> Tensor:
        """The auxiliary head's object state [B, P] at the decision frame from observation tokens ``obs``
        [B, T, D] (the mean of the encoder's ``decision_tokens``); in the store's units unless
        ``standardised``."""
        z = self.aux_head(obs[:, self.encoder.decision_tokens].mean(dim=1))
        return z if standardised else z * self.privileged_std + self.privileged_mean

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        return self.loss(batch, finetune=self.finetune_generator)

    @torch.no_grad()
    def predict(self, batch: dict, steps: int | None = None, seed: int | None = None) -> Tensor:
        """Action chunks [B, H, A] in robot units; the condition is computed once for all DDIM steps."""
        cond, pad = self.condition(batch, seed=seed)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.unnormalize_actions(self.head.sample(cond, pad, steps, g))

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
