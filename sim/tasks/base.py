"""Task contract: which objects a scene has, how a seed randomises them, the instruction, the success
check and the privileged state vector that scripted experts read.

A task is bound to one live MuJoCo model/data pair. ``privileged_spec`` is static (name, size) so
an expert in another process can decode ``obs["privileged"]`` without the simulator.
"""

from __future__ import annotations

from typing import ClassVar

import mujoco
import numpy as np

from sim.arm import ArmController
from sim.rotations import mat_to_quat, quat_to_mat, yaw_of
from sim.scene import CUBE_HALF, ObjectSpec

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.35, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.75),
    "orange": (0.98, 0.50, 0.05),
}
LAMP_OFF = (0.35, 0.35, 0.35)


class Task:
    """Base class; subclasses set the class attributes and implement ``randomize`` and ``success``."""

    name: ClassVar[str] = ""
    objects: ClassVar[list[ObjectSpec]] = []
    privileged_spec: ClassVar[list[tuple[str, int]]] = []
    stage_names: ClassVar[list[str]] = []
    """what ``progress()["stages_done"]`` = 1, 2, ... means (empty: the task reports no stages)"""

    def __init__(self) -> None:
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self.arm: ArmController | None = None
        self.instruction = ""
        self.colors: dict[str, str] = {}

    # --- binding and reset ----------------------------------------------------------------------
    def bind(self, model: mujoco.MjModel, data: mujoco.MjData, arm: ArmController) -> None:
        """Attach to a live simulation built from :attr:`objects`."""
        self.model, self.data, self.arm = model, data, arm

    def randomize(self, rng: np.random.Generator) -> None:
        """Place and colour objects, set :attr:`instruction` (arm already at home)."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Hook after each control step (``step`` counts from 1)."""

    def success(self) -> bool:
        """Whether the task is solved in the current state."""
        raise NotImplementedError

    def progress(self) -> dict:
        """Optional per-stage progress for info dicts: ``stages_done`` (int, 0 .. len(stage_names)) and
        anything else the task reports. ``ev-eval`` records the most stages done in each episode."""
        return {}

    def lifted(self, body: str, height: float = 0.02) -> bool:
        """Whether a cube's bottom is at least ``height`` above the table."""
        return bool(self.body_pos(body)[2] > CUBE_HALF + height)

    # --- privileged state -----------------------------------------------------------------------
    def privileged_dict(self) -> dict[str, np.ndarray]:
        """Named privileged quantities, matching :attr:`privileged_spec`."""
        raise NotImplementedError

    def privileged(self) -> np.ndarray:
        """Flat privileged vector [P] in the order of :attr:`privileged_spec`."""
        d = self.privileged_dict()
        return np.concatenate([np.asarray(d[k], dtype=np.float32).ravel() for k, _ in self.privileged_spec])

    @classmethod
    def privileged_size(cls) -> int:
        """Length P of the privileged vector."""
        return sum(n for _, n in cls.privileged_spec)

    @classmethod
    def decode_privileged(cls, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Split a privileged vector [P] back into named parts."""
        out, i = {}, 0
        for k, n in cls.privileged_spec:
            out[k] = np.asarray(vec[i : i + n])
            i += n
        return out

    # --- helpers for subclasses -----------------------------------------------------------------
    def set_free_pose(self, body: str, pos: np.ndarray, yaw: float = 0.0) -> None:
        """Place a free-jointed body at ``pos`` [3] with heading ``yaw``, at rest."""
        j = self.model.body(body).jntadr[0]
        a, v = self.model.jnt_qposadr[j], self.model.jnt_dofadr[j]
        self.data.qpos[a : a + 3] = pos
        self.data.qpos[a + 3 : a + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.data.qvel[v : v + 6] = 0.0

    def set_mocap(self, body: str, pos: np.ndarray) -> None:
        """Move a mocap body to ``pos`` [3]."""
        self.data.mocap_pos[self.model.body(body).mocapid[0]] = pos

    def set_color(self, geom: str, rgb: tuple[float, float, float], alpha: float = 1.0) -> None:
        """Recolour a geom."""
        self.model.geom_rgba[self.model.geom(geom).id] = (*rgb, alpha)

    def body_pos(self, body: str) -> np.ndarray:
        """World position [3] of a body."""
        return self.data.xpos[self.model.body(body).id].copy()

    def body_pose7(self, body: str) -> np.ndarray:
        """Position and wxyz quaternion [7] of a body."""
        b = self.model.body(body).id
        return np.concatenate([self.data.xpos[b], mat_to_quat(self.data.xmat[b].reshape(3, 3))])

    def pick_colors(self, rng: np.random.Generator, names: list[str]) -> dict[str, str]:
        """Distinct random colour names for ``names``."""
        chosen = rng.choice(list(PALETTE), size=len(names), replace=False)
        self.colors = dict(zip(names, (str(c) for c in chosen)))
        return self.colors

    def resting_on_table(self, body: str, tol: float = 0.01) -> bool:
        """Whether a cube rests on the table surface."""
        return bool(self.body_pos(body)[2] < CUBE_HALF + tol)

    def released(self) -> bool:
        """Whether the gripper is open wide enough not to hold a cube."""
        return self.arm.gripper_width() > 2 * CUBE_HALF + 0.012


def sample_xy(
    rng: np.random.Generator,
    n: int,
    low: tuple[float, float],
    high: tuple[float, float],
    min_dist: float,
    avoid: list[np.ndarray] | None = None,
    tries: int = 1000,
) -> list[np.ndarray]:
    """``n`` xy points [2] uniformly in a box, pairwise (and from ``avoid``) at least min_dist apart."""
    pts: list[np.ndarray] = []
    others = [np.asarray(a)[:2] for a in (avoid or [])]
    for _ in range(tries):
        p = rng.uniform(low, high)
        if all(np.linalg.norm(p - q) >= min_dist for q in pts + others):
            pts.append(p)
            if len(pts) == n:
                return pts
    raise RuntimeError(f"could not place {n} objects {min_dist} m apart in {low}..{high}")


def cube_yaw(quat: np.ndarray) -> float:
    """Heading of a cube from its wxyz quaternion [4]."""
    return yaw_of(quat_to_mat(quat))
