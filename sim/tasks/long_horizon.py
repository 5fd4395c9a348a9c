"""Long horizon: put two cubes into a bin, then slide its lid shut (three stages in sequence)."""

from __future__ import annotations

import numpy as np

from sim.scene import CUBE_HALF, ObjectSpec
from sim.tasks.base import PALETTE, Task, sample_xy

BIN_HALF = 0.075  # inner half-width of the bin (m)
BIN_WALL = 0.055  # wall height (m)


class LongHorizonTask(Task):
    """Stages: one cube in the bin, the other cube in the bin, lid closed (in any order, though the lid
    blocks the bin once shut). Success needs all three."""

    name = "long_horizon"
    objects = [ObjectSpec("cube_a", "cube"), ObjectSpec("cube_b", "cube"), ObjectSpec("bin", "bin", BIN_HALF)]
    privileged_spec = [("cube_a", 7), ("cube_b", 7), ("bin", 3), ("lid", 1), ("handle", 3)]
    stage_names = ["one stage done", "two stages done", "all three done"]  # any order: a count

    def randomize(self, rng: np.random.Generator) -> None:
        bin_pos = np.array([rng.uniform(0.46, 0.56), rng.uniform(-0.29, -0.25), 0.0])
        self.set_mocap("bin", bin_pos)
        a, b = sorted(sample_xy(rng, 2, (0.38, 0.10), (0.62, 0.25), 0.11), key=lambda p: p[1])
        # cube_a is the one nearer the bin (smaller y), so its name means something in an image (the
        # policies' auxiliary object-state loss regresses each cube by name)
        self.set_free_pose("cube_a", np.array([*a, CUBE_HALF]), rng.uniform(-np.pi / 4, np.pi / 4))
        self.set_free_pose("cube_b", np.array([*b, CUBE_HALF]), rng.uniform(-np.pi / 4, np.pi / 4))
        j = self.model.joint("bin_lid_joint")
        self.data.qpos[j.qposadr[0]] = j.range[1]  # lid starts fully open
        c = self.pick_colors(rng, ["cube_a", "cube_b"])
        self.set_color("cube_a_geom", PALETTE[c["cube_a"]])
        self.set_color("cube_b_geom", PALETTE[c["cube_b"]])
        self.instruction = (
            f"put the {c['cube_a']} cube and the {c['cube_b']} cube into the bin, then close the lid"
        )

    def lid_opening(self) -> float:
        """Lid slide position (m): 0 when closed."""
        return float(self.data.qpos[self.model.joint("bin_lid_joint").qposadr[0]])

    def in_bin(self, body: str) -> bool:
        """Whether a cube lies inside the bin walls below the rim."""
        d = self.body_pos(body) - self.body_pos("bin")
        return bool(np.all(np.abs(d[:2]) < BIN_HALF - 0.005) and d[2] < BIN_WALL)

    def progress(self) -> dict:
        stages = [self.in_bin("cube_a"), self.in_bin("cube_b"), self.lid_opening() < 0.01]
        return {"stages_done": int(sum(stages)), "stages": [bool(s) for s in stages]}

    def privileged_dict(self) -> dict[str, np.ndarray]:
        return {
            "cube_a": self.body_pose7("cube_a"),
            "cube_b": self.body_pose7("cube_b"),
            "bin": self.body_pos("bin"),
            "lid": np.array([self.lid_opening()]),
            "handle": self.data.geom_xpos[self.model.geom("bin_handle").id].copy(),
        }

    def success(self) -> bool:
        return bool(all(self.progress()["stages"]))
