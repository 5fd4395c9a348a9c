"""Arm control: damped-least-squares IK on the ``ee`` site and the 7-D Δ-end-effector action.

Actions are in the robot base frame, which is the world frame of the project's scene.
Δ-EE action [7]: Δposition xyz (m), Δrotation roll/pitch/yaw (rad, applied in the base frame on the
left of the current target orientation), gripper in [0, 1] (1 = open). The controller keeps a
*target* pose that integrates the deltas (so gravity sag does not accumulate), clamped to the
workspace and to stay within ``max_lead`` of the measured pose, and solves IK for joint targets of
the position servos.
"""

from __future__ import annotations

import mujoco
import numpy as np

from sim.rotations import euler_to_mat, mat_to_rotvec
from sim.scene import ARM_JOINTS, FINGER_JOINTS, FINGER_OPEN, HOME_QPOS

WORKSPACE_LOW = np.array([0.2, -0.45, 0.005])
WORKSPACE_HIGH = np.array([0.8, 0.45, 0.6])


class ArmController:
    """IK and actuation for the scene's 7-DoF arm. ``model``/``data`` are the live simulation."""

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        damping: float = 0.05,
        null_gain: float = 0.2,
        iters: int = 3,
        max_lead: float = 0.06,
    ) -> None:
        self.model, self.data = model, data
        self.qadr = np.array([model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self.dadr = np.array([model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self.fadr = np.array([model.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self.act = np.array([model.actuator(f"act_{j}").id for j in ARM_JOINTS])
        self.fact = np.array([model.actuator(f"act_{j}").id for j in FINGER_JOINTS])
        self.site = model.site("ee").id
        self.lo = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 0]
        self.hi = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 1]
        self.damping, self.null_gain, self.iters, self.max_lead = damping, null_gain, iters, max_lead
        self._ik = mujoco.MjData(model)  # scratch data: IK never disturbs the simulation state
        self._damp_eye = (damping**2) * np.eye(6)
        self._eye7 = np.eye(7)
        self._jp = np.zeros((3, model.nv))
        self._jr = np.zeros((3, model.nv))
        self.target_pos = np.zeros(3)
        self.target_rot = np.eye(3)
        self.q_cmd = HOME_QPOS.copy()
        self.gripper_cmd = 1.0

    # --- state ----------------------------------------------------------------------------------
    def ee_pose(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Measured end-effector position [3] and rotation [3, 3]."""
        d = self.data if data is None else data
        return d.site_xpos[self.site].copy(), d.site_xmat[self.site].reshape(3, 3).copy()

    def gripper_width(self) -> float:
        """Distance between the fingers (m)."""
        return float(self.data.qpos[self.fadr].sum())

    def reset(self, qpos: np.ndarray = HOME_QPOS, opening: float = 1.0) -> None:
        """Place the arm at ``qpos`` (needs a following mj_forward) and re-seat the target pose."""
        self.data.qpos[self.qadr] = qpos
        self.data.qvel[self.dadr] = 0.0
        self.data.qpos[self.fadr] = opening * FINGER_OPEN
        self.q_cmd = np.array(qpos, dtype=np.float64)
        self.data.ctrl[self.act] = self.q_cmd
        self.data.ctrl[self.fact] = opening * FINGER_OPEN
        self.gripper_cmd = float(opening)
        mujoco.mj_kinematics(self.model, self.data)
        self.target_pos, self.target_rot = self.ee_pose()

    # --- IK -------------------------------------------------------------------------------------
    def solve_ik(self, pos: np.ndarray, rot: np.ndarray, q0: np.ndarray) -> np.ndarray:
        """Joint targets [7] that put the ee site at ``pos`` [3] / ``rot`` [3,3], starting from q0."""
        q = np.array(q0, dtype=np.float64)
        d = self._ik
        for _ in range(self.iters):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(self.model, d)
            mujoco.mj_comPos(self.model, d)
            cur_p = d.site_xpos[self.site]
            cur_r = d.site_xmat[self.site].reshape(3, 3)
            err = np.concatenate([pos - cur_p, mat_to_rotvec(rot @ cur_r.T)])
            mujoco.mj_jacSite(self.model, d, self._jp, self._jr, self.site)
            J = np.vstack([self._jp[:, self.dadr], self._jr[:, self.dadr]])  # [6, 7]
            J_pinv = J.T @ np.linalg.inv(J @ J.T + self._damp_eye)  # damped pseudo-inverse [7, 6]
            # null-space pull toward the home posture keeps the redundant DoF tidy
            dq = J_pinv @ err + (self._eye7 - J_pinv @ J) @ (self.null_gain * (HOME_QPOS - q))
            q = np.clip(q + dq, self.lo, self.hi)
        return q

    # --- actions --------------------------------------------------------------------------------
    def apply_delta_ee(self, action: np.ndarray) -> None:
        """Set servo targets from a Δ-EE action [7] (already validated and clipped)."""
        cur_p, cur_r = self.ee_pose()
        pos = np.clip(self.target_pos + action[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        lead = pos - cur_p
        n = np.linalg.norm(lead)
        if n > self.max_lead:  # blocked arm: do not let the target run away
            pos = cur_p + lead * (self.max_lead / n)
        rot = euler_to_mat(action[3:6]) @ self.target_rot
        self.target_pos, self.target_rot = pos, rot
        self.q_cmd = self.solve_ik(pos, rot, self.q_cmd)
        self.data.ctrl[self.act] = self.q_cmd
        self.set_gripper(action[6])

    def apply_joint(self, action: np.ndarray) -> None:
        """Set servo targets from a joint action [8]: 7 joint positions (rad) + gripper [0, 1]."""
        self.q_cmd = np.clip(action[:7], self.lo, self.hi)
        self.data.ctrl[self.act] = self.q_cmd
        self.set_gripper(action[7])

    def set_gripper(self, opening: float) -> None:
        """Finger servo targets from an opening in [0, 1] (1 = open)."""
        self.gripper_cmd = float(np.clip(opening, 0.0, 1.0))
        self.data.ctrl[self.fact] = self.gripper_cmd * FINGER_OPEN

    def sync_target(self) -> None:
        """Re-seat the Δ-EE target on the measured pose (after joint-space control)."""
        self.target_pos, self.target_rot = self.ee_pose()
