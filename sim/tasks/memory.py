"""Memory: a lamp shows a colour only in the first frames; the cube must go on the plate of that colour.

A policy that only sees the current frame picks the right plate at chance (50%).
"""

from __future__ import annotations

import numpy as np

from sim.scene import CUBE_HALF, ObjectSpec
from sim.tasks.base import LAMP_OFF, PALETTE, Task, sample_xy


class MemoryTask(Task):
    """Success when the cube rests on the cued plate (xy within 4 cm) and is released."""

    name = "memory"
    cue_steps = 3  # the lamp is lit in frames 0 .. cue_steps-1
    objects = [
        ObjectSpec("cube", "cube"),
        ObjectSpec("plate_a", "pad", 0.05),
        ObjectSpec("plate_b", "pad", 0.05),
        ObjectSpec("lamp", "lamp", 0.03),
    ]
    privileged_spec = [
        ("cube", 7),
        ("plate_a", 3),
        ("plate_b", 3),
        ("plate_a_rgb", 3),
        ("plate_b_rgb", 3),
        ("lamp_rgb", 3),
        ("cued_plate", 3),
    ]
    stage_names = ["cube lifted", "cube on a plate", "cube on the cued plate"]
    tolerance = 0.04

    def randomize(self, rng: np.random.Generator) -> None:
        cube, pa, pb = sample_xy(rng, 3, (0.38, -0.22), (0.62, 0.22), 0.13)
        pa, pb = sorted((pa, pb), key=lambda p: p[1])  # plate_a is the one on the right (smaller y): the
        # names then mean something in an image, which the policies' auxiliary object-state loss needs
        self.set_free_pose("cube", np.array([*cube, CUBE_HALF]), rng.uniform(-np.pi / 4, np.pi / 4))
        self.set_mocap("plate_a", np.array([*pa, 0.001]))
        self.set_mocap("plate_b", np.array([*pb, 0.001]))
        self.set_mocap("lamp", np.array([0.66, rng.choice([-0.25, 0.25]), 0.0]))  # in every view
        c = self.pick_colors(rng, ["cube", "plate_a", "plate_b"])
        for k in ("cube", "plate_a", "plate_b"):
            self.set_color(f"{k}_geom", PALETTE[c[k]])
        self.cued = str(rng.choice(["plate_a", "plate_b"]))
        self.set_color("lamp_geom", PALETTE[c[self.cued]])
        self.instruction = f"put the {c['cube']} cube on the plate whose colour the lamp showed at the start"

    def after_step(self, step: int) -> None:
        if step == self.cue_steps:
            self.set_color("lamp_geom", LAMP_OFF)

    def privileged_dict(self) -> dict[str, np.ndarray]:
        rgba = self.model.geom_rgba
        return {
            "cube": self.body_pose7("cube"),
            "plate_a": self.body_pos("plate_a"),
            "plate_b": self.body_pos("plate_b"),
            "plate_a_rgb": rgba[self.model.geom("plate_a_geom").id, :3].copy(),
            "plate_b_rgb": rgba[self.model.geom("plate_b_geom").id, :3].copy(),
            "lamp_rgb": rgba[self.model.geom("lamp_geom").id, :3].copy(),
            # the answer the policy has to remember; experts read the lamp instead, but the policy's
            # auxiliary object-state loss (policy.aux_weight) uses it to teach what to keep in memory
            "cued_plate": self.body_pos(self.cued),
        }

    def on_plate(self, plate: str) -> bool:
        """Whether the cube rests on ``plate``."""
        d = np.linalg.norm(self.body_pos("cube")[:2] - self.body_pos(plate)[:2])
        return bool(d < self.tolerance and self.resting_on_table("cube"))

    def success(self) -> bool:
        return self.on_plate(self.cued) and self.released()

    def progress(self) -> dict:
        if self.success():
            return {"stages_done": 3}
        placed = self.released() and (self.on_plate("plate_a") or self.on_plate("plate_b"))
        return {"stages_done": 2 if placed else int(self.lifted("cube"))}
