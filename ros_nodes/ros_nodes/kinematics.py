"""Joint targets for a Cartesian step, with the project's arm model (``sim.arm``, Franka-Panda-class
kinematics): the policy node's ``JointTrajectory`` mode (ros2_control style). An arm with other
kinematics uses the twist mode behind its own servo (e.g. MoveIt Servo)."""

from __future__ import annotations

import mujoco
import numpy as np

from sim.arm import ArmController
from sim.rotations import euler_to_mat
from sim.scene import build_scene_xml


class JointTargets:
    """Damped least-squares IK on a private copy of the arm model (no objects, no cameras)."""

    def __init__(self) -> None:
        self.model = mujoco.MjModel.from_xml_string(build_scene_xml([]))
        self.data = mujoco.MjData(self.model)
        self.arm = ArmController(self.model, self.data)

    def step(self, q: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Joint targets [7] moving the end effector by the Δ-EE ``action`` [>= 6] from joints ``q`` [7]."""
        q = np.asarray(q, dtype=np.float64)
        self.data.qpos[self.arm.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        pos, rot = self.arm.ee_pose()
        target_rot = euler_to_mat(np.asarray(action[3:6], float)) @ rot
        return self.arm.solve_ik(pos + np.asarray(action[:3], float), target_rot, q)
