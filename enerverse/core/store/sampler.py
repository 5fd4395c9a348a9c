"""Training windows (sparse memory + future chunk + action chunk) over an episode store, numpy only.

A window is anchored at the current frame ``c`` of one episode and never crosses episodes:

* ``memory_idx`` [n_memory]: n_memory - 1 history frames from [0, c - 1] (train: random without
  replacement, sorted, seeded by (seed, epoch, window index); sparse: spread evenly; consecutive: the
  frames right before ``c``, the non-sparse ablation), then ``c``.
  A history shorter than n_memory - 1 is padded at the front with frame 0 (``memory_mask`` False).
* ``chunk_idx`` [chunk]: c + 1 .. c + chunk clipped to T - 1 (``chunk_mask`` False past the end).
* ``action_idx`` [action_horizon]: c .. c + action_horizon - 1 clipped (``action_mask``).

With ``stride`` k > 1 (the generator's frame stride), memory and chunk frames lie on c's grid of
every k-th frame: history from {c - k, c - 2k, ...} >= 0 and the chunk at c + k, ..., c + chunk*k;
actions stay at the recording rate. Windows exist for c in [0, T - 1 - min_future * stride]
(``aligned``: only for c on frame 0's grid, c = 0, k, 2k, ..., so every frame a window reads is a
multiple of k). Chunk frames past the end are clipped to the last frame of c's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .reader import EpisodeStore, EpisodeView

MODES = ("train", "sparse", "consecutive")
"""train: sparse memory sampled at random (training); sparse: spread evenly (inference); consecutive:
the latest frames (the non-sparse ablation). ``sparse`` and ``consecutive`` are also the generator's
and the policy's ``memory_mode`` names."""
FRAME_GATHER_KEYS = ("rgb", "depth", "T_cam_world")  # gathered at memory + chunk frames


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def memory_indices(
    c: int, n_memory: int, mode: str, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Memory frame indices [n_memory] (int64, sorted, last == c) and validity mask [n_memory] (bool)."""
    k = n_memory - 1
    if c <= k:  # whole history fits: pad the front with frame 0
        hist = np.arange(c, dtype=np.int64)
        pad = k - c
        idx = np.concatenate([np.zeros(pad, np.int64), hist, [c]]).astype(np.int64)
        mask = np.concatenate([np.zeros(pad, bool), np.ones(c + 1, bool)])
        return idx, mask
    if mode == "train":
        if rng is None:
            raise ValueError("train mode needs an rng")
        hist = np.sort(rng.choice(c, size=k, replace=False)).astype(np.int64)
    elif mode == "consecutive":
        hist = np.arange(c - k, c, dtype=np.int64)
    else:  # evenly spread over [0, c - 1]; distinct because the step (c - 1) / (k - 1) >= 1
        hist = np.floor(np.linspace(0, c - 1, k) + 0.5).astype(np.int64)  # round half up
    return np.concatenate([hist, [c]]).astype(np.int64), np.ones(n_memory, bool)


def grid_memory_indices(
    c: int, n_memory: int, mode: str, stride: int = 1, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`memory_indices` on c's grid of every ``stride``-th frame (the generator's frames):
    indices [n_memory] in recorded frames, all congruent to c modulo ``stride``, and the mask."""
    k = _check_int("stride", stride, 1)
    grid_idx, mask = memory_indices(c // k, n_memory, mode, rng)
    return c % k + k * grid_idx, mask


def chunk_indices(c: int, chunk: int, stride: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The future chunk after frame ``c`` of an episode of ``length`` frames: indices [chunk] at
    c + stride, ..., c + chunk * stride, clipped to the last frame on c's grid, and the mask [chunk]
    (False past the end). The one rule for generator windows and EnerVerse-A's video co-training."""
    raw = c + stride * (1 + np.arange(chunk, dtype=np.int64))
    last = c % stride + stride * ((length - 1 - c % stride) // stride)
    return np.minimum(raw, last), raw <= length - 1


def action_indices(c: int, horizon: int, n_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """The action chunk from frame ``c``: indices [horizon] c .. c + horizon - 1 clipped to the last of
    ``n_actions`` (its action repeats past the end), and the mask [horizon]. IndexError when c is
    not an action of the episode."""
    if not 0 <= c < n_actions:
        raise IndexError(f"chunk start {c} outside the {n_actions} actions")
    raw = c + np.arange(horizon, dtype=np.int64)
    return np.minimum(raw, n_actions - 1), raw <= n_actions - 1


class WindowSampler:
    """Enumerates windows over the committed episodes of ``store`` (snapshot taken at construction)."""

    def __init__(
        self,
        store: EpisodeStore,
        chunk: int = 8,
        n_memory: int = 4,
        action_horizon: int = 8,
        mode: str = "train",
        only_success: bool = False,
        seed: int = 0,
        min_future: int = 1,
        stride: int = 1,
        aligned: bool = False,
        uniform_prob: float = 0.0,
    ) -> None:
        """``uniform_prob``: in train mode, the share of windows whose memory takes the inference layout
        (spread evenly from frame 0, ``sparse``) instead of random history frames."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must be in [0, 1], got {uniform_prob!r}")
        self.uniform_prob = float(uniform_prob)
        self.store = store
        self.chunk = _check_int("chunk", chunk, 1)
        self.n_memory = _check_int("n_memory", n_memory, 1)
        self.action_horizon = _check_int("action_horizon", action_horizon, 1)
        self.min_future = _check_int("min_future", min_future, 0)
        self.stride = _check_int("stride", stride, 1)
        self.aligned = bool(aligned) and self.stride > 1
        self.seed = _check_int("seed", seed, 0)
        self.mode = mode
        self.only_success = only_success
        self.epoch = 0
        self._views: dict[int, EpisodeView] = {}
        episodes, lengths = [], []
        for e in store.indices():
            view = store.episode(e)
            if only_success and not view.attrs.get("success", False):
                continue
            if view.length - min_future * self.stride > 0:
                episodes.append(e)
                lengths.append(view.length)
                self._views[e] = view
        self.episode_indices = np.asarray(episodes, dtype=np.int64)  # [E] store indices
        self.lengths = np.asarray(lengths, dtype=np.int64)  # [E] T per episode
        last = self.lengths - 1 - self.min_future * self.stride  # [E] the last window's c
        counts = last // self.stride + 1 if self.aligned else last + 1
        counts = np.maximum(counts, 0)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [E + 1]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Change the epoch (reseeds train-mode memory sampling)."""
        self.epoch = _check_int("epoch", epoch, 0)

    def locate(self, i: int) -> tuple[int, int, int]:
        """(store episode index, current frame c, episode length T) of window ``i``."""
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not -n <= i < n:
            raise IndexError(f"window index {i!r} out of range for {n} windows")
        i = int(i) % n
        k = int(np.searchsorted(self._offsets, i, side="right")) - 1
        c = (i - int(self._offsets[k])) * (self.stride if self.aligned else 1)
        return int(self.episode_indices[k]), c, int(self.lengths[k])

    def window(self, i: int) -> dict[str, Any]:
        """Index arrays of window ``i``: memory/chunk/action indices and masks, episode, c, length."""
        episode, c, T = self.locate(i)
        rng, mode = None, self.mode
        if self.mode == "train":
            rng = np.random.default_rng([self.seed, self.epoch, int(i) % len(self)])
            if self.uniform_prob > 0 and rng.random() < self.uniform_prob:
                mode = "sparse"  # the layout generation uses: the episode's first frame is in memory
        k = self.stride  # memory on c's grid of every k-th frame
        memory_idx, memory_mask = grid_memory_indices(c, self.n_memory, mode, k, rng)
        chunk_idx, chunk_mask = chunk_indices(c, self.chunk, k, T)
        action_idx, action_mask = action_indices(c, self.action_horizon, T)
        return {
            "episode": episode,
            "c": c,
            "length": T,
            "stride": k,
            "memory_idx": memory_idx,
            "memory_mask": memory_mask,  # [n_memory]
            "chunk_idx": chunk_idx,  # [chunk], on c's grid
            "chunk_mask": chunk_mask,  # [chunk]
            "action_idx": action_idx,  # [H]
            "action_mask": action_mask,  # [H]
        }

    def get(self, i: int, keys: Sequence[str] = ("rgb", "state", "action", "T_cam_world")) -> dict[str, Any]:
        """Window ``i`` with data: rgb/depth/T_cam_world at memory + chunk frames
        ([n_memory + chunk, V, ...]), state at memory frames [n_memory, S], action at
        action_idx [action_horizon, A], K [V, 3, 3]; plus everything from :meth:`window`.
        """
        w = self.window(i)
        view = self._views[w["episode"]]
        frames = np.concatenate([w["memory_idx"], w["chunk_idx"]])  # [n_memory + chunk]
        out = dict(w)
        for key in keys:
            if key in FRAME_GATHER_KEYS:
                out[key] = view.load(key, frames)
            elif key == "state":
                out[key] = view.load("state", w["memory_idx"])
            elif key == "action":
                out[key] = view.load("action", w["action_idx"])
            elif key == "K":
                out[key] = view.load("K")
            else:
                raise ValueError(
                    f"unknown key {key!r}; expected any of {(*FRAME_GATHER_KEYS, 'state', 'action', 'K')}"
                )
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(i)
