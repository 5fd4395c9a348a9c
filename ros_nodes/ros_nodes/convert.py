"""Checked conversions between ROS 2 messages and the arrays the project uses.

Every reader raises :class:`MessageError` with what was expected, so a node logs one line and keeps
running instead of crashing on a malformed message (wrong encoding, size, frame or joint names).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, JointState

from enerverse.core.errors import EnerVerseError

ENCODINGS = {"rgb8": False, "bgr8": True}  # encoding -> channels reversed


class MessageError(EnerVerseError, ValueError):
    """A message the node cannot use; the text says what was expected."""


def stamp_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_stamp(t: float) -> Time:
    sec = int(np.floor(t))
    return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)) % 1_000_000_000)


def image_to_rgb(msg: Image, size: int | None = None, frame_id: str | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8 or bgr8) -> uint8 [H, W, 3] RGB; ``size``: the expected H = W."""
    if msg.encoding not in ENCODINGS:
        raise MessageError(f"image encoding {msg.encoding!r}; expected one of {sorted(ENCODINGS)}")
    if frame_id is not None and msg.header.frame_id != frame_id:
        raise MessageError(f"image frame {msg.header.frame_id!r}; expected {frame_id!r}")
    if size is not None and (msg.height, msg.width) != (size, size):
        raise MessageError(f"image is {msg.width}x{msg.height}; expected {size}x{size}")
    if msg.step != 3 * msg.width or len(msg.data) != msg.step * msg.height:
        raise MessageError(
            f"image data has {len(msg.data)} bytes (step {msg.step}); expected {3 * msg.width * msg.height} "
            f"for {msg.width}x{msg.height} {msg.encoding}"
        )
    rgb = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)
    return rgb[:, :, ::-1].copy() if ENCODINGS[msg.encoding] else rgb.copy()


def rgb_to_image(rgb: np.ndarray, t: float, frame_id: str) -> Image:
    """uint8 [H, W, 3] RGB -> ``sensor_msgs/Image`` (rgb8)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    msg = Image(
        height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=3 * rgb.shape[1]
    )
    msg.header.stamp, msg.header.frame_id = seconds_stamp(t), frame_id
    msg.data = rgb.tobytes()
    return msg


def camera_info_to_K(msg: CameraInfo, size: int | None = None) -> np.ndarray:
    """``sensor_msgs/CameraInfo`` -> intrinsics K [3, 3] (float64), checked."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        raise MessageError(f"camera_info K {K.ravel().tolist()}; expected fx, fy > 0 and K[2,2] = 1")
    if size is not None and (msg.height, msg.width) != (size, size):
        raise MessageError(f"camera_info is {msg.width}x{msg.height}; expected {size}x{size}")
    return K


def K_to_camera_info(K: np.ndarray, width: int, height: int, t: float, frame_id: str) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = seconds_stamp(t), frame_id
    msg.k = [float(x) for x in np.asarray(K, dtype=np.float64).ravel()]
    msg.d = [0.0] * 5
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = [float(x) for x in P.ravel()]
    return msg


def joint_positions(msg: JointState, names: list[str]) -> np.ndarray:
    """Positions [len(names)] in the order of ``names`` from a JointState (any order, extra joints
    allowed); MessageError naming the missing joints or non-finite values."""
    if len(msg.position) != len(msg.name):
        raise MessageError(f"joint_states has {len(msg.name)} names and {len(msg.position)} positions")
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise MessageError(f"joint_states lacks joints {missing}; expected {names}")
    q = np.array([msg.position[index[n]] for n in names], dtype=np.float64)
    if not np.isfinite(q).all():
        raise MessageError(f"joint_states has non-finite positions {q.tolist()}")
    return q
