"""enerverse.core.camera: OpenCV axes, projection round trips, ray-map geometry, anchor rotation."""

from __future__ import annotations

import numpy as np
import pytest

from enerverse.core.camera import (
    Camera,
    intrinsics_from_fovy,
    invert_se3,
    look_at,
    project_points,
    ray_map,
    rotate_about_z,
    scale_intrinsics,
    stack_rig,
    unproject_depth,
)

# A deliberately asymmetric pinhole: fx != fy, principal point off the image centre.
W, H = 32, 24
K = np.array([[40.0, 0.0, 17.3], [0.0, 35.0, 11.8], [0.0, 0.0, 1.0]])
EYE = np.array([1.2, -0.4, 0.9])
TARGET = np.array([0.4, 0.1, 0.05])


def _rz(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _random_se3(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    T = np.eye(4)
    T[:3, :3] = q
    T[:3, 3] = rng.normal(size=3)
    return T


# --- look_at: OpenCV axes ------------------------------------------------------------------------
def test_look_at_target_projects_to_principal_point_in_front() -> None:
    T = look_at(EYE, TARGET)
    uv, z = project_points(K, T, TARGET[None])
    np.testing.assert_allclose(uv[0], K[:2, 2], atol=1e-9)
    assert z[0] == pytest.approx(np.linalg.norm(TARGET - EYE))


def test_look_at_axes_are_opencv_right_down_forward() -> None:
    # Camera south of the origin (at -y), looking north (+y) and slightly down, z up:
    # world +x is to the camera's right, world +z is up.
    eye, target = np.array([0.0, -2.0, 1.0]), np.zeros(3)
    T = look_at(eye, target)
    Kc = intrinsics_from_fovy(60.0, 64, 48)
    uv, z = project_points(Kc, T, np.array([target, [0.3, 0.0, 0.0], [-0.3, 0.0, 0.0], [0.0, 0.0, 0.3]]))
    centre, right, left, above = uv
    assert np.all(z > 0)
    assert right[0] > centre[0] + 1 and abs(right[1] - centre[1]) < 1.0
    assert left[0] < centre[0] - 1
    assert above[1] < centre[1] - 1  # image y points down
    R_wc = invert_se3(T)[:3, :3]
    assert np.linalg.det(R_wc) == pytest.approx(1.0)
    np.testing.assert_allclose(R_wc[:, 2], (target - eye) / np.linalg.norm(target - eye), atol=1e-12)
    np.testing.assert_allclose(R_wc[:, 0], [1.0, 0.0, 0.0], atol=1e-12)  # image right = world +x


def test_look_at_rejects_degenerate_poses() -> None:
    with pytest.raises(ValueError, match="coincide"):
        look_at([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="parallel to the up vector"):
        look_at([0.5, 0.0, 1.0], [0.5, 0.0, 0.0])


def test_camera_center_and_project_match_free_functions() -> None:
    cam = Camera("c", K, look_at(EYE, TARGET), W, H, "anchor")
    np.testing.assert_allclose(cam.center, EYE, atol=1e-12)
    pts = np.random.default_rng(0).normal(size=(5, 3))
    uv_a, z_a = cam.project(pts)
    uv_b, z_b = project_points(K, cam.T_cam_world, pts)
    np.testing.assert_allclose(uv_a, uv_b)
    np.testing.assert_allclose(z_a, z_b)
    np.testing.assert_allclose(cam.T_world_cam @ cam.T_cam_world, np.eye(4), atol=1e-12)


# --- projection round trips ------------------------------------------------------------------------
def test_unproject_then_project_round_trip_hits_pixel_centres() -> None:
    rng = np.random.default_rng(1)
    T = look_at(EYE, TARGET)
    depth = rng.uniform(0.3, 4.0, size=(H, W))
    pts = unproject_depth(K, T, depth)
    assert pts.shape == (H, W, 3)
    uv, z = project_points(K, T, pts.reshape(-1, 3))
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-9)
    np.testing.assert_allclose(z, depth.ravel(), atol=1e-9)


def test_project_then_unproject_recovers_points() -> None:
    rng = np.random.default_rng(2)
    T = look_at(EYE, TARGET)
    cam_pts = np.column_stack(
        [rng.uniform(-0.3, 0.3, 50), rng.uniform(-0.2, 0.2, 50), rng.uniform(0.5, 3.0, 50)]
    )
    world = (cam_pts - T[:3, 3]) @ T[:3, :3]  # R^T (p - t)
    uv, z = project_points(K, T, world)
    np.testing.assert_allclose(z, cam_pts[:, 2], atol=1e-9)
    # back-project each continuous pixel with its depth
    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
    back = np.column_stack([x, y, z]) @ invert_se3(T)[:3, :3].T + invert_se3(T)[:3, 3]
    np.testing.assert_allclose(back, world, atol=1e-9)


# --- ray maps --------------------------------------------------------------------------------------
def test_ray_map_shape_unit_directions_and_origin() -> None:
    T = look_at(EYE, TARGET)
    rm = ray_map(K, T, W, H)
    assert rm.shape == (6, H, W)
    assert rm.dtype == np.float32
    np.testing.assert_allclose(rm[:3], np.broadcast_to(EYE[:, None, None], (3, H, W)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rm[3:], axis=0), 1.0, atol=1e-6)
    cam = Camera("c", K, T, W, H)
    np.testing.assert_array_equal(cam.ray_map(), rm)


def test_ray_through_pixel_centre_projects_back_to_it() -> None:
    T = look_at(EYE, TARGET)
    rm = ray_map(K, T, W, H).astype(np.float64)
    for v, u in [(0, 0), (H - 1, W - 1), (3, 20), (H // 2, W // 2), (17, 5)]:
        for t in (0.7, 2.5):
            p = rm[:3, v, u] + t * rm[3:, v, u]
            uv, z = project_points(K, T, p[None])
            assert z[0] > 0
            np.testing.assert_allclose(uv[0], [u + 0.5, v + 0.5], atol=1e-4)


@pytest.mark.parametrize("out_w,out_h", [(16, 12), (64, 48), (8, 6)])
def test_ray_map_at_other_resolution_matches_scaled_intrinsics(out_w: int, out_h: int) -> None:
    T = look_at(EYE, TARGET)
    rm = ray_map(K, T, W, H, out_w, out_h)
    assert rm.shape == (6, out_h, out_w)
    Ks = scale_intrinsics(K, W, H, out_w, out_h)
    np.testing.assert_allclose(rm, ray_map(Ks, T, out_w, out_h), atol=1e-6)
    np.testing.assert_allclose(rm, Camera("c", K, T, W, H).resized(out_w, out_h).ray_map(), atol=1e-6)
    # Independently: the ray of output pixel (i, j) passes through the matching continuous point
    # ((i + 0.5) * W / out_w, (j + 0.5) * H / out_h) of the original-resolution image.
    rm64 = rm.astype(np.float64)
    for j, i in [(0, 0), (out_h - 1, out_w - 1), (out_h // 2, out_w // 3)]:
        p = rm64[:3, j, i] + 1.5 * rm64[3:, j, i]
        uv, _ = project_points(K, T, p[None])
        np.testing.assert_allclose(uv[0], [(i + 0.5) * W / out_w, (j + 0.5) * H / out_h], atol=1e-4)


def test_scale_intrinsics_keeps_principal_point_relative_position() -> None:
    K2 = scale_intrinsics(K, W, H, 2 * W, 3 * H)
    np.testing.assert_allclose(K2[0, [0, 2]], 2 * K[0, [0, 2]])
    np.testing.assert_allclose(K2[1, [1, 2]], 3 * K[1, [1, 2]])
    assert K2[2, 2] == 1.0
    with pytest.raises(ValueError, match="resolution must be positive"):
        scale_intrinsics(K, W, H, 0, H)


def test_intrinsics_from_fovy() -> None:
    Kf = intrinsics_from_fovy(90.0, 64, 48)
    assert Kf[0, 0] == pytest.approx(24.0) and Kf[1, 1] == pytest.approx(24.0)
    np.testing.assert_allclose(Kf[:2, 2], [32.0, 24.0])
    with pytest.raises(ValueError, match="fovy"):
        intrinsics_from_fovy(0.0, 64, 48)
    with pytest.raises(ValueError, match="fovy"):
        intrinsics_from_fovy(180.0, 64, 48)


# --- rotate_about_z (Free Anchor View rule) ------------------------------------------------------------
def test_rotate_about_z_plus_30_keeps_radius_and_height() -> None:
    pivot = np.array([0.5, 0.0, 0.0])
    T = look_at(EYE, TARGET)
    T30 = rotate_about_z(T, 30.0, pivot)
    c0, c1 = invert_se3(T)[:3, 3], invert_se3(T30)[:3, 3]
    assert np.linalg.norm(c1 - pivot) == pytest.approx(np.linalg.norm(c0 - pivot))
    assert np.linalg.norm((c1 - pivot)[:2]) == pytest.approx(np.linalg.norm((c0 - pivot)[:2]))
    assert c1[2] == pytest.approx(c0[2])
    a0 = np.arctan2(*(c0 - pivot)[[1, 0]])
    a1 = np.arctan2(*(c1 - pivot)[[1, 0]])
    assert np.rad2deg((a1 - a0 + np.pi) % (2 * np.pi) - np.pi) == pytest.approx(30.0)  # counter-clockwise
    np.testing.assert_allclose(c1, _rz(30.0) @ (c0 - pivot) + pivot, atol=1e-12)
    # orientation turns with it
    np.testing.assert_allclose(invert_se3(T30)[:3, :3], _rz(30.0) @ invert_se3(T)[:3, :3], atol=1e-12)
    # a point rotated with the camera keeps its pixel
    p = np.array([0.45, 0.12, 0.07])
    uv0, _ = project_points(K, T, p[None])
    uv1, _ = project_points(K, T30, (_rz(30.0) @ (p - pivot) + pivot)[None])
    np.testing.assert_allclose(uv1, uv0, atol=1e-9)


def test_rotate_about_z_back_restores_pose() -> None:
    pivot = np.array([0.5, 0.0, 0.0])
    T = look_at(EYE, TARGET)
    back = rotate_about_z(rotate_about_z(T, 30.0, pivot), -30.0, pivot)
    np.testing.assert_allclose(back, T, atol=1e-12)
    np.testing.assert_allclose(rotate_about_z(T, 360.0, pivot), T, atol=1e-12)


# --- invert_se3 ----------------------------------------------------------------------------------------
def test_invert_se3_single_and_batched() -> None:
    rng = np.random.default_rng(3)
    T = _random_se3(rng)
    Ti = invert_se3(T)
    np.testing.assert_allclose(T @ Ti, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(Ti @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(Ti, np.linalg.inv(T), atol=1e-12)
    batch = np.stack([[_random_se3(rng) for _ in range(3)] for _ in range(2)])  # [2, 3, 4, 4]
    inv = invert_se3(batch)
    assert inv.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(inv, np.linalg.inv(batch), atol=1e-12)
    np.testing.assert_allclose(inv[..., 3, :], np.broadcast_to([0, 0, 0, 1.0], (2, 3, 4)))


def test_stack_rig_shapes_and_dtypes() -> None:
    cams = [Camera("a", K, look_at(EYE, TARGET), W, H), Camera("b", K * 2, np.eye(4), W, H, "anchor")]
    Ks, Ts = stack_rig(cams)
    assert Ks.shape == (2, 3, 3) and Ts.shape == (2, 4, 4)
    assert Ks.dtype == np.float32 and Ts.dtype == np.float32
    np.testing.assert_allclose(Ks[1], 2 * K, rtol=1e-6)


# --- validation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,fragments",
    [
        ({"K": np.eye(4)}, ["'bad'", "K must have shape (3, 3)", "(4, 4)"]),
        ({"K": np.zeros(9)}, ["K must have shape (3, 3)", "(9,)"]),
        ({"T_cam_world": np.eye(3)}, ["T_cam_world must have shape (4, 4)", "(3, 3)"]),
        ({"width": 0}, ["width and height must be positive", "0x24"]),
        ({"height": -5}, ["width and height must be positive", "32x-5"]),
        ({"kind": "virtual"}, ["kind must be one of", "'real'", "'anchor'", "'virtual'"]),
    ],
)
def test_camera_validation_messages(kwargs: dict, fragments: list[str]) -> None:
    args = {"name": "bad", "K": K, "T_cam_world": np.eye(4), "width": W, "height": H, "kind": "real"} | kwargs
    with pytest.raises(ValueError) as exc:
        Camera(**args)
    for frag in fragments:
        assert frag in str(exc.value)


def test_camera_normalises_types() -> None:
    cam = Camera("c", K.tolist(), np.eye(4).tolist(), np.int64(W), np.int64(H))
    assert isinstance(cam.K, np.ndarray) and cam.K.dtype == np.float64
    assert type(cam.width) is int and type(cam.height) is int
    assert cam.kind == "real"
