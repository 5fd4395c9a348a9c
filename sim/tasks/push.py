"""Push: slide a cube onto a target region without grasping it."""

from __future__ import annotations

import numpy as np

from sim.scene import CUBE_HALF, ObjectSpec
from sim.tasks.base import PALETTE, Task


class PushTask(Task):
    """Success when the cube's centre is within 3.5 cm (xy) of the target centre."""

    name = "push"
    objects = [ObjectSpec("cube", "cube"), ObjectSpec("target", "pad", 0.045)]
    privileged_spec = [("cube", 7), ("target", 3)]
    tolerance = 0.035

    def randomize(self, rng: np.random.Generator) -> None:
        for _ in range(100):
            cube = rng.uniform([0.42, -0.15], [0.58, 0.15])
            ang = rng.uniform(-np.pi, np.pi)
            goal = cube + rng.uniform(0.10, 0.16) * np.array([np.cos(ang), np.sin(ang)])
            if 0.36 <= goal[0] <= 0.66 and abs(goal[1]) <= 0.22:
                break
        self.set_free_pose("cube", np.array([*cube, CUBE_HALF]), rng.uniform(-np.pi / 4, np.pi / 4))
        self.set_mocap("target", np.array([*goal, 0.001]))
        c = self.pick_colors(rng, ["cube", "target"])
        self.set_color("cube_geom", PALETTE[c["cube"]])
        self.set_color("target_geom", PALETTE[c["target"]])
        self.instruction = f"push the {c['cube']} cube onto the {c['target']} target"

    def privileged_dict(self) -> dict[str, np.ndarray]:
        return {"cube": self.body_pose7("cube"), "target": self.body_pos("target")}

    def success(self) -> bool:
        d = self.body_pos("cube")[:2] - self.body_pos("target")[:2]
        return bool(np.linalg.norm(d) < self.tolerance and self.resting_on_table("cube"))
