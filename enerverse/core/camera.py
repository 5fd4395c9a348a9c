"""Camera rig in the OpenCV convention (x right, y down, z forward), numpy only.

A camera is intrinsics ``K`` [3, 3] in pixels, extrinsics ``T_cam_world`` [4, 4] (world -> camera,
gsplat's ``viewmat``), an image size, a name and a kind (``real`` or ``anchor``). Pixel (u, v) covers
[u, u+1) x [v, v+1); its centre is (u + 0.5, v + 0.5). This module is torch-free so that ``sim``
stays importable without torch; torch callers convert with ``torch.from_numpy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CAMERA_KINDS = ("real", "anchor")


@dataclass
class Camera:
    """One pinhole camera. ``K`` [3,3] pixels, ``T_cam_world`` [4,4] world->camera (OpenCV axes)."""

    name: str
    K: np.ndarray
    T_cam_world: np.ndarray
    width: int
    height: int
    kind: str = "real"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64)
        self.T_cam_world = np.asarray(self.T_cam_world, dtype=np.float64)
        if self.K.shape != (3, 3):
            raise ValueError(f"camera {self.name!r}: K must have shape (3, 3), got {self.K.shape}")
        if self.T_cam_world.shape != (4, 4):
            raise ValueError(
                f"camera {self.name!r}: T_cam_world must have shape (4, 4), got {self.T_cam_world.shape}"
            )
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(
                f"camera {self.name!r}: width and height must be positive, got {self.width}x{self.height}"
            )
        if self.kind not in CAMERA_KINDS:
            raise ValueError(f"camera {self.name!r}: kind must be one of {CAMERA_KINDS}, got {self.kind!r}")
        self.width, self.height = int(self.width), int(self.height)

    # --- geometry -------------------------------------------------------------------------------
    @property
    def T_world_cam(self) -> np.ndarray:
        """Camera -> world transform [4, 4]."""
        return invert_se3(self.T_cam_world)

    @property
    def center(self) -> np.ndarray:
        """Camera optical centre in world coordinates [3]."""
        return self.T_world_cam[:3, 3]

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points [N, 3] to pixel coordinates [N, 2] (continuous) and depths [N]."""
        return project_points(self.K, self.T_cam_world, points_world)

    def ray_map(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """Ray map [6, H, W]: world origin (3) and unit world direction (3) at pixel centres."""
        return ray_map(self.K, self.T_cam_world, self.width, self.height, width, height)

    def resized(self, width: int, height: int) -> Camera:
        """The same camera at another resolution (intrinsics scaled)."""
        return Camera(
            self.name,
            scale_intrinsics(self.K, self.width, self.height, width, height),
            self.T_cam_world.copy(),
            width,
            height,
            self.kind,
            dict(self.meta),
        )


# --- free functions (used by the store, sim, the generator and the data engine) ----------------------
def invert_se3(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4]."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def intrinsics_from_fovy(fovy_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole K [3,3] for a vertical field of view, square pixels, principal point at the centre."""
    if not 0.0 < fovy_deg < 180.0:
        raise ValueError(f"fovy must be in (0, 180) degrees, got {fovy_deg}")
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, width: int, height: int, new_width: int, new_height: int) -> np.ndarray:
    """Rescale K [3,3] from (width, height) to (new_width, new_height) (pixel-edge convention)."""
    if new_width <= 0 or new_height <= 0:
        raise ValueError(f"resolution must be positive, got {new_width}x{new_height}")
    sx, sy = new_width / width, new_height / height
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, :] *= sx
    K2[1, :] *= sy
    return K2


def project_points(
    K: np.ndarray, T_cam_world: np.ndarray, points_world: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project [N, 3] world points. Returns continuous pixel coords [N, 2] and camera depths [N]."""
    p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    pc = p @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc @ np.asarray(K).T)[:, :2] / z[:, None]
    return uv, z


def unproject_depth(K: np.ndarray, T_cam_world: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Back-project a z-depth map [H, W] to world points [H, W, 3] at pixel centres."""
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    pc = np.stack([x, y, depth], axis=-1)
    T_wc = invert_se3(T_cam_world)
    return pc @ T_wc[:3, :3].T + T_wc[:3, 3]


def ray_map(
    K: np.ndarray,
    T_cam_world: np.ndarray,
    width: int,
    height: int,
    out_width: int | None = None,
    out_height: int | None = None,
) -> np.ndarray:
    """Ray map [6, H, W] at (out_width, out_height): world origin and unit direction per pixel centre."""
    out_width = width if out_width is None else out_width
    out_height = height if out_height is None else out_height
    Ks = scale_intrinsics(K, width, height, out_width, out_height)
    u, v = np.meshgrid(np.arange(out_width) + 0.5, np.arange(out_height) + 0.5)
    d_cam = np.stack([(u - Ks[0, 2]) / Ks[0, 0], (v - Ks[1, 2]) / Ks[1, 1], np.ones_like(u)], axis=-1)
    T_wc = invert_se3(T_cam_world)
    d_world = d_cam @ T_wc[:3, :3].T
    d_world /= np.linalg.norm(d_world, axis=-1, keepdims=True)
    origin = np.broadcast_to(T_wc[:3, 3], d_world.shape)
    return np.concatenate([origin, d_world], axis=-1).transpose(2, 0, 1).astype(np.float32)


def ray_maps(K: np.ndarray, T_cam_world: np.ndarray, size: int, latent: int) -> np.ndarray:
    """Ray maps [6, V, T, latent, latent] of square ``size`` px views: K [V, 3, 3], T_cam_world
    [V, T, 4, 4] (the conditioning of every generator frame)."""
    V, T = T_cam_world.shape[:2]
    out = np.empty((6, V, T, latent, latent), np.float32)
    for v in range(V):
        for t in range(T):
            out[:, v, t] = ray_map(K[v], T_cam_world[v, t], size, size, latent, latent)
    return out


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """World->camera T [4,4] (OpenCV axes) for a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    if np.linalg.norm(z) < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    z /= np.linalg.norm(z)
    x = np.cross(z, up)  # image right = forward x up; image down = forward x right
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T_wc = np.eye(4)
    T_wc[:3, :3] = np.stack([x, y, z], axis=1)
    T_wc[:3, 3] = eye
    return invert_se3(T_wc)


def rotate_about_z(T_cam_world: np.ndarray, angle_deg: float, pivot: np.ndarray) -> np.ndarray:
    """Rotate a camera pose about the world z axis through ``pivot`` [3] (a Free Anchor View rule)."""
    a = np.deg2rad(angle_deg)
    Rz = np.eye(4)
    Rz[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    P, Pinv = np.eye(4), np.eye(4)
    P[:3, 3] = pivot
    Pinv[:3, 3] = -np.asarray(pivot, dtype=np.float64)
    T_wc = invert_se3(T_cam_world)
    return invert_se3(P @ Rz @ Pinv @ T_wc)


def stack_rig(cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """Stack a rig's intrinsics and extrinsics: K [V,3,3] and T_cam_world [V,4,4] (float32)."""
    K = np.stack([c.K for c in cameras]).astype(np.float32)
    T = np.stack([c.T_cam_world for c in cameras]).astype(np.float32)
    return K, T
