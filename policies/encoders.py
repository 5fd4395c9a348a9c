"""The registered observation encoders (the contract: :mod:`policies.encoder_api`).

- ``enerverse`` (:class:`FutureSpaceEncoder`, EnerVerse-A): the generator's features (the first down
  level, the middle block, or both) from one forward over [memory frames + noise frames] (at the
  noisiest timestep unless ``noise_level`` says otherwise), pooled over views and space to one token
  per frame (T = n_memory + chunk, or every ``token_stride``-th of them), then an MLP.
  ``pool="keypoints"`` (default) runs a small conv and a spatial softmax per view, so the token says
  where things are; ``"attention"`` is a learned
  query per frame over (view, position) tokens; ``"mean"`` is the paper's mean over views and space.
  History items: frames whose codec latents are computed when first read as memory, + cameras.
- ``cnn`` (:class:`ImageEncoder`, the baseline): a small CNN with GroupNorm and spatial-softmax
  keypoints (Diffusion Policy style) per view and memory frame, one token per frame (T = n_memory,
  or the newest ``encoder.image_frames``).
  History items: frames.
- ``fused`` (:class:`FusedEncoder`): both token sets side by side (T = n_memory + chunk + image frames),
  the future-space tokens next to the current-observation image tokens, as VPP, Seer and GE-Act read;
  with ``future_gate`` the future tokens pass a zero-initialised tanh gate (it starts as the baseline).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from enerverse.core.camera import ray_maps
from enerverse.core.config import ConfigError
from enerverse.core.frames import to_model
from enerverse.core.progress import progress
from enerverse.core.store.sampler import chunk_indices
from enerverse.data import encode_frames
from policies.encoder_api import DataSpec, InputFeature, ObservationEncoder, register_encoder
from policies.tokens import FutureSpaceTokens, ImageTokens


def _rgb(obs: dict) -> list[np.ndarray]:
    """Validated observation -> per environment its own copy of the frames [V, R, R, 3] uint8 (the
    caller may reuse its buffer)."""
    return [np.array(x, dtype=np.uint8, copy=True) for x in obs["rgb"]]


class PendingLatents:
    """A history frame whose codec latents [C, V, h, w] are computed the first time a memory batch
    reads it: most observed frames are never memory frames (the generator reads every
    ``frame_stride``-th, sparse memory a few of those), so encoding each one on arrival wasted most of
    an evaluation's time. Holds the uint8 frames [V, R, R, 3] until then."""

    __slots__ = ("rgb", "latents")

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb: np.ndarray | None = rgb
        self.latents: Tensor | None = None


@register_encoder("enerverse")
class FutureSpaceEncoder(ObservationEncoder):
    """EnerVerse-A: future-space tokens from one generator forward (see module docstring)."""

    needs_generator = True

    def __init__(self, cfg, spec: DataSpec, dim: int, generator: nn.Module | None = None) -> None:
        super().__init__(cfg, spec, dim, generator)
        g = generator.cfg
        if g.memory.n_memory != cfg.n_memory:
            raise ConfigError(
                f"the generator keeps {g.memory.n_memory} memory frames, the policy n_memory={cfg.n_memory}"
            )
        if g.resolution != spec.resolution:
            raise ConfigError(f"the generator works at {g.resolution} px, the data at {spec.resolution} px")
        self.blocks = tuple(cfg.encoder.block.split("+"))
        stride, window = cfg.encoder.token_stride, g.memory.n_memory + g.memory.chunk
        if g.memory.chunk % stride:
            raise ConfigError(
                f"encoder.token_stride={stride} must divide the generator's chunk ({g.memory.chunk} frames) "
                "so that the current frame is read"
            )
        self.token_frames = list(range(window - 1, -1, -stride))[::-1]  # of the window [m + M]
        self.frames = len(self.token_frames)
        self.pools = nn.ModuleDict()  # one token set per block read; summed
        for block in self.blocks:
            lat = g.resolution // g.codec.factor // generator.denoiser.feature_downsampling(block)
            C = generator.denoiser.feature_dim(block)
            self.pools[block] = FutureSpaceTokens(
                cfg.encoder, C, len(spec.views), lat * lat, self.frames, dim, g.resolution / lat
            )

    @property
    def decision_tokens(self) -> list[int]:
        """The token of the current frame (the newest memory frame of the window)."""
        return [self.token_frames.index(self.cfg.n_memory - 1)]

    def _read(self, feats: Tensor) -> Tensor:
        """Features [B, V, window, ...] -> the frames the tokens read [B, V, T, ...] (no copy at stride 1)."""
        return feats if feats.shape[2] == self.frames else feats[:, :, self.token_frames]

    def input_features(self) -> list[InputFeature]:
        V = len(self.spec.views)
        return [
            *super().input_features(),
            InputFeature("K", "float", (V, 3, 3), per_view=True),
            InputFeature("T_cam_world", "float", (V, 4, 4), per_view=True),
        ]

    def observe(self, obs: dict) -> list[Any]:
        """Per environment: (:class:`PendingLatents` of the frames, K [V, 3, 3], T_cam_world [V, 4, 4])."""
        return [(PendingLatents(x), obs["K"][b], obs["T_cam_world"][b]) for b, x in enumerate(_rgb(obs))]

    @torch.no_grad()
    def _encode_pending(self, pending: list[PendingLatents], batch_frames: int = 32) -> None:
        """Encode the frames of ``pending`` (``batch_frames`` per codec call) and keep only their
        latents. Safe against another thread encoding the same items: each item's frames are read once
        and one that lost them meanwhile already has its latents (they are set before the frames go)."""
        gen = self.generator
        pairs = [(p, rgb) for p in pending if (rgb := p.rgb) is not None]
        for s in range(0, len(pairs), batch_frames):
            part = pairs[s : s + batch_frames]
            frames = to_model(np.stack([rgb for _, rgb in part]))[:, :, None]  # [N, V, 1, 3, R, R]
            lat = gen.encode(frames.to(gen.device))[:, :, :, 0].cpu()  # [N, C, V, h, w]
            for (p, _), z in zip(part, lat, strict=True):
                p.latents = z
                p.rgb = None

    def memory_batch(self, items: list[list[Any]], pos: np.ndarray) -> dict:
        todo = {id(it[0]): it[0] for s in items for it in s if it[0].latents is None}
        if todo:
            self._encode_pending(list(todo.values()))
        memory = torch.stack([torch.stack([it[0].latents for it in s], dim=2) for s in items]).float()
        K = np.stack([s[-1][1] for s in items])  # the newest intrinsics [B, V, 3, 3]
        cams = np.stack([np.stack([it[2] for it in s], axis=1) for s in items])  # [B, V, m, 4, 4]
        return self.generator_inputs(memory, K, cams, pos)

    def generator_inputs(
        self, memory: Tensor, K: np.ndarray, cams: np.ndarray, pos_memory: np.ndarray
    ) -> dict[str, Tensor]:
        """``memory`` latents [B, C, V, m, h, w]; K [B, V, 3, 3]; cams [B, V, m, 4, 4] (memory frames'
        T_cam_world; future frames reuse the newest); pos_memory [B, m] (frame index - current frame).
        Returns ``memory``, ``rays`` [B, 6, V, m+M, h, w] and ``pos`` [B, m+M]."""
        g = self.generator.cfg
        M, R = g.memory.chunk, g.resolution
        B = memory.shape[0]
        full = np.concatenate([cams, np.repeat(cams[:, :, -1:], M, axis=2)], axis=2)
        rays = torch.stack([torch.from_numpy(ray_maps(K[b], full[b], R, memory.shape[-1])) for b in range(B)])
        # in generator frames (every frame_stride-th recorded frame; memory frames lie on that grid)
        pos_memory = np.asarray(pos_memory, dtype=np.float64) / g.frame_stride
        pos = np.concatenate([pos_memory, np.broadcast_to(np.arange(1, M + 1), (B, M))], axis=1)
        return {"memory": memory, "rays": rays, "pos": torch.as_tensor(pos, dtype=torch.float32)}

    def prepare_data(self, data, finetune: bool = False, seed: int = 0) -> None:
        """Codec latents (``data.cache["latents"]``, per episode [C, V, T, h, w]: the frames the
        generator reads, every frame when ``finetune``); when the generator stays frozen also one
        feature map per decision point (``"features"``)."""
        if "latents" not in data.cache or (finetune and not data.cache.get("latents_all")):
            data.cache["latents"] = [
                self._encode(data, k, idx)
                for k, idx in progress(
                    enumerate(self._frames_read(data, finetune)), total=data.episodes, desc="encode frames",
                    unit="ep",
                )
            ]  # fmt: skip
            data.cache["latents_all"] = finetune
        if not finetune and "features" not in data.cache:
            data.cache["features"] = self._feature_cache(data, seed)
            data.cache["feature_frames"] = list(self.token_frames)

    @staticmethod
    def _frames_read(data, every: bool) -> list[np.ndarray]:
        """Per episode, the frame indices the generator reads: every frame (``every``: fine-tuning may
        also read a window's future frames), else only the decision points' memory frames (with a
        decision stride > 1 and memory on the generator's frame grid, a fraction of them)."""
        if every:
            return [np.arange(data.length(k)) for k in range(data.episodes)]
        read: list[set[int]] = [set() for _ in range(data.episodes)]
        for k, c in data.items:
            read[k].update(data.memory(k, c).tolist())
        return [np.array(sorted(r), dtype=np.int64) for r in read]

    def _encode(self, data, k: int, idx: np.ndarray) -> Tensor:
        """Codec latents [C, V, T, h, w] (float16) of episode ``k``: frames ``idx`` encoded (or read
        from ``data.cache["latent_cache"]``), the rest 0 (never read)."""
        lat = self._cached_latents(data, k, idx)
        if lat is None:
            lat = encode_frames(self.generator, lambda sl: data.frames(k, idx[sl]), len(idx), 32)
        if len(idx) == data.length(k):
            return lat
        out = torch.zeros((*lat.shape[:2], data.length(k), *lat.shape[3:]), dtype=lat.dtype)
        out[:, :, torch.from_numpy(idx)] = lat
        return out

    def _cached_latents(self, data, k: int, idx: np.ndarray) -> Tensor | None:
        """Latents [C, V, len(idx), h, w] of episode ``k``'s frames ``idx`` from a latent cache of this
        codec (:class:`~enerverse.latent_cache.LatentCache`, e.g. the video adaptation's, which the
        trainer puts in ``data.cache["latent_cache"]``), or None when it does not hold them all: it
        holds every ``frame_stride``-th frame of all the store's views."""
        cache = data.cache.get("latent_cache")
        stride = self.generator.cfg.frame_stride
        if cache is None or (idx % stride).any() or data.view_idx != list(range(len(data.store_views))):
            return None
        store, e = data.origin[k]
        reader = cache.episodes(store, stride)
        return reader[e][:, :, torch.from_numpy(idx // stride)] if e in reader else None

    @torch.no_grad()
    def _feature_cache(self, data, seed: int, batch_size: int = 16) -> dict[str, Tensor]:
        """One generator forward per decision point -> {block: [N, V, T, C, h, w] float16}: only the
        ``T`` frames the tokens read (every ``token_stride``-th of the window)."""
        feats: dict[str, Tensor] = {}
        bar = progress(total=len(data), desc="generator features", unit="window")
        for s in range(0, len(data), batch_size):
            items = list(range(s, min(len(data), s + batch_size)))
            for block, f in self.features(self._inputs(data, items), seed=seed + s).items():
                f = self._read(f)
                if block not in feats:
                    feats[block] = torch.empty((len(data), *f.shape[1:]), dtype=torch.float16)
                feats[block][s : s + len(items)] = f.cpu().half()
            bar.update(len(items))
        bar.close()
        return feats

    def _inputs(self, data, items: list[int], video: bool = False) -> dict:
        """Generator inputs (memory latents, rays, pos, instruction) for decision points ``items``; with
        ``video`` also ``latents`` [B, C, V, m+M, h, w]: the memory frames, then the chunk's frames
        every ``frame_stride`` recorded frames after the decision (the generator's window rule,
        :func:`~enerverse.core.store.sampler.chunk_indices`: the last frame on the decision's grid
        repeats past the episode's end)."""
        latents = data.cache["latents"]
        g = self.generator.cfg
        mem, Ks, cams, pos, windows = [], [], [], [], []
        for i in items:
            k, c = data.items[i]
            idx = data.memory(k, c)
            mem.append(latents[k][:, :, idx].float())
            Ks.append(data.K[k])
            cams.append(np.transpose(data.cams[k][idx], (1, 0, 2, 3)))  # [V, m, 4, 4]
            pos.append(idx - c)
            if video:
                future = chunk_indices(c, g.memory.chunk, g.frame_stride, data.length(k))[0]
                windows.append(latents[k][:, :, np.concatenate([idx, future])].float())
        out = self.generator_inputs(torch.stack(mem), np.stack(Ks), np.stack(cams), np.stack(pos))
        out["instruction"] = [data.instruction[data.items[i][0]] for i in items]
        if video:
            out["latents"] = torch.stack(windows)
        return out

    def data_batch(self, data, items: list[int], finetune: bool = False, video: bool = False) -> dict:
        if finetune or video:
            if "latents" not in data.cache:
                raise RuntimeError(
                    "call prepare_data(data, finetune=True) before drawing fine-tuning batches"
                )
            return self._inputs(data, items, video)
        if "features" not in data.cache:
            raise RuntimeError("call prepare_data(data) before drawing EnerVerse-A batches")
        if data.cache.get("feature_frames") != list(self.token_frames):
            raise RuntimeError(
                f"the feature cache holds window frames {data.cache.get('feature_frames')}, this encoder "
                f"reads {self.token_frames} (another encoder.token_stride): prepare fresh data"
            )
        return {"features": {b: f[items].float() for b, f in data.cache["features"].items()}}  # read frames

    def features(self, batch: dict, finetune: bool = False, seed: int | None = None) -> dict[str, Tensor]:
        """Generator features {block: [B, V, T, C, h, w]} of a generator-input batch (with autograd
        when ``finetune``)."""
        gen = self.generator
        with torch.set_grad_enabled(finetune and torch.is_grad_enabled()):
            return gen.feature_maps(
                batch["memory"].to(gen.device).float(),
                batch["rays"].to(gen.device),
                batch["pos"].to(gen.device),
                list(batch["instruction"]),
                seed,
                self.blocks,
                self.cfg.encoder.noise_level,
            )

    def forward(self, batch: dict, finetune: bool = False, seed: int | None = None) -> Tensor:
        feats = batch["features"] if "features" in batch else self.features(batch, finetune, seed)
        device = next(iter(self.pools.values())).frame_pos.device
        return sum(self.pools[b](self._read(feats[b]).to(device)) for b in self.blocks)


@register_encoder("cnn")
class ImageEncoder(ObservationEncoder):
    """The image baseline: a CNN over the memory frames (see module docstring)."""

    def __init__(self, cfg, spec: DataSpec, dim: int, generator: nn.Module | None = None) -> None:
        super().__init__(cfg, spec, dim, None)  # never reads a generator
        self.frames = cfg.encoder.image_frames or cfg.n_memory  # the newest memory frames only
        self.tokens = ImageTokens(cfg.encoder, len(spec.views), self.frames, dim)

    @property
    def decision_tokens(self) -> list[int]:
        return [self.frames - 1]

    def observe(self, obs: dict) -> list[Any]:
        """Per environment: frames [V, R, R, 3] uint8."""
        return _rgb(obs)

    def memory_batch(self, items: list[list[Any]], pos: np.ndarray) -> dict:
        n = self.frames
        rgb = np.stack([np.stack(s[-n:], axis=1) for s in items])  # [B, V, n, R, R, 3]
        return {"frames": to_model(rgb)}  # [B, V, n, 3, R, R]

    def data_batch(self, data, items: list[int], finetune: bool = False, video: bool = False) -> dict:
        n = self.frames
        frames = [data.frames(k, data.memory(k, c)[-n:]) for k, c in (data.items[i] for i in items)]
        return {"frames": torch.stack(frames)}

    def forward(self, batch: dict, finetune: bool = False, seed: int | None = None) -> Tensor:
        return self.tokens(batch["frames"].to(self.tokens.frame_pos.device).float())


@register_encoder("fused")
class FusedEncoder(ObservationEncoder):
    """Future-space tokens followed by image tokens of the memory frames (see module docstring)."""

    needs_generator = True

    def __init__(self, cfg, spec: DataSpec, dim: int, generator: nn.Module | None = None) -> None:
        super().__init__(cfg, spec, dim, generator)
        self.future = FutureSpaceEncoder(cfg, spec, dim, generator)
        self.image = ImageEncoder(cfg, spec, dim)
        self.frames = self.future.frames + self.image.frames
        self.gate = nn.Parameter(torch.zeros(1)) if cfg.encoder.future_gate else None

    @property
    def decision_tokens(self) -> list[int]:
        """The decision frame's future-space token and its image token."""
        return [*self.future.decision_tokens, self.future.frames + self.image.decision_tokens[0]]

    def input_features(self) -> list[InputFeature]:
        return self.future.input_features()

    def observe(self, obs: dict) -> list[Any]:
        """Per environment: (the future-space item, the frames); both hold the same uint8 array."""
        future = self.future.observe(obs)
        return [(f, f[0].rgb) for f in future]

    def memory_batch(self, items: list[list[Any]], pos: np.ndarray) -> dict:
        out = self.future.memory_batch([[it[0] for it in s] for s in items], pos)
        return {**out, **self.image.memory_batch([[it[1] for it in s] for s in items], pos)}

    def prepare_data(self, data, finetune: bool = False, seed: int = 0) -> None:
        self.future.prepare_data(data, finetune, seed)

    def data_batch(self, data, items: list[int], finetune: bool = False, video: bool = False) -> dict:
        return {**self.future.data_batch(data, items, finetune, video), **self.image.data_batch(data, items)}

    def forward(self, batch: dict, finetune: bool = False, seed: int | None = None) -> Tensor:
        future = self.future(batch, finetune, seed)  # [B, T_future, D]
        if self.gate is not None:
            future = torch.tanh(self.gate) * future
        return torch.cat([future, self.image(batch)], dim=1)
