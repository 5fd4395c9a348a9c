"""Policy training data: every frame (or every ``stride``-th) of every episode is a decision point.

An item at frame ``c`` of an episode: memory frames (``n_memory``: 3 spread over frames 0..c-1 + c, or
the latest ones for the consecutive ablation - the same rule the runtime applies to its history), the
state at ``c``, the instruction, and the action chunk ``action[c : c + H]``.

An episode's last frame is its terminal observation (the state the task was judged in); its action is
the recorder's synthetic "hold" (see ``sim.rollout.record_episode``), not a demonstrated one. So that
frame is never a decision point (nor, therefore, in any memory window), its action is left out of the
normalisation statistics, and a chunk that runs past the last demonstrated action
repeats that action (Diffusion Policy's edge padding). Padding with zero motion instead taught the
policy to stop wherever the scene looks like the end of a demonstration: on ``reach`` it froze 4-16 cm
short of the sphere (success needs 3 cm), which 64 px views cannot tell apart.

Episodes are read once into memory (views selected, images resized to the model's resolution).
EnerVerse-A with a frozen generator encodes every frame once with the codec and caches one feature
map per decision point (:meth:`PolicyData.cache_features`), so training the head never runs the
generator.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from enerverse.core.camera import scale_intrinsics
from enerverse.core.config import ConfigError
from enerverse.core.progress import progress
from enerverse.core.store import EpisodeStore, store_rig_version
from enerverse.core.store.sampler import memory_indices
from enerverse.data import encode_frames

STATE_STD_FLOOR = 1e-2
"""State dimensions that barely move in the demonstrations (e.g. a fixed gripper orientation) would
otherwise turn millimetre drift at test time into huge z-scores."""


def select_views(store_views: list[str], wanted: list[str] | None) -> list[int]:
    """Indices of the wanted views in the store's view list (all, in store order, when None)."""
    if wanted is None:
        return list(range(len(store_views)))
    missing = [v for v in wanted if v not in store_views]
    if missing:
        raise ConfigError(f"views {missing} are not in the store; it has {store_views}")
    return [store_views.index(v) for v in wanted]


def edge_padded(actions: np.ndarray, start: int, horizon: int) -> np.ndarray:
    """actions[start : start + horizon] [H, A], padded past the end by repeating the last action."""
    T = actions.shape[0]
    if not 0 <= start < T:
        raise IndexError(f"chunk start {start} outside the {T} demonstrated actions")
    idx = np.minimum(np.arange(start, start + horizon), T - 1)
    return actions[idx].astype(np.float32)


def resize_frames(rgb: np.ndarray, R: int) -> np.ndarray:
    """rgb [T, V, H, W, 3] uint8 -> [T, V, R, R, 3] (area interpolation)."""
    if rgb.shape[2:4] == (R, R):
        return rgb
    return np.stack([[cv2.resize(f, (R, R), interpolation=cv2.INTER_AREA) for f in fr] for fr in rgb])


class PolicyData:
    """Decision points of the given episodes (see module docstring)."""

    def __init__(
        self,
        store: EpisodeStore,
        episodes: list[int],
        views: list[str] | None,
        resolution: int,
        n_memory: int,
        horizon: int,
        memory_mode: str = "sparse",
        stride: int = 1,
        privileged: bool = False,
    ) -> None:
        """``privileged``: also load each frame's object state (the auxiliary target); ConfigError when
        an episode did not record it."""
        if stride < 1:
            raise ConfigError(f"decision stride must be >= 1, got {stride}")
        if not episodes:
            raise ConfigError(f"no episodes to train on in {store.path}")
        self.rig_version = store_rig_version(store)  # the camera rig the frames were recorded with
        first = store.episode(episodes[0]).attrs
        self.store_views = list(first["view_names"])
        self.view_idx = select_views(self.store_views, views)
        self.views = [self.store_views[i] for i in self.view_idx]
        self.resolution, self.n_memory, self.horizon = resolution, n_memory, horizon
        self.mode = "eval" if memory_mode == "sparse" else "consecutive"
        self.rgb, self.state, self.action, self.cams, self.K, self.instruction = [], [], [], [], [], []
        self.privileged: list[np.ndarray] | None = [] if privileged else None  # per episode [T, P]
        lacking: list[int] = []
        for e in progress(episodes, desc="load episodes", unit="ep"):
            ep = store.episode(e)
            if list(ep.attrs["view_names"]) != self.store_views:
                raise ConfigError(
                    f"episode {e} has views {ep.attrs['view_names']}, expected {self.store_views}"
                )
            rgb = ep.load("rgb")[:, self.view_idx]  # [T, V, H, W, 3]
            H = rgb.shape[2]
            self.rgb.append(resize_frames(rgb, resolution))
            K = ep.load("K")[self.view_idx].astype(np.float64)
            self.K.append(np.stack([scale_intrinsics(k, H, H, resolution, resolution) for k in K]))
            self.cams.append(ep.load("T_cam_world")[:, self.view_idx])  # [T, V, 4, 4]
            self.state.append(ep.load("state").astype(np.float32))
            self.action.append(ep.load("action").astype(np.float32))
            self.instruction.append(str(ep.attrs["instruction"]))
            if self.privileged is not None:
                if ep.has("privileged"):
                    self.privileged.append(ep.load("privileged").astype(np.float32))
                else:
                    lacking.append(e)
        if lacking:
            raise ConfigError(
                f"the auxiliary object-state loss (policy.aux_weight > 0) needs episodes that recorded "
                f"'privileged'; episodes {lacking[:5]} ({len(lacking)} of {len(episodes)}) did not. "
                f"Re-collect them with ev-collect, or set policy.aux_weight=0"
            )
        if self.privileged is not None and len({p.shape[1] for p in self.privileged}) > 1:
            raise ConfigError(
                f"episodes record privileged vectors of sizes {sorted({p.shape[1] for p in self.privileged})}"
            )
        short = [e for e, a in zip(episodes, self.action, strict=True) if len(a) < 2]
        if short:
            raise ConfigError(
                f"episodes {short[:5]} have fewer than 2 frames (a demonstrated action + the terminal frame)"
            )
        # the terminal frame (synthetic hold action) is not a decision point
        self.items = [(k, c) for k, a in enumerate(self.action) for c in range(0, len(a) - 1, stride)]
        self.features: torch.Tensor | None = None  # [N, V, T, C, h, w] float16 (frozen generator)
        self.latents: list[torch.Tensor] | None = None  # per episode [C, V, T, h, w] float16

    def __len__(self) -> int:
        return len(self.items)

    @property
    def state_dim(self) -> int:
        return int(self.state[0].shape[1])

    @property
    def privileged_dim(self) -> int:
        """P, the size of the object-state vector (0 when not loaded)."""
        return int(self.privileged[0].shape[1]) if self.privileged else 0

    def stats(self) -> dict[str, np.ndarray]:
        """Action min/max over the demonstrated actions (not the terminal hold), state (and object
        state) mean/std over every frame."""
        a, s = np.concatenate([x[:-1] for x in self.action]), np.concatenate(self.state)
        out = {
            "action_lo": a.min(0),
            "action_hi": a.max(0),
            "state_mean": s.mean(0),
            "state_std": np.maximum(s.std(0), STATE_STD_FLOOR),
        }
        if self.privileged:
            p = np.concatenate(self.privileged)
            out["privileged_mean"], out["privileged_std"] = p.mean(0), np.maximum(p.std(0), STATE_STD_FLOOR)
        return out

    def memory(self, k: int, c: int) -> np.ndarray:
        """Memory frame indices [n_memory] for decision point c of episode k."""
        return memory_indices(c, self.n_memory, self.mode)[0]

    def frames(self, k: int, idx: np.ndarray) -> torch.Tensor:
        """Frames [V, len(idx), 3, R, R] in [-1, 1]."""
        x = torch.from_numpy(self.rgb[k][idx])  # [T, V, R, R, 3]
        return x.permute(1, 0, 4, 2, 3).float() / 127.5 - 1.0

    def item(self, i: int) -> dict:
        """Everything but the observation encoding: state [S], actions [H, A], instruction (and the
        object state [P] when loaded)."""
        k, c = self.items[i]
        out = {
            "state": torch.from_numpy(self.state[k][c]),
            "actions": torch.from_numpy(edge_padded(self.action[k][:-1], c, self.horizon)),
            "instruction": self.instruction[k],
        }
        if self.privileged is not None:
            out["privileged"] = torch.from_numpy(self.privileged[k][c])
        return out

    def batch(self, items: list[int], kind: str, policy=None) -> dict:
        """A training batch + state/actions/text: ``frames`` (kind cnn), cached ``features``
        (enerverse) or generator inputs from cached latents (enerverse_inputs, fine-tuning)."""
        rows = [self.item(i) for i in items]
        out = {
            "state": torch.stack([r["state"] for r in rows]),
            "actions": torch.stack([r["actions"] for r in rows]),
            "instruction": [r["instruction"] for r in rows],
        }
        if self.privileged is not None:
            out["privileged"] = torch.stack([r["privileged"] for r in rows])
        if kind == "cnn":
            out["frames"] = torch.stack(
                [self.frames(k, self.memory(k, c)) for k, c in (self.items[i] for i in items)]
            )
        elif kind == "enerverse_inputs":
            if self.latents is None:
                raise RuntimeError("call cache_latents(generator) before drawing fine-tuning batches")
            out.update(self.generator_batch(policy, self.latents, items))
        else:
            if self.features is None:
                raise RuntimeError("call cache_features(policy) before drawing EnerVerse-A batches")
            out["features"] = self.features[items].float()
        return out

    def cache_latents(self, gen) -> list[torch.Tensor]:
        """Codec latents of every frame, per episode [C, V, T, h, w] (float16) -> self.latents."""
        self.latents = [
            encode_frames(
                gen, lambda sl, k=k: self.frames(k, np.arange(len(self.rgb[k]))[sl]), len(self.rgb[k]), 32
            )
            for k in progress(range(len(self.rgb)), desc="encode frames", unit="ep")
        ]
        return self.latents

    @torch.no_grad()
    def cache_features(self, policy, batch_size: int = 16, seed: int = 0) -> None:
        """Encode every frame once, then one generator forward per decision point -> self.features
        [N, V, T, C, h, w] float16 (T = n_memory + chunk)."""
        gen = policy.generator
        latents = self.latents if self.latents is not None else self.cache_latents(gen)
        feats = None
        bar = progress(total=len(self.items), desc="generator features", unit="window")
        for s in range(0, len(self.items), batch_size):
            items = list(range(s, min(len(self.items), s + batch_size)))
            inputs = self.generator_batch(policy, latents, items)
            f = (
                gen.extract_features(
                    inputs["memory"].to(gen.device),
                    inputs["rays"].to(gen.device),
                    inputs["pos"].to(gen.device),
                    inputs["instruction"],
                    seed=seed + s,
                    block=policy.cfg.encoder.block,
                )
                .cpu()
                .half()
            )
            if feats is None:
                feats = torch.empty((len(self.items), *f.shape[1:]), dtype=torch.float16)
            feats[s : s + len(items)] = f
            bar.update(len(items))
        bar.close()
        self.features = feats

    def generator_batch(self, policy, latents: list[torch.Tensor], items: list[int]) -> dict:
        """Generator inputs (memory latents, rays, pos, instruction) for decision points ``items``."""
        mem, Ks, cams, pos = [], [], [], []
        for i in items:
            k, c = self.items[i]
            idx = self.memory(k, c)
            mem.append(latents[k][:, :, idx].float())
            Ks.append(self.K[k])
            cams.append(np.transpose(self.cams[k][idx], (1, 0, 2, 3)))  # [V, m, 4, 4]
            pos.append(idx - c)
        out = policy.generator_inputs(torch.stack(mem), np.stack(Ks), np.stack(cams), np.stack(pos))
        out["instruction"] = [self.instruction[self.items[i][0]] for i in items]
        return out
