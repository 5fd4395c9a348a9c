"""Pick and place: put a cube on a coloured plate (the default task)."""

from __future__ import annotations

import numpy as np

from sim.scene import CUBE_HALF, ObjectSpec
from sim.tasks.base import PALETTE, Task, sample_xy


class PickPlaceTask(Task):
    """Success when the cube rests on the plate (xy within 4 cm) and the gripper has let go."""

    name = "pick_place"
    objects = [ObjectSpec("cube", "cube"), ObjectSpec("plate", "pad", 0.05)]
    privileged_spec = [("cube", 7), ("plate", 3)]
    stage_names = ["cube lifted", "cube placed"]
    tolerance = 0.04

    def randomize(self, rng: np.random.Generator) -> None:
        cube, plate = sample_xy(rng, 2, (0.38, -0.22), (0.62, 0.22), 0.14)
        self.set_free_pose("cube", np.array([*cube, CUBE_HALF]), rng.uniform(-np.pi / 4, np.pi / 4))
        self.set_mocap("plate", np.array([*plate, 0.001]))
        c = self.pick_colors(rng, ["cube", "plate"])
        self.set_color("cube_geom", PALETTE[c["cube"]])
        self.set_color("plate_geom", PALETTE[c["plate"]])
        self.instruction = f"put the {c['cube']} cube on the {c['plate']} plate"

    def privileged_dict(self) -> dict[str, np.ndarray]:
        return {"cube": self.body_pose7("cube"), "plate": self.body_pos("plate")}

    def success(self) -> bool:
        d = np.linalg.norm(self.body_pos("cube")[:2] - self.body_pos("plate")[:2])
        return bool(d < self.tolerance and self.resting_on_table("cube") and self.released())

    def progress(self) -> dict:
        return {"stages_done": 2 if self.success() else int(self.lifted("cube"))}
