"""Reach: move the gripper to a floating coloured sphere."""

from __future__ import annotations

import numpy as np

from sim.scene import ObjectSpec
from sim.tasks.base import PALETTE, Task


class ReachTask(Task):
    """Success when the end effector is within 3 cm of the goal sphere."""

    name = "reach"
    objects = [ObjectSpec("goal", "marker", 0.03)]
    privileged_spec = [("goal", 3)]
    tolerance = 0.03

    def randomize(self, rng: np.random.Generator) -> None:
        goal = rng.uniform([0.35, -0.2, 0.06], [0.65, 0.2, 0.25])
        self.set_mocap("goal", goal)
        color = self.pick_colors(rng, ["goal"])["goal"]
        self.set_color("goal_geom", PALETTE[color], 0.8)
        self.instruction = f"reach the {color} sphere"

    def privileged_dict(self) -> dict[str, np.ndarray]:
        return {"goal": self.body_pos("goal")}

    def success(self) -> bool:
        ee, _ = self.arm.ee_pose()
        return bool(np.linalg.norm(ee - self.body_pos("goal")) < self.tolerance)
