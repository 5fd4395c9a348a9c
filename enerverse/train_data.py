"""Training data of ``ev-train-generator``: one or several episode stores, their train/held-out
splits, codec frames, and generator windows streamed from the latent cache.

A multi-task run (``stores=[...]``) trains on every episode of each store (each store split on its
own); a single-store run on the episodes of ``task``. Windows of all stores form one dataset, read by
a DataLoader with worker processes (see :mod:`enerverse.core.loader`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from enerverse.core.batch_order import distributed_info, epoch_batches
from enerverse.core.config import ConfigError
from enerverse.core.frames import resize_frames, to_model
from enerverse.core.loader import loader_batches
from enerverse.core.store import EpisodeStore, StoreFormatError, store_rig_version
from enerverse.data import GeneratorWindows, collate
from enerverse.io import split_episodes
from enerverse.latent_cache import LatentCache
from enerverse.presets import GeneratorConfig


@dataclass
class Source:
    """One episode store with its training and held-out episodes."""

    store: EpisodeStore
    train: list[int]
    held: list[int]


def open_sources(
    paths: list[Path],
    task: str | None,
    holdout: float,
    seed: int,
    resolution: int,
    episodes: int | None = None,
) -> list[Source]:
    """Open and split the stores (``task``: only that task's episodes; None: all; ``episodes``: at most
    this many training episodes per store). All stores must share one camera rig and recording rate:
    a generator learns one of each."""
    sources = []
    for path in paths:
        if not path.exists():
            raise ConfigError(
                f"no episode store at {path}; create one with: ev-collect task={task or '<task>'} "
                f"episodes=200 out={path} resolution={resolution} seg=true"
            )
        store = EpisodeStore.open(path)
        train, held = split_episodes(store, holdout, seed, task=task)
        sources.append(Source(store, train[:episodes] if episodes else train, held))
    for key, value in (("camera rig", store_rig_version), ("fps", _fps)):
        seen = {str(s.store.path): value(s.store) for s in sources}
        if len(set(seen.values())) > 1:
            raise StoreFormatError(f"the stores differ in {key}: {seen}; train on stores of one {key}")
    return sources


def _fps(store: EpisodeStore) -> float:
    return float(store.episode(store.indices()[0]).attrs["fps"])


def frame_batches(sources: list[Source], resolution: int, per_batch: int, seed: int, data_state: dict):
    """Single frames for the codec stage (all views of ``per_batch`` frames), resumable: images
    [N, 3, R, R] in [-1, 1], or, when every episode recorded segmentation, {"images", "masks"
    [N, R, R] bool (object pixels)}."""
    index = [(s.store, e, t) for s in sources for e in s.train for t in range(s.store.episode(e).length)]
    with_masks = all(s.store.episode(e).has("seg") for s in sources for e in s.train)
    R = resolution

    def get(items: list[int], epoch: int):
        imgs, masks = [], []
        for i in items:
            store, e, t = index[i]
            ep = store.episode(e)
            imgs.append(resize_frames(ep.load("rgb", t), R))  # [V, R, R, 3]
            if with_masks:
                masks.append(resize_frames(ep.load("seg", t), R, nearest=True) > 0)  # [V, R, R]
        images = to_model(np.concatenate(imgs))
        return {"images": images, "masks": torch.from_numpy(np.concatenate(masks))} if with_masks else images

    return epoch_batches(len(index), per_batch, seed, data_state, get)


def images_of(batch: torch.Tensor | dict) -> torch.Tensor:
    """The images [N, 3, R, R] of a codec batch (with or without masks)."""
    return batch["images"] if isinstance(batch, dict) else batch


def calibration_images(sources: list[Source], resolution: int, per_batch: int, seed: int, batches: int):
    """Image batches [N, 3, R, R] for the codec's latent-scale calibration: the frame order of an epoch
    far from any the training reached, so the same frames every time (a generator of ``batches``)."""
    calib = frame_batches(sources, resolution, per_batch, seed, {"epoch": 10_000, "index": 0})
    return (images_of(next(calib)) for _ in range(batches))


class WindowUnion(Dataset):
    """The windows of several :class:`GeneratorWindows` as one dataset, indexed by ``(i, epoch)``."""

    def __init__(self, parts: list[GeneratorWindows]) -> None:
        self.parts = [p for p in parts if len(p)]
        if not self.parts:
            raise ConfigError("no training windows: the episodes are shorter than one frame stride")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, epoch = key
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k][(i - int(self.offsets[k]), epoch)]


def generator_batches(
    sources: list[Source],
    gen,
    cfg: GeneratorConfig,
    cache_dir: Path,
    batch_size: int,
    seed: int,
    workers: int,
):
    """(batches(data_state) for the Trainer, held-out windows for sample grids): windows of every
    source's training episodes, their latents encoded into the cache at ``cache_dir`` first
    (resumable; under DDP rank 0 encodes while the others wait)."""
    k = cfg.frame_stride  # windows on frame 0's grid: the cache encodes every k-th frame only
    parts = [
        GeneratorWindows(s.store, cfg, train=True, seed=seed, episodes=s.train, aligned=k > 1)
        for s in sources
    ]
    rank, _, world = distributed_info()
    if rank == 0:
        cache = LatentCache(cache_dir, gen.codec)
        for s, w in zip(sources, parts):
            cache.fill(gen, s.store, w.episodes(), stride=k)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    cache = LatentCache(cache_dir, gen.codec)  # rank 0 wrote the fingerprint: nothing is discarded
    for s, w in zip(sources, parts):
        w.use_latents(cache.episodes(s.store, k), gen.eos_latent())
    data = WindowUnion(parts)
    first = sources[0]
    held = GeneratorWindows(first.store, cfg, train=False, seed=seed, episodes=first.held or first.train)

    def batches(data_state: dict):
        return loader_batches(data, batch_size, seed, data_state, collate, workers)

    return batches, held
