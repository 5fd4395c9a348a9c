"""Training windows for the generator: episode-store windows -> tensors for ``training_loss``.

Each item: ``frames`` [V, n_memory + M, 3, R, R] in [-1, 1] (chunk frames past the episode's end are
the EoS frame), ``rays`` [6, V, n_memory + M, h, w], ``pos`` [n_memory + M] (frame index minus the
current frame), ``instruction`` (str). Memory frames follow the config: sparse (random history in
training, spread in evaluation) or consecutive (the ablation).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from enerverse.core.camera import scale_intrinsics
from enerverse.core.store import EpisodeStore, WindowSampler
from enerverse.generator import EOS_VALUE, ray_maps
from enerverse.presets import GeneratorConfig


def memory_mode(cfg: GeneratorConfig, train: bool) -> str:
    """The WindowSampler mode for a config: sparse memory samples randomly in training."""
    if cfg.memory.mode == "consecutive":
        return "consecutive"
    return "train" if train else "eval"


class GeneratorWindows(Dataset):
    """Windows of an episode store as generator training items (see module docstring)."""

    def __init__(
        self,
        store: EpisodeStore,
        cfg: GeneratorConfig,
        train: bool = True,
        seed: int = 0,
        episodes: list[int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.sampler = WindowSampler(
            store,
            chunk=cfg.memory.chunk,
            n_memory=cfg.memory.n_memory,
            action_horizon=1,
            mode=memory_mode(cfg, train),
            seed=seed,
        )
        self.instructions = {
            int(e): str(store.episode(int(e)).attrs["instruction"]) for e in self.sampler.episode_indices
        }
        if episodes is not None:  # restrict to a split, keeping the sampler's enumeration
            keep = set(episodes)
            self.items = [i for i in range(len(self.sampler)) if self.sampler.locate(i)[0] in keep]
        else:
            self.items = list(range(len(self.sampler)))
        if self.sampler.episode_indices.size:
            V = len(store.episode(int(self.sampler.episode_indices[0])).attrs["view_names"])
            if V != cfg.num_views:
                raise ValueError(
                    f"the store has {V} views per frame but the generator config expects "
                    f"num_views={cfg.num_views}"
                )

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw sparse memory frames for a new epoch."""
        self.sampler.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict:
        w = self.sampler.get(self.items[i], keys=("rgb", "T_cam_world", "K"))
        rgb = w["rgb"]  # [T, V, H, W, 3] uint8
        T, V, H, W = rgb.shape[:4]
        R = self.cfg.resolution
        K = w["K"].astype(np.float64)
        if (H, W) != (R, R):
            rgb = np.stack(
                [
                    [cv2.resize(rgb[t, v], (R, R), interpolation=cv2.INTER_AREA) for v in range(V)]
                    for t in range(T)
                ]
            )
            K = np.stack([scale_intrinsics(K[v], W, H, R, R) for v in range(V)])
        frames = torch.from_numpy(rgb).permute(1, 0, 4, 2, 3).float() / 127.5 - 1.0  # [V, T, 3, R, R]
        m = self.cfg.memory.n_memory
        past_end = ~w["chunk_mask"]
        frames[:, m:][:, torch.from_numpy(past_end)] = EOS_VALUE
        cams = np.transpose(w["T_cam_world"], (1, 0, 2, 3))  # [V, T, 4, 4]
        latent = R // self.cfg.codec.factor
        pos = np.concatenate([w["memory_idx"] - w["c"], np.arange(1, len(w["chunk_idx"]) + 1)])
        return {
            "frames": frames,
            "rays": ray_maps(K, cams, R, latent),
            "pos": torch.from_numpy(pos.astype(np.float32)),
            "instruction": self.instructions[w["episode"]],
        }


def collate(items: list[dict]) -> dict:
    """Stack items into a batch (instructions stay a list)."""
    return {
        "frames": torch.stack([it["frames"] for it in items]),
        "rays": torch.stack([it["rays"] for it in items]),
        "pos": torch.stack([it["pos"] for it in items]),
        "instruction": [it["instruction"] for it in items],
    }
