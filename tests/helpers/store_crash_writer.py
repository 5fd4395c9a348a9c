"""Helper for the episode-store crash test (run as a subprocess, then SIGKILLed by the test).

Usage: python store_crash_writer.py STORE_DIR

Commits episodes 0 and 1 (data from :func:`make_episode` with seeds 0 and 1), starts episode 2,
writes a few flushes of frames, prints ``PARTIAL_EPISODE_STARTED`` and keeps writing slowly until
killed (it gives up by itself after 60 s so a broken test cannot hang forever).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

MARKER = "PARTIAL_EPISODE_STARTED"
VIEWS = ["main", "anchor_left"]
KINDS = ["real", "anchor"]
LENGTHS = {0: 7, 1: 11}


def make_episode(
    seed: int, T: int, V: int = 2, H: int = 8, W: int = 8, with_depth: bool = True
) -> dict[str, Any]:
    """Deterministic episode arrays: rgb [T,V,H,W,3] u8, depth [T,V,H,W] f16, state [T,5], action [T,7],
    T_cam_world [T,V,4,4], K [V,3,3] (float32)."""
    rng = np.random.default_rng(seed)
    T_cw = np.tile(np.eye(4, dtype=np.float32), (T, V, 1, 1))
    T_cw[:, :, :3, 3] = rng.normal(size=(T, V, 3)).astype(np.float32)
    K = np.tile(np.array([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]], np.float32), (V, 1, 1))
    ep = {
        "rgb": rng.integers(0, 256, size=(T, V, H, W, 3), dtype=np.uint8),
        "state": rng.normal(size=(T, 5)).astype(np.float32),
        "action": rng.normal(size=(T, 7)).astype(np.float32),
        "T_cam_world": T_cw,
        "K": K,
    }
    if with_depth:
        ep["depth"] = rng.uniform(0.1, 3.0, size=(T, V, H, W)).astype(np.float16)
    return ep


def frame(ep: dict[str, Any], t: int) -> dict[str, Any]:
    """Keyword arguments of ``add_frame`` for frame ``t``."""
    kw = {k: ep[k][t] for k in ("rgb", "state", "action", "T_cam_world")}
    kw["depth"] = ep["depth"][t] if "depth" in ep else None
    return kw


def main(path: str) -> int:
    from enerverse.core.store import EpisodeStore

    store = EpisodeStore.create(path)
    for idx, T in LENGTHS.items():
        ep = make_episode(idx, T)
        with store.write_episode(
            idx,
            task="crash",
            instruction="do it",
            seed=idx,
            view_names=VIEWS,
            view_kinds=KINDS,
            fps=10.0,
            K=ep["K"],
            flush_every=4,
        ) as w:
            for t in range(T):
                w.add_frame(**frame(ep, t))
            w.attrs["success"] = True
    ep = make_episode(2, 1000)
    w = store.write_episode(
        2,
        task="crash",
        instruction="do it",
        seed=2,
        view_names=VIEWS,
        view_kinds=KINDS,
        fps=10.0,
        K=ep["K"],
        flush_every=4,
    )
    for t in range(10):
        w.add_frame(**frame(ep, t))
    print(MARKER, flush=True)
    deadline = time.monotonic() + 60.0
    t = 10
    while time.monotonic() < deadline:
        w.add_frame(**frame(ep, t % 1000))
        t += 1
        time.sleep(0.01)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
