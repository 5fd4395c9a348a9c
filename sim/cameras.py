"""Cameras of the simulated rig: the static main camera, the wrist camera and Free Anchor Views.

Every camera is exposed as an :class:`enerverse.core.camera.Camera` in the OpenCV convention.
MuJoCo cameras look down their -z axis with y up; :func:`mujoco_to_opencv` is the one place that
converts. Anchor views are placed by rule (the main camera rotated about the world z axis through
the workspace centre, ±30° by default) or by an explicit pose, and become fixed MJCF cameras so
they render exactly like the main camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from enerverse.core.camera import Camera, intrinsics_from_fovy, invert_se3, look_at, rotate_about_z
from sim.scene import WORKSPACE_CENTER

_FLIP = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera axes <-> OpenCV camera axes

# The main camera frames the workspace, not the room (docs/design.md §3 "Framing"): 1.5 m from a point
# just above the table centre, 65 degrees up, 30 degree field of view (far and narrow, so near and far
# objects differ little in size). Every object position a task draws, the gripper 15 cm above it and
# the reach goals stay in view of it and of the +-30 degree anchors, and at the default 128 px every
# task object is >= 8 px across (sim/framing.py; scripts/object_sizes.py prints the table).
MAIN_TARGET = np.array([0.5, -0.045, 0.05])
MAIN_EYE = MAIN_TARGET + 1.5 * np.array([np.cos(np.radians(65.0)), 0.0, np.sin(np.radians(65.0))])
MAIN_FOVY = 30.0
DEFAULT_RESOLUTION = 128
RIG_VERSION = 2
"""Bumped whenever the default camera rig or scene changes what a pixel shows: stores and checkpoints
record it, and data from another version is refused instead of silently misread (v1: the 64 px
room-framing camera at (1.3, 0, 0.75), 50 degrees)."""
DEFAULT_VIEWS = ("main", "anchor_left", "anchor_right")


@dataclass
class AnchorSpec:
    """A Free Anchor View: either ``yaw_deg`` about z through the workspace centre (rule), or an
    explicit ``eye``/``target`` pair (world coordinates, metres) with an optional ``up`` vector."""

    name: str
    yaw_deg: float | None = None
    eye: list[float] | None = None
    target: list[float] | None = None
    up: list[float] | None = None
    """world direction that appears up in the image (default +z; needed for straight-down views)"""
    fovy: float = MAIN_FOVY

    def __post_init__(self) -> None:
        if (self.yaw_deg is None) == (self.eye is None):
            raise ValueError(f"anchor {self.name!r}: give exactly one of yaw_deg or eye (+ target)")
        if self.eye is not None and (len(self.eye) != 3 or self.target is None or len(self.target) != 3):
            raise ValueError(f"anchor {self.name!r}: eye and target must both be 3 numbers")


@dataclass
class RigSpec:
    """Which views an environment renders and how anchors are placed."""

    views: tuple[str, ...] = DEFAULT_VIEWS
    anchors: list[AnchorSpec] = field(
        default_factory=lambda: [
            AnchorSpec("anchor_left", yaw_deg=30.0),
            AnchorSpec("anchor_right", yaw_deg=-30.0),
        ]
    )

    def available(self) -> list[str]:
        """Every view name this rig can render."""
        return ["main", "wrist"] + [a.name for a in self.anchors]

    def validate(self) -> None:
        """Raise ValueError naming the valid views for an unknown or repeated view."""
        valid = self.available()
        if not self.views:
            raise ValueError(f"at least one view is needed; valid views: {', '.join(valid)}")
        for v in self.views:
            if v not in valid:
                raise ValueError(f"unknown camera {v!r}; valid views: {', '.join(valid)}")
        if len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct, got {list(self.views)}")

    def kind(self, view: str) -> str:
        """``real`` for cameras a robot would have, ``anchor`` for Free Anchor Views."""
        return "real" if view in ("main", "wrist") else "anchor"


def main_camera_pose() -> np.ndarray:
    """World->camera T [4,4] (OpenCV) of the static main camera."""
    return look_at(MAIN_EYE, MAIN_TARGET)


def anchor_pose(spec: AnchorSpec) -> np.ndarray:
    """World->camera T [4,4] (OpenCV) of an anchor view."""
    if spec.yaw_deg is not None:
        return rotate_about_z(main_camera_pose(), spec.yaw_deg, WORKSPACE_CENTER)
    return look_at(np.asarray(spec.eye), np.asarray(spec.target), spec.up or (0.0, 0.0, 1.0))


def opencv_to_mujoco_xml(name: str, T_cam_world: np.ndarray, fovy: float) -> str:
    """An MJCF ``<camera>`` element reproducing an OpenCV pose."""
    T_wc = invert_se3(T_cam_world)
    R_mj = T_wc[:3, :3] @ _FLIP
    xy = np.concatenate([R_mj[:, 0], R_mj[:, 1]])
    pos = " ".join(f"{v:.6f}" for v in T_wc[:3, 3])
    return f'<camera name="{name}" pos="{pos}" xyaxes="{" ".join(f"{v:.6f}" for v in xy)}" fovy="{fovy}"/>'


def rig_cameras_xml(rig: RigSpec) -> str:
    """MJCF for the world-fixed cameras (main + all anchors); the wrist camera lives on the hand."""
    xml = [opencv_to_mujoco_xml("main", main_camera_pose(), MAIN_FOVY)]
    xml += [opencv_to_mujoco_xml(a.name, anchor_pose(a), a.fovy) for a in rig.anchors]
    return "\n".join(xml)


def mujoco_to_opencv(xpos: np.ndarray, xmat: np.ndarray) -> np.ndarray:
    """World->camera T [4,4] (OpenCV) from a MuJoCo camera's world position [3] and frame [9]."""
    T_wc = np.eye(4)
    T_wc[:3, :3] = np.asarray(xmat).reshape(3, 3) @ _FLIP
    T_wc[:3, 3] = xpos
    return invert_se3(T_wc)


def camera_from_mujoco(
    model: mujoco.MjModel, data: mujoco.MjData, name: str, width: int, height: int, kind: str = "real"
) -> Camera:
    """The current pose and intrinsics of a MuJoCo camera as an OpenCV :class:`Camera`."""
    cid = model.camera(name).id
    K = intrinsics_from_fovy(float(model.cam_fovy[cid]), width, height)
    T = mujoco_to_opencv(data.cam_xpos[cid], data.cam_xmat[cid])
    return Camera(name, K, T, width, height, kind)


class MultiViewRenderer:
    """Renders RGB (and optionally z-depth) for named MuJoCo cameras at one size.

    All views are drawn side by side into one offscreen framebuffer and read back with a single
    ``mjr_readPixels``: on a software GL (llvmpipe) the read-back sync dominates small images, so
    this is ~1.5x faster than one ``mujoco.Renderer.render`` per view. The model's offscreen buffer
    must be at least ``V*width`` x ``height`` (see :func:`sim.scene.build_scene_xml`).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        views: list[str],
        width: int,
        height: int,
        depth: bool = False,
        geom_labels: np.ndarray | None = None,
    ) -> None:
        """``geom_labels`` uint8 [ngeom]: the label each geom gets in :meth:`render_segmentation`
        (0 = not an object); None disables segmentation."""
        if width <= 0 or height <= 0:
            raise ValueError(f"resolution must be positive, got {width}x{height}")
        V = len(views)
        if model.vis.global_.offwidth < V * width or model.vis.global_.offheight < height:
            raise ValueError(
                f"offscreen buffer {model.vis.global_.offwidth}x{model.vis.global_.offheight} "
                f"is smaller than {V} views of {width}x{height}"
            )
        self.model, self.views, self.width, self.height, self.depth = model, views, width, height, depth
        self.cam_ids = [model.camera(v).id for v in views]
        self._ctx = None  # GL objects are created lazily (after any fork into a worker process)
        self._rgb = np.empty((height, V * width, 3), dtype=np.uint8)
        self._z = np.empty((height, V * width), dtype=np.float32) if depth else None
        self.geom_labels = None if geom_labels is None else np.asarray(geom_labels, dtype=np.uint8)
        if self.geom_labels is not None and self.geom_labels.shape != (model.ngeom,):
            raise ValueError(f"geom_labels must have shape ({model.ngeom},), got {self.geom_labels.shape}")

    def _setup(self) -> None:
        from mujoco import gl_context

        V = len(self.views)
        self._gl = gl_context.GLContext(V * self.width, self.height)
        self._gl.make_current()
        self._con = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._con)
        self._scn = mujoco.MjvScene(self.model, maxgeom=2000)
        self._opt = mujoco.MjvOption()
        self._pert = mujoco.MjvPerturb()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rects = [mujoco.MjrRect(i * self.width, 0, self.width, self.height) for i in range(V)]
        self._full = mujoco.MjrRect(0, 0, V * self.width, self.height)
        self._ctx = True

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB uint8 [V, H, W, 3] and depth float32 [V, H, W] (metres along the optical axis; +inf where
        no surface was hit) or None."""
        if self._ctx is None:
            self._setup()
        self._gl.make_current()
        for rect, cid in zip(self._rects, self.cam_ids):
            self._draw(data, cid, rect)
        mujoco.mjr_readPixels(self._rgb, self._z, self._full, self._con)
        V, H, W = len(self.views), self.height, self.width
        rgb = self._rgb[::-1].reshape(H, V, W, 3).transpose(1, 0, 2, 3).copy()  # GL rows are bottom-up
        if self._z is None:
            return rgb, None
        extent = self.model.stat.extent
        near, far = self.model.vis.map.znear * extent, self.model.vis.map.zfar * extent
        zbuf = self._z[::-1]
        z = near / (1.0 - zbuf * (1.0 - near / far))  # z-buffer -> metric depth
        z[zbuf >= 1.0] = np.inf  # nothing hit (background): no depth, rather than the far plane
        return rgb, z.reshape(H, V, W).transpose(1, 0, 2).astype(np.float32)

    def _draw(self, data: mujoco.MjData, cid: int, rect: mujoco.MjrRect) -> None:
        self._cam.fixedcamid = cid
        mujoco.mjv_updateScene(
            self.model, data, self._opt, self._pert, self._cam, mujoco.mjtCatBit.mjCAT_ALL.value, self._scn
        )
        mujoco.mjr_render(rect, self._scn, self._con)

    def render_segmentation(self, data: mujoco.MjData) -> np.ndarray:
        """Object labels uint8 [V, H, W] from MuJoCo's segmentation rendering: each pixel gets the
        ``geom_labels`` entry of the geom it shows (0 for background and unlabelled geoms)."""
        if self.geom_labels is None:
            raise RuntimeError("this renderer was made without geom_labels: segmentation is off")
        if self._ctx is None:
            self._setup()
        self._gl.make_current()
        flags = self._scn.flags
        seg, idcolor = mujoco.mjtRndFlag.mjRND_SEGMENT, mujoco.mjtRndFlag.mjRND_IDCOLOR
        flags[seg], flags[idcolor] = 1, 1
        luts = []
        try:
            for rect, cid in zip(self._rects, self.cam_ids):
                self._draw(data, cid, rect)
                luts.append(self._segid_lut())  # segids index this view's scene geoms
            buf = np.empty_like(self._rgb)
            mujoco.mjr_readPixels(buf, None, self._full, self._con)
        finally:
            flags[seg], flags[idcolor] = 0, 0
        V, H, W = len(self.views), self.height, self.width
        ids = buf[::-1].astype(np.int32)
        ids = (ids[..., 0] | (ids[..., 1] << 8) | (ids[..., 2] << 16)).reshape(H, V, W).transpose(1, 0, 2)
        out = np.empty((V, H, W), dtype=np.uint8)
        for v, lut in enumerate(luts):
            known = ids[v] < len(lut)  # an id past this view's scene geoms is no object: label 0
            out[v] = np.where(known, lut[np.where(known, ids[v], 0)], 0)
        return out

    def _segid_lut(self) -> np.ndarray:
        """uint8 [ngeom_scene + 1]: label of segmentation colour id (segid + 1; 0 = nothing drawn)."""
        n = self._scn.ngeom
        lut = np.zeros(n + 1, dtype=np.uint8)
        geom_type = mujoco.mjtObj.mjOBJ_GEOM
        for i in range(n):
            g = self._scn.geoms[i]
            if g.segid >= 0 and g.objtype == geom_type and 0 <= g.objid < len(self.geom_labels):
                lut[g.segid + 1] = self.geom_labels[g.objid]
        return lut

    def close(self) -> None:
        """Free the GL context."""
        if self._ctx is not None:
            self._con.free()
            self._gl.free()
            self._ctx = None
