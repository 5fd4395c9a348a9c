"""The policy node's inputs, gathered into one time-matched observation (ROS-free, unit-tested).

Each camera view contributes its newest image (uint8 [H, W, 3]) with its stamp and intrinsics; the robot
contributes its state. :meth:`ObservationBuffer.observation` returns the ``PolicyRuntime`` observation
(``rgb`` [V, H, W, 3], ``state`` [S], ``K`` [V, 3, 3], ``T_cam_world`` [V, 4, 4]) only when every
input is present, fresh (the watchdog) and the views' stamps agree within the tolerance; otherwise it
returns the reason to hold.

The state follows the simulator's layout (``sim.env``, 15 numbers): end-effector position (3), its
orientation as a wxyz quaternion (4), the gripper opening (1) and the 7 arm joint positions.
"""

from __future__ import annotations

import numpy as np

from ros_nodes.safety import Watchdog


def robot_state(ee_position, ee_quat_xyzw, gripper_width: float, arm_q) -> np.ndarray:
    """The policy's state vector [3 + 4 + 1 + n_joints] (float32) from a ROS pose (xyzw quaternion)."""
    x, y, z, w = (float(v) for v in ee_quat_xyzw)
    q = np.array([w, x, y, z])
    q = q / max(np.linalg.norm(q), 1e-12)
    q = q if q[0] >= 0 else -q  # the simulator's sign convention (w >= 0)
    return np.concatenate(
        [np.asarray(ee_position, float), q, [gripper_width], np.asarray(arm_q, float)]
    ).astype(np.float32)


class ObservationBuffer:
    """Newest inputs of every view and of the robot (see module docstring)."""

    def __init__(
        self, views: list[str], extrinsics: dict[str, np.ndarray], max_age: float, sync_tolerance: float
    ) -> None:
        missing = [v for v in views if v not in extrinsics]
        if missing:
            raise ValueError(f"no camera extrinsics (T_cam_world) for views {missing}")
        self.views, self.tolerance = list(views), float(sync_tolerance)
        self.T = np.stack([np.asarray(extrinsics[v], dtype=np.float64).reshape(4, 4) for v in views])
        self.watchdog = Watchdog([*views, "state"], max_age)
        self.images: dict[str, tuple[float, np.ndarray]] = {}
        self.K: dict[str, np.ndarray] = {}
        self.state: np.ndarray | None = None

    def add_image(self, view: str, t: float, rgb: np.ndarray, now: float) -> None:
        """A view's image stamped ``t``, arrived at ``now``. An older stamp than the one held is ignored
        (out of order); a stamp older than the input limit expires the view (the camera is late). The
        image's age counts from its stamp (capture), not its arrival: one delivered late is not fresh."""
        if now - t > self.watchdog.limit:
            self.watchdog.expire(view)
            return
        if view in self.images and t < self.images[view][0]:
            return
        self.images[view] = (t, rgb)
        self.watchdog.feed(view, min(t, now))  # a stamp ahead of this clock counts from its arrival

    def invalidate(self, name: str) -> None:
        """A view or ``"state"`` sent something unusable: it holds the arm until it is fed again."""
        self.watchdog.expire(name)

    def add_camera_info(self, view: str, K: np.ndarray) -> None:
        self.K[view] = K

    def add_state(self, state: np.ndarray, now: float) -> None:
        self.state = np.asarray(state, np.float32)
        self.watchdog.feed("state", now)

    def observation(self, now: float, horizon: float = 0.0) -> tuple[dict | None, str]:
        """(observation, "") when complete, fresh until ``now + horizon`` and time-matched, else
        (None, why the arm holds)."""
        stale = self.watchdog.stale(now, horizon)
        if stale:
            return None, f"stale or missing inputs {stale}"
        no_info = [v for v in self.views if v not in self.K]
        if no_info:
            return None, f"no camera_info yet for {no_info}"
        stamps = [self.images[v][0] for v in self.views]
        spread = max(stamps) - min(stamps)
        if spread > self.tolerance:
            return None, f"views not time-matched: stamps {spread:.3f} s apart > {self.tolerance} s"
        obs = {
            "rgb": np.stack([self.images[v][1] for v in self.views]),
            "state": self.state,
            "K": np.stack([self.K[v] for v in self.views]),
            "T_cam_world": self.T.copy(),
        }
        return obs, ""

    def newest_stamp(self) -> float:
        """The newest image stamp (for image-to-command latency)."""
        return max(t for t, _ in self.images.values())
