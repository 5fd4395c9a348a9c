"""sim.arm: damped-least-squares IK reaches targets, Δ-EE control converges, the workspace clamps."""

from __future__ import annotations

from collections.abc import Iterator

import mujoco
import numpy as np
import pytest

import sim  # noqa: F401  (headless GL defaults)
from sim.arm import WORKSPACE_HIGH, WORKSPACE_LOW
from sim.env import EnerVerseEnv
from sim.rotations import euler_to_mat, mat_to_rotvec, quat_to_mat
from sim.scene import HOME_QPOS

DOWN = np.diag([1.0, -1.0, -1.0])  # gripper pointing down
HOLD = np.array([0, 0, 0, 0, 0, 0, 1.0])


def _rz(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _rot_err(R_des: np.ndarray, R: np.ndarray) -> float:
    return float(np.linalg.norm(mat_to_rotvec(R_des @ R.T)))


@pytest.fixture(scope="module")
def env() -> Iterator[EnerVerseEnv]:
    e = EnerVerseEnv("reach", views=["main"], width=16, height=16, max_steps=10_000)
    e.reset(seed=0)
    yield e
    e.close()


@pytest.mark.parametrize(
    "pos", [(0.5, 0.0, 0.2), (0.4, 0.2, 0.1), (0.6, -0.2, 0.15), (0.45, -0.1, 0.05), (0.55, 0.15, 0.3)]
)
@pytest.mark.parametrize("yaw", [-0.6, 0.0, 0.7])
def test_solve_ik_reaches_pointing_down_targets(env: EnerVerseEnv, pos: tuple, yaw: float) -> None:
    arm = env.arm
    target, R_des = np.array(pos), _rz(yaw) @ DOWN
    q = HOME_QPOS.copy()
    for _ in range(20):
        q = arm.solve_ik(target, R_des, q)
    assert np.all(q >= arm.lo) and np.all(q <= arm.hi)
    d = mujoco.MjData(env.model)
    d.qpos[arm.qadr] = q
    mujoco.mj_kinematics(env.model, d)
    p, R = arm.ee_pose(d)
    assert np.linalg.norm(p - target) < 0.005, p
    assert _rot_err(R_des, R) < 0.05


def test_solve_ik_leaves_the_simulation_alone_and_respects_limits(env: EnerVerseEnv) -> None:
    qpos, ctrl = env.data.qpos.copy(), env.data.ctrl.copy()
    q = HOME_QPOS.copy()
    for _ in range(10):
        q = env.arm.solve_ik(np.array([2.0, 1.5, -0.5]), DOWN, q)  # far out of reach
    assert np.all(np.isfinite(q))
    assert np.all(q >= env.arm.lo) and np.all(q <= env.arm.hi)
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.data.ctrl, ctrl)


def test_home_pose_points_down() -> None:
    e = EnerVerseEnv("reach", views=["main"], width=16, height=16)
    try:
        obs, _ = e.reset(seed=0)
        R = quat_to_mat(obs["state"][3:7].astype(np.float64))
        assert _rot_err(DOWN, R) < 0.05
    finally:
        e.close()


@pytest.mark.parametrize(
    "offset,dyaw", [((0.08, 0.06, -0.12), 0.3), ((-0.05, -0.1, -0.05), -0.4), ((0.1, 0.0, 0.0), 0.0)]
)
def test_delta_ee_actions_converge_to_the_target_pose(env: EnerVerseEnv, offset: tuple, dyaw: float) -> None:
    obs, _ = env.reset(seed=0)
    p0 = obs["state"][:3].astype(np.float64)
    R0 = quat_to_mat(obs["state"][3:7].astype(np.float64))
    target = p0 + np.array(offset)
    R_target = euler_to_mat([0.0, 0.0, dyaw]) @ R0  # rotations apply in the base frame, on the left
    n = 20
    step = np.concatenate([np.array(offset) / n, [0.0, 0.0, dyaw / n], [1.0]])
    for _ in range(n):
        obs, *_ = env.step(step)
    for _ in range(20):
        obs, *_ = env.step(HOLD)
    p = obs["state"][:3].astype(np.float64)
    R = quat_to_mat(obs["state"][3:7].astype(np.float64))
    assert np.linalg.norm(p - target) < 0.01, (p, target)
    assert _rot_err(R_target, R) < 0.05


def test_delta_ee_holds_still_on_zero_actions(env: EnerVerseEnv) -> None:
    obs, _ = env.reset(seed=0)
    p0 = obs["state"][:3].copy()
    for _ in range(20):
        obs, *_ = env.step(HOLD)
    assert np.linalg.norm(obs["state"][:3] - p0) < 0.003  # no gravity sag accumulates


@pytest.mark.parametrize("axis,sign", [(0, 1.0), (1, 1.0), (2, -1.0)])
def test_target_pose_is_clamped_to_the_workspace(env: EnerVerseEnv, axis: int, sign: float) -> None:
    env.reset(seed=0)
    if axis == 1:  # lower the arm first so the +y edge of the box is reachable
        for _ in range(5):
            env.step(np.array([0.0, 0.0, -0.04, 0.0, 0.0, 0.0, 1.0]))
    a = HOLD.copy()
    a[axis] = sign * 0.05
    bound = WORKSPACE_HIGH[axis] if sign > 0 else WORKSPACE_LOW[axis]
    targets = []
    for _ in range(40):
        obs, *_ = env.step(a)
        targets.append(env.arm.target_pos.copy())
    targets = np.array(targets)
    assert np.all(targets >= WORKSPACE_LOW - 1e-9) and np.all(targets <= WORKSPACE_HIGH + 1e-9)
    assert targets[-1, axis] == pytest.approx(bound)  # it got to the wall and stayed there
    assert sign * (obs["state"][axis] - bound) < 0.01  # the hand does not run past it either


def test_target_lead_over_the_measured_pose_is_bounded(env: EnerVerseEnv) -> None:
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.array([0.0, 0.0, -0.05, 0.0, 0.0, 0.0, 1.0]))
        ee, _ = env.arm.ee_pose()
        assert np.linalg.norm(env.arm.target_pos - ee) <= env.arm.max_lead + 1e-9
