"""The simulator's camera extrinsics, for a policy node that drives the MuJoCo sim node without a
calibration file (a real robot gives ``camera_extrinsics`` in its parameter file instead)."""

from __future__ import annotations

import numpy as np

from sim.cameras import RigSpec, anchor_pose, main_camera_pose


def rig_extrinsics(views: list[str]) -> dict[str, np.ndarray]:
    """T_cam_world [4, 4] (OpenCV) of each world-fixed view of the default rig; ValueError for a view
    that moves (the wrist camera) or does not exist."""
    rig = RigSpec()
    anchors = {a.name: a for a in rig.anchors}
    out = {}
    for v in views:
        if v == "main":
            out[v] = main_camera_pose()
        elif v in anchors:
            out[v] = anchor_pose(anchors[v])
        else:
            raise ValueError(f"view {v!r} has no fixed pose in the simulator rig; give camera_extrinsics")
    return out
