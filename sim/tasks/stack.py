"""Stack: put one cube on top of another."""

from __future__ import annotations

import numpy as np

from sim.scene import CUBE_HALF, ObjectSpec
from sim.tasks.base import PALETTE, Task, sample_xy


class StackTask(Task):
    """Success when the top cube sits on the base cube (xy within 2 cm, resting) and is released."""

    name = "stack"
    objects = [ObjectSpec("cube_top", "cube"), ObjectSpec("cube_base", "cube")]
    privileged_spec = [("cube_top", 7), ("cube_base", 7)]

    def randomize(self, rng: np.random.Generator) -> None:
        top, base = sample_xy(rng, 2, (0.38, -0.2), (0.62, 0.2), 0.12)
        self.set_free_pose("cube_top", np.array([*top, CUBE_HALF]), rng.uniform(-np.pi / 4, np.pi / 4))
        self.set_free_pose("cube_base", np.array([*base, CUBE_HALF]), rng.uniform(-np.pi / 4, np.pi / 4))
        c = self.pick_colors(rng, ["cube_top", "cube_base"])
        self.set_color("cube_top_geom", PALETTE[c["cube_top"]])
        self.set_color("cube_base_geom", PALETTE[c["cube_base"]])
        self.instruction = f"stack the {c['cube_top']} cube on the {c['cube_base']} cube"

    def privileged_dict(self) -> dict[str, np.ndarray]:
        return {"cube_top": self.body_pose7("cube_top"), "cube_base": self.body_pose7("cube_base")}

    def success(self) -> bool:
        top, base = self.body_pos("cube_top"), self.body_pos("cube_base")
        on_top = np.linalg.norm(top[:2] - base[:2]) < 0.02 and abs(top[2] - base[2] - 2 * CUBE_HALF) < 0.01
        return bool(on_top and self.resting_on_table("cube_base") and self.released())
