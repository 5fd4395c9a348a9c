"""Scripted experts: per-environment generator scripts driven by (batched) observations.

An expert script is a Python generator. The driver stores the latest single-env observation in
``ctx.obs`` and calls ``next``; the script yields one 7-D Δ-EE action per control step, so a whole
skill ("move above the cube, descend, close") reads as straight-line code. Experts read the
privileged object state from ``obs["privileged"]`` and the arm state from ``obs["state"]``, so they
also work across process boundaries (vectorised envs).

Policy protocol shared with ``ev-eval``: ``reset(instructions=None)`` then
``act(obs) -> actions [B, chunk, 7]`` where ``obs`` is batched (leading dimension B).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

import numpy as np

from sim.rotations import mat_to_rotvec, quat_to_mat, wrap_angle
from sim.tasks import Task, get_task_class

Script = Generator[np.ndarray, None, None]
_DOWN = np.diag([1.0, -1.0, -1.0])  # gripper pointing down, fingers closing along world y


class Ctx:
    """What a running script sees: the task class, the latest observation and its decoded parts."""

    def __init__(self, task_cls: type[Task]) -> None:
        self.task_cls = task_cls
        self.obs: dict = {}
        self.yaw = 0.0  # desired gripper heading
        self.memo: dict = {}

    @property
    def priv(self) -> dict[str, np.ndarray]:
        return self.task_cls.decode_privileged(self.obs["privileged"])

    @property
    def ee(self) -> np.ndarray:
        return np.asarray(self.obs["state"][:3], dtype=np.float64)

    @property
    def ee_rot(self) -> np.ndarray:
        return quat_to_mat(np.asarray(self.obs["state"][3:7], dtype=np.float64))


def grasp_yaw(obj_quat: np.ndarray) -> float:
    """Gripper heading (rad, in [-pi/4, pi/4]) that lines the fingers up with a cube's faces."""
    R = quat_to_mat(obj_quat)
    yaw = np.arctan2(R[1, 0], R[0, 0])
    return float(wrap_angle(yaw * 4.0) / 4.0)


def _orient(ctx: Ctx, max_rot: float = 0.25) -> tuple[np.ndarray, float]:
    c, s = np.cos(ctx.yaw), np.sin(ctx.yaw)
    R_des = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ _DOWN
    rv = mat_to_rotvec(R_des @ ctx.ee_rot.T)
    n = np.linalg.norm(rv)
    return (rv * (max_rot / n) if n > max_rot else rv), float(n)


def action(ctx: Ctx, dpos: np.ndarray, grip: float) -> np.ndarray:
    """A 7-D action with the orientation servo toward ``ctx.yaw`` folded in."""
    drot, _ = _orient(ctx)
    return np.concatenate([dpos, drot, [grip]]).astype(np.float32)


def move_to(
    ctx: Ctx,
    target: Callable[[], np.ndarray],
    grip: float,
    tol: float = 0.01,
    speed: float = 0.025,
    gain: float = 0.6,
    max_steps: int = 80,
) -> Script:
    """Servo the gripper toward ``target()`` (re-evaluated each step) until within ``tol`` metres."""
    for _ in range(max_steps):
        err = target() - ctx.ee
        _, rot_err = _orient(ctx)
        if np.linalg.norm(err) < tol and rot_err < 0.05:
            return
        d = gain * err
        n = np.linalg.norm(d)
        yield action(ctx, d * (speed / n) if n > speed else d, grip)


def hold(ctx: Ctx, grip: float, steps: int) -> Script:
    """Stay in place for ``steps`` steps while driving the gripper to ``grip``."""
    for _ in range(steps):
        yield action(ctx, np.zeros(3), grip)


def pick_and_place(
    ctx: Ctx, obj: str, place: Callable[[], np.ndarray], release_height: float, lift: float = 0.14
) -> Script:
    """Grasp cube ``obj`` from above and release it ``release_height`` above ``place()`` (xy used)."""
    from sim.scene import CUBE_HALF

    def cube() -> np.ndarray:
        return ctx.priv[obj][:3]

    ctx.yaw = grasp_yaw(ctx.priv[obj][3:7])
    yield from move_to(ctx, lambda: cube() + [0, 0, 0.09], 1.0, tol=0.012, speed=0.03)
    ctx.yaw = grasp_yaw(ctx.priv[obj][3:7])
    yield from move_to(ctx, lambda: np.array([*cube()[:2], CUBE_HALF]), 1.0, tol=0.006, speed=0.015)
    yield from hold(ctx, 0.0, 6)
    yield from move_to(ctx, lambda: np.array([*ctx.ee[:2], lift]), 0.0, tol=0.015, speed=0.025)
    ctx.yaw = 0.0  # carry the cube square to the world axes
    yield from move_to(ctx, lambda: np.array([*place()[:2], lift]), 0.0, tol=0.012, speed=0.03)
    yield from move_to(ctx, lambda: np.array([*place()[:2], release_height]), 0.0, tol=0.008, speed=0.015)
    yield from hold(ctx, 1.0, 5)
    yield from move_to(ctx, lambda: np.array([*ctx.ee[:2], lift]), 1.0, tol=0.02, speed=0.03)


class ScriptedExpert:
    """Batched policy around a per-task script factory ``script(ctx) -> generator``."""

    def __init__(self, task: str, script: Callable[[Ctx], Script]) -> None:
        self.task_cls = get_task_class(task)
        self.script = script
        self.chunk = 1
        self._ctx: list[Ctx] = []
        self._gens: list[Iterator[np.ndarray]] = []

    def reset(self, instructions: list[str] | None = None) -> None:
        """Forget all per-environment script state (call at the start of each batch of episodes)."""
        self._ctx, self._gens = [], []

    def act(self, obs: dict) -> np.ndarray:
        """Actions [B, 1, 7] for a batched observation dict (leading dimension B)."""
        B = len(obs["state"])
        if len(self._gens) != B:
            self._ctx = [Ctx(self.task_cls) for _ in range(B)]
            self._gens = [self.script(c) for c in self._ctx]
        out = np.empty((B, 1, 7), dtype=np.float32)
        for b, (ctx, gen) in enumerate(zip(self._ctx, self._gens)):
            ctx.obs = {k: v[b] for k, v in obs.items() if k in ("state", "privileged")}
            a = next(gen, None)
            out[b, 0] = hold_action(ctx) if a is None else a  # a finished script holds still
        return out


def hold_action(ctx: Ctx) -> np.ndarray:
    """Stay put with the gripper open (what a finished script does)."""
    return action(ctx, np.zeros(3), 1.0)
