"""Seeding: one call per entry point, and stable per-episode seeds derived from a base seed."""

from __future__ import annotations

import random

import numpy as np

from .config import ConfigError

_UINT32 = 2**32
_EPISODE_STRIDE = 100_003  # a prime, so nearby base seeds give unrelated-looking episode seeds


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA) if torch is installed.

    Returns a fresh ``np.random.Generator`` seeded with ``seed``; prefer passing it around over the
    global numpy RNG. The numpy global seed is ``seed mod 2**32`` (numpy's limit).
    """
    seed = int(seed)
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % _UINT32)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.manual_seed(seed)  # also seeds every CUDA device
    return np.random.default_rng(seed)


def episode_seed(base: int, index: int) -> int:
    """Seed of episode ``index`` of a run with seed ``base``: ``(base * 100003 + index) mod 2**32``.

    Stable across machines and Python versions, distinct for the first 100003 episodes of a base seed,
    and always a valid numpy/gymnasium seed (a uint32).
    """
    if index < 0:
        raise ValueError(f"episode index must be >= 0, got {index}")
    return (int(base) * _EPISODE_STRIDE + int(index)) % _UINT32
