"""Training windows for the generator: episode-store windows -> tensors for ``training_loss``.

Each item: ``frames`` [V, n_memory + M, 3, R, R] in [-1, 1] (chunk frames past the episode's end are
the EoS frame) - or, with a latent cache, ``latents`` [C, V, n_memory + M, h, w] (the EoS latent past
the end) - plus ``rays`` [6, V, n_memory + M, h, w], ``pos`` [n_memory + M] (frame index minus the
current frame) and ``instruction`` (str). Memory frames follow the config: sparse (random history in
training, spread in evaluation) or consecutive (the ablation).

With the codec frozen (generator stage), encoding every frame once (:func:`encode_episodes`) instead of
every window on every step makes CPU training several times faster.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from enerverse.core.camera import ray_maps, scale_intrinsics
from enerverse.core.config import ConfigError
from enerverse.core.frames import resize_frames, to_model
from enerverse.core.progress import progress
from enerverse.core.store import EpisodeStore, WindowSampler
from enerverse.generator import EOS_VALUE
from enerverse.presets import GeneratorConfig


def memory_mode(cfg: GeneratorConfig, train: bool) -> str:
    """The WindowSampler mode for a config: sparse memory samples randomly in training."""
    if cfg.memory.mode == "consecutive":
        return "consecutive"
    return "train" if train else "sparse"


def load_frames(store: EpisodeStore, episode: int, idx, resolution: int) -> tuple[torch.Tensor, np.ndarray]:
    """Frames [V, T, 3, R, R] in [-1, 1] at frame indices ``idx`` and K [V, 3, 3] scaled to R."""
    ep = store.episode(episode)
    rgb = ep.load("rgb", idx)  # [T, V, H, W, 3] uint8
    T, V, H, W = rgb.shape[:4]
    K = ep.load("K").astype(np.float64)
    if (H, W) != (resolution, resolution):
        R = resolution
        rgb = resize_frames(rgb, R)
        K = np.stack([scale_intrinsics(K[v], W, H, R, R) for v in range(V)])
    return to_model(rgb).transpose(0, 1), K  # [T, V, 3, R, R] -> [V, T, 3, R, R]


@torch.no_grad()
def encode_frames(
    model, frames: Callable[[slice], torch.Tensor], length: int, batch_frames: int = 16
) -> torch.Tensor:
    """Latents [C, V, T, h, w] (float16, CPU) of ``length`` frames, encoded ``batch_frames`` at a time;
    ``frames(slice)`` returns those frames [V, t, 3, R, R] in [-1, 1]."""
    chunks = [
        model.encode(frames(slice(s, min(length, s + batch_frames)))[None].to(model.device))[0].cpu()
        for s in range(0, length, batch_frames)
    ]
    return torch.cat(chunks, dim=2).half()


def encode_episodes(
    model, store: EpisodeStore, episodes: list[int], batch_frames: int = 16
) -> dict[int, torch.Tensor]:
    """Latents of every frame of ``episodes``: {episode: [C, V, T, h, w] float16 on CPU}."""
    R = model.cfg.resolution
    return {
        e: encode_frames(
            model, lambda sl, e=e: load_frames(store, e, sl, R)[0], store.episode(e).length, batch_frames
        )
        for e in progress(episodes, desc="encode latents", unit="ep")
    }


class GeneratorWindows(Dataset):
    """Windows of an episode store as generator training items (see module docstring)."""

    def __init__(
        self,
        store: EpisodeStore,
        cfg: GeneratorConfig,
        train: bool = True,
        seed: int = 0,
        episodes: list[int] | None = None,
        aligned: bool = False,
    ) -> None:
        """``aligned``: with ``cfg.frame_stride`` k > 1, only windows whose frames are all multiples of
        k (what a latent cache of every k-th frame holds, see :mod:`enerverse.latent_cache`)."""
        self.store, self.cfg = store, cfg
        self.sampler = WindowSampler(
            store,
            chunk=cfg.memory.chunk,
            n_memory=cfg.memory.n_memory,
            action_horizon=1,
            mode=memory_mode(cfg, train),
            seed=seed,
            stride=cfg.frame_stride,
            aligned=aligned,
            uniform_prob=cfg.memory.train_uniform_prob,
        )
        eps = [int(e) for e in self.sampler.episode_indices]
        self.views = {e: store.episode(e) for e in eps}  # opened once: zarr metadata reads add up
        self.instructions = {e: str(v.attrs["instruction"]) for e, v in self.views.items()}
        self.K = {e: v.load("K").astype(np.float64) for e, v in self.views.items()}
        self.sizes = {e: int(v.rgb.shape[2]) for e, v in self.views.items()}
        if episodes is not None:  # restrict to a split, keeping the sampler's enumeration
            keep = set(episodes)
            self.items = [i for i in range(len(self.sampler)) if self.sampler.locate(i)[0] in keep]
        else:
            self.items = list(range(len(self.sampler)))
        self.latents: dict[int, torch.Tensor] | None = None
        self.eos_latent: torch.Tensor | None = None
        if eps:
            V = len(self.views[eps[0]].attrs["view_names"])
            if V != cfg.num_views:
                raise ConfigError(
                    f"the store has {V} views per frame but the generator config expects "
                    f"num_views={cfg.num_views} (set generator.num_views={V} or use another store)"
                )

    def use_latents(self, latents: dict[int, torch.Tensor], eos_latent: torch.Tensor) -> None:
        """Serve cached latents (from :func:`encode_episodes`) instead of decoding images."""
        self.latents, self.eos_latent = latents, eos_latent.detach().cpu()

    def episodes(self) -> list[int]:
        """Store indices of the episodes this dataset draws windows from."""
        return sorted({self.sampler.locate(i)[0] for i in self.items})

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw sparse memory frames for a new epoch."""
        self.sampler.set_epoch(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Window ``key``, or ``(i, epoch)``: window i with the sparse memory drawn for that epoch
        (how DataLoader workers ask, see :mod:`enerverse.core.loader`)."""
        i, epoch = key if isinstance(key, tuple) else (key, None)
        if epoch is not None:
            self.sampler.set_epoch(epoch)
        w = self.sampler.window(self.items[i])
        e, R, m = int(w["episode"]), self.cfg.resolution, self.cfg.memory.n_memory
        idx = np.concatenate([w["memory_idx"], w["chunk_idx"]])
        past_end = torch.from_numpy(~w["chunk_mask"])
        item: dict = {}
        if self.latents is not None:
            k = getattr(self.latents, "stride", 1)  # the cache may hold every k-th frame only
            if k > 1 and (idx % k).any():
                raise ValueError(f"window frames {idx.tolist()} are not all on the cache's grid of every {k}")
            z = self.latents[e][:, :, idx // k].float()  # [C, V, T, h, w]
            z[:, :, m:][:, :, past_end] = self.eos_latent[:, None, None]
            item["latents"] = z
            K, H = self.K[e], self.sizes[e]
            if H != R:
                K = np.stack([scale_intrinsics(k, H, H, R, R) for k in K])
        else:
            frames, K = load_frames(self.store, e, idx, R)
            frames[:, m:][:, past_end] = EOS_VALUE
            item["frames"] = frames
        cams = np.transpose(self.views[e].load("T_cam_world", idx), (1, 0, 2, 3))  # [V, T, 4, 4]
        # positions in generator frames (every frame_stride-th recorded frame) relative to the present
        pos = np.concatenate(
            [(w["memory_idx"] - w["c"]) // w["stride"], np.arange(1, len(w["chunk_idx"]) + 1)]
        )
        item.update(
            {
                "rays": torch.from_numpy(ray_maps(K, cams, R, R // self.cfg.codec.factor)),
                "pos": torch.from_numpy(pos.astype(np.float32)),
                "instruction": self.instructions[e],
            }
        )
        return item


def collate(items: list[dict]) -> dict:
    """Stack items into a batch (instructions stay a list)."""
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "instruction"}
    out["instruction"] = [it["instruction"] for it in items]
    return out
