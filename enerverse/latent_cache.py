"""On-disk cache of codec latents, one file per episode, for streaming generator training.

With the codec frozen, every frame is encoded once and training reads latents instead of images.
Six tasks x 200 episodes of 128 px frames do not fit in memory as images; their latents are a few
GB on disk and a DataLoader's workers read them episode by episode (a small per-process LRU keeps
the episodes in use). Layout::

    <root>/codec.json                           fingerprint of the codec that wrote the cache
    <root>/<store name>-<hash>-k<stride>/episode_000012.safetensors   {"latents": float16 [C, V, T', h, w]}

With ``stride`` k the cache holds frames 0, k, 2k, ... only (T' = ceil(T / k)): what a generator with
``frame_stride`` k reads from windows aligned to that grid, at 1/k of the encoding time and disk.

Files are written atomically (temporary file, then rename), so an interrupted encode resumes with the
episodes still missing. A cache written by another encoder (different weights or latent scale) is discarded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from enerverse.codec import DECODER_PREFIX
from enerverse.core.fsutil import write_json_atomic
from enerverse.core.progress import progress
from enerverse.core.store import EpisodeStore


def codec_fingerprint(codec: torch.nn.Module, decoder: bool = False) -> str:
    """sha1 of what decides the latents: the codec's weights and buffers (its latent scale included)
    except the decoder's, so a decoder fine-tune (``codec_decoder_only``) keeps a cache valid.
    ``decoder=True``: every weight, the fingerprint caches written before 2026-12-01 hold."""
    h = hashlib.sha1()
    for k, v in sorted(codec.state_dict().items()):
        if k.startswith(DECODER_PREFIX) and not decoder:
            continue
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def store_key(store: EpisodeStore, stride: int = 1) -> str:
    """Folder name of a store's latents: its name, a hash of its absolute path and the frame stride."""
    path = Path(store.path).resolve()
    return f"{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}-k{stride}"


class EpisodeLatents:
    """Mapping episode index -> latents [C, V, T', h, w] (float16) of one store, read from the cache
    with a small LRU (per process: each DataLoader worker keeps its own). ``stride``: the cached
    frames are every stride-th one (latent t' is frame t' * stride)."""

    def __init__(self, folder: Path, capacity: int = 32, stride: int = 1) -> None:
        self.folder, self.capacity, self.stride = Path(folder), capacity, stride
        self._lru: OrderedDict[int, torch.Tensor] = OrderedDict()

    def file(self, episode: int) -> Path:
        return self.folder / f"episode_{episode:06d}.safetensors"

    def __contains__(self, episode: int) -> bool:
        return self.file(episode).is_file()

    def __getitem__(self, episode: int) -> torch.Tensor:
        if episode in self._lru:
            self._lru.move_to_end(episode)
            return self._lru[episode]
        z = load_file(str(self.file(episode)))["latents"]
        self._lru[episode] = z
        if len(self._lru) > self.capacity:
            self._lru.popitem(last=False)
        return z

    def __getstate__(self) -> dict:  # workers start with an empty LRU, not a copy of the parent's
        return {"folder": self.folder, "capacity": self.capacity, "stride": self.stride}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], state["capacity"], state["stride"])


class LatentCache:
    """The cache folder of one training run (see module docstring)."""

    def __init__(self, root: str | os.PathLike, codec: torch.nn.Module) -> None:
        self.root = Path(root)
        fingerprint = codec_fingerprint(codec)
        meta = self.root / "codec.json"
        stored = json.loads(meta.read_text()).get("fingerprint") if meta.is_file() else fingerprint
        if stored == codec_fingerprint(codec, decoder=True):
            write_json_atomic(meta, {"fingerprint": fingerprint})  # an older cache of this very codec
        elif stored != fingerprint:
            shutil.rmtree(self.root)  # written by another encoder: every latent is stale
        self.root.mkdir(parents=True, exist_ok=True)
        if not meta.is_file():
            write_json_atomic(meta, {"fingerprint": fingerprint})

    @classmethod
    def existing(cls, root: str | os.PathLike, codec: torch.nn.Module) -> LatentCache | None:
        """A cache at ``root`` to read, or None when there is none or another encoder wrote it;
        unlike the constructor it never deletes or writes anything."""
        meta = Path(root) / "codec.json"
        if not meta.is_file():
            return None
        stored = json.loads(meta.read_text()).get("fingerprint")
        if stored not in (codec_fingerprint(codec), codec_fingerprint(codec, decoder=True)):
            return None
        cache = cls.__new__(cls)
        cache.root = Path(root)
        return cache

    def episodes(self, store: EpisodeStore, stride: int = 1) -> EpisodeLatents:
        return EpisodeLatents(self.root / store_key(store, stride), stride=stride)

    def fill(
        self, model, store: EpisodeStore, episodes: list[int], stride: int = 1, batch_frames: int = 16
    ) -> EpisodeLatents:
        """Encode the episodes not cached yet (frames 0, stride, 2 stride, ... at the model's
        resolution); return the reader."""
        import numpy as np

        from enerverse.data import encode_frames, load_frames

        out = self.episodes(store, stride)
        out.folder.mkdir(parents=True, exist_ok=True)
        todo = [e for e in episodes if e not in out]
        R = model.cfg.resolution
        for e in progress(todo, desc=f"encode {store.path.name}", unit="ep"):
            length = -(-store.episode(e).length // stride)  # grid frames: ceil(T / stride)

            def frames(sl: slice, e: int = e) -> torch.Tensor:
                return load_frames(store, e, np.arange(sl.start, sl.stop) * stride, R)[0]

            z = encode_frames(model, frames, length, batch_frames)
            tmp = out.file(e).with_suffix(".tmp")
            save_file({"latents": z.contiguous()}, str(tmp))
            os.replace(tmp, out.file(e))
        return out
