"""The scripts of the scripted experts, one per task (see :mod:`sim.experts.base`)."""

from __future__ import annotations

import numpy as np

from sim.experts.base import Ctx, Script, hold, move_to, pick_and_place
from sim.scene import CUBE_HALF
from sim.tasks.long_horizon import BIN_WALL


def reach(ctx: Ctx) -> Script:
    """Go to the goal sphere and stay there."""
    yield from move_to(ctx, lambda: ctx.priv["goal"], 1.0, tol=0.008, speed=0.03, max_steps=200)


def pick_place(ctx: Ctx) -> Script:
    """Pick the cube, release it just above the plate."""
    yield from pick_and_place(ctx, "cube", lambda: ctx.priv["plate"], CUBE_HALF + 0.01)


def stack(ctx: Ctx) -> Script:
    """Pick the top cube, release it just above the base cube."""
    yield from pick_and_place(ctx, "cube_top", lambda: ctx.priv["cube_base"][:3], 3 * CUBE_HALF + 0.012)


def push(ctx: Ctx) -> Script:
    """Come down behind the cube (seen from the target) and push it along the line to the target."""
    for _attempt in range(4):

        def direction() -> np.ndarray:
            d = ctx.priv["target"][:2] - ctx.priv["cube"][:2]
            return d / max(np.linalg.norm(d), 1e-6)

        def behind(dist: float, z: float) -> np.ndarray:
            return np.array([*(ctx.priv["cube"][:2] - dist * direction()), z])

        ctx.yaw = float(np.arctan2(direction()[1], direction()[0]))  # push with the flat of the fingers
        ctx.yaw = float((ctx.yaw + np.pi / 2) % np.pi - np.pi / 2)
        yield from move_to(ctx, lambda: behind(0.085, 0.08), 0.0, tol=0.012, speed=0.03)
        yield from move_to(ctx, lambda: behind(0.085, 0.02), 0.0, tol=0.008, speed=0.02)
        for _ in range(160):
            to_goal = ctx.priv["target"][:2] - ctx.priv["cube"][:2]
            if np.linalg.norm(to_goal) < 0.012:
                break
            rel = ctx.ee[:2] - ctx.priv["cube"][:2]
            d = direction()
            lateral = rel - d * (rel @ d)
            if rel @ d > -0.02 or np.linalg.norm(lateral) > 0.03:  # lost the cube: re-approach
                break
            target = behind(0.045 - min(np.linalg.norm(to_goal), 0.02), 0.02)
            yield from move_to(ctx, lambda t=target: t, 0.0, tol=0.0, speed=0.012, max_steps=1)
        else:
            continue
        if np.linalg.norm(ctx.priv["target"][:2] - ctx.priv["cube"][:2]) < 0.015:
            break
        yield from move_to(ctx, lambda: np.array([*ctx.ee[:2], 0.08]), 0.0, tol=0.015, speed=0.03)
    yield from move_to(ctx, lambda: np.array([*ctx.ee[:2], 0.08]), 0.0, tol=0.015, speed=0.02)


def long_horizon(ctx: Ctx) -> Script:
    """Both cubes into the bin (drop from above the rim), then push the lid shut by its handle."""
    drop = BIN_WALL + CUBE_HALF + 0.015
    yield from pick_and_place(ctx, "cube_a", lambda: ctx.priv["bin"] + [-0.037, 0.0, 0.0], drop, lift=0.16)
    yield from pick_and_place(ctx, "cube_b", lambda: ctx.priv["bin"] + [0.037, 0.0, 0.0], drop, lift=0.16)
    ctx.yaw = np.pi / 2  # fingers across the handle
    h = ctx.priv["handle"]
    yield from move_to(ctx, lambda: h + [0.0, 0.045, 0.08], 0.0, tol=0.012, speed=0.03)
    yield from move_to(ctx, lambda: h + [0.0, 0.045, 0.0], 0.0, tol=0.008, speed=0.015)
    for _ in range(60):
        if ctx.priv["lid"][0] < 0.002:
            break
        yield from move_to(
            ctx, lambda: ctx.priv["handle"] + [0.0, 0.0, 0.0], 0.0, tol=0.0, speed=0.012, max_steps=1
        )
    yield from move_to(ctx, lambda: np.array([*ctx.ee[:2], 0.2]), 1.0, tol=0.02, speed=0.03)


def memory(ctx: Ctx) -> Script:
    """Remember the lamp colour from the first frame, then pick and place onto that plate."""
    p = ctx.priv
    da = np.linalg.norm(p["lamp_rgb"] - p["plate_a_rgb"])
    db = np.linalg.norm(p["lamp_rgb"] - p["plate_b_rgb"])
    ctx.memo["plate"] = "plate_a" if da <= db else "plate_b"
    yield from hold(ctx, 1.0, 1)
    yield from pick_and_place(ctx, "cube", lambda: ctx.priv[ctx.memo["plate"]], CUBE_HALF + 0.01)


SCRIPTS = {
    "reach": reach,
    "push": push,
    "pick_place": pick_place,
    "stack": stack,
    "long_horizon": long_horizon,
    "memory": memory,
}
