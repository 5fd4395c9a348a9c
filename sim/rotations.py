"""Small rotation helpers on numpy arrays (quaternions are w, x, y, z as in MuJoCo)."""

from __future__ import annotations

import mujoco
import numpy as np


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion [4] (wxyz) -> rotation matrix [3, 3]."""
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, dtype=np.float64))
    return m.reshape(3, 3)


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> unit quaternion [4] (wxyz, w >= 0)."""
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.asarray(R, dtype=np.float64).reshape(9))
    return q if q[0] >= 0 else -q


def euler_to_mat(rpy: np.ndarray) -> np.ndarray:
    """Extrinsic roll-pitch-yaw about x, y, z (R = Rz @ Ry @ Rx) -> [3, 3]."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def mat_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> axis-angle vector [3]."""
    q = mat_to_quat(R)
    v = np.zeros(3)
    mujoco.mju_quat2Vel(v, q, 1.0)
    return v


def yaw_of(R: np.ndarray) -> float:
    """Heading of the rotated x axis in the world xy plane (rad)."""
    return float(np.arctan2(R[1, 0], R[0, 0]))


def wrap_angle(a: float | np.ndarray) -> float | np.ndarray:
    """Wrap angles to (-pi, pi]."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi
