"""Meta-World adapter: observation layout, camera geometry (projection into the rendered images),
action mapping and validation, seeding, the scripted expert through our action convention."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("metaworld")

import mujoco  # noqa: E402

import sim  # noqa: E402,F401  (sets MUJOCO_GL before mujoco is imported)
from enerverse.core.camera import invert_se3, project_points, unproject_depth  # noqa: E402
from sim.metaworld_adapter import (  # noqa: E402
    MetaWorldEnv,
    MetaWorldExpert,
    free_camera_from_opencv,
    from_metaworld_action,
    to_metaworld_action,
)
from sim.registration import make_env  # noqa: E402

pytestmark = pytest.mark.integration
TASK = "pick-place-v3"


@pytest.fixture(scope="module")
def env():
    e = MetaWorldEnv(
        TASK, views=("main", "anchor_left", "anchor_right", "wrist"), width=128, height=128, depth=True
    )
    yield e
    e.close()


def test_observation_layout_matches_space(env):
    obs, info = env.reset(seed=0)
    space = env.observation_space
    assert set(obs) == set(space.spaces) == {"rgb", "depth", "state", "privileged", "K", "T_cam_world"}
    for k, v in obs.items():
        assert v.shape == space[k].shape and v.dtype == space[k].dtype, k
    assert space.contains(obs)
    assert obs["rgb"].shape == (4, 128, 128, 3) and obs["state"].shape == (4,)
    np.testing.assert_allclose(obs["state"], obs["privileged"][:4])
    assert np.any(obs["privileged"][-3:] != 0.0), "the goal must be observable"
    assert env.view_names == ["main", "anchor_left", "anchor_right", "wrist"]
    assert env.view_kinds == ["real", "anchor", "anchor", "real"]
    assert env.fps == pytest.approx(80.0) and env.max_steps == 500
    assert info["instruction"] == env.instruction == "pick place" and info["task"] == f"metaworld/{TASK}"
    cams = env.cameras()
    np.testing.assert_allclose(np.stack([c.K for c in cams]), obs["K"], rtol=1e-6)
    np.testing.assert_allclose(np.stack([c.T_cam_world for c in cams]), obs["T_cam_world"], atol=1e-6)
    # anchors are the main camera rotated +-30 deg about z: same height and distance to the pivot axis
    centres = np.stack([c.center for c in cams[:3]])
    np.testing.assert_allclose(centres[:, 2], centres[0, 2], atol=1e-9)


def test_free_camera_renders_the_given_pose(env):
    """The GL camera MuJoCo builds from our mjvCamera is exactly the OpenCV pose we report."""
    env.reset(seed=0)
    r = mujoco.Renderer(env.model, 16, 16)
    try:
        for T in env._extrinsics()[:3]:
            r.update_scene(env.data, camera=free_camera_from_opencv(T))
            gl0, gl1 = r.scene.camera[0], r.scene.camera[1]
            T_wc = invert_se3(T)
            np.testing.assert_allclose((np.array(gl0.pos) + np.array(gl1.pos)) / 2, T_wc[:3, 3], atol=1e-6)
            np.testing.assert_allclose(gl0.forward, T_wc[:3, 2], atol=1e-6)
            np.testing.assert_allclose(gl0.up, -T_wc[:3, 1], atol=1e-6)
    finally:
        r.close()
    with pytest.raises(ValueError, match="upright"):
        free_camera_from_opencv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ env._extrinsics()[0])  # rolled 180 deg


def _blob(img: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """Mask [H, W] of pixels strongly coloured in ``channels`` (e.g. (1,) green, (0, 2) magenta)."""
    img = img.astype(int)
    on = np.min(img[..., list(channels)], axis=-1)
    off = np.max(img[..., [c for c in range(3) if c not in channels]], axis=-1)
    return on > 2 * off + 40


@pytest.mark.parametrize("seed", [0, 1])
def test_known_points_project_onto_markers_in_every_view(env, seed):
    """Paint the puck green and the finger pads magenta/yellow, render again: each geom's centre projects
    onto its blob, and the rendered depth there agrees with the point's camera depth."""
    env.reset(seed=seed)
    m = env.model
    markers = {
        "objGeom": ((1,), [0.0, 1.0, 0.0, 1.0]),
        "rightpad_geom": ((0, 2), [1.0, 0.0, 1.0, 1.0]),
        "leftpad_geom": ((0, 1), [1.0, 1.0, 0.0, 1.0]),
    }
    rgba = m.geom_rgba.copy()
    for geom, (_, colour) in markers.items():
        m.geom_rgba[m.geom(geom).id] = colour
    try:
        obs = env._obs()
    finally:
        m.geom_rgba[:] = rgba
    checked = 0
    for v, name in enumerate(env.view_names):
        K, T = obs["K"][v].astype(np.float64), obs["T_cam_world"][v].astype(np.float64)
        for marker, (channels, _) in markers.items():
            gid = m.geom(marker).id
            uv, z = project_points(K, T, env.data.geom_xpos[gid])
            uv, z = uv[0], float(z[0])
            if not (z > 0 and 4 <= uv[0] < 124 and 4 <= uv[1] < 124):
                assert name == "wrist", f"{name}: {marker} at {uv} is outside the image"
                continue
            mask = _blob(obs["rgb"][v], channels)
            u, w = int(uv[0]), int(uv[1])
            assert mask[w - 1 : w + 2, u - 1 : u + 2].any(), (
                f"{name}: {marker} projects to {uv}, off its blob"
            )
            d, size = obs["depth"][v][w, u], float(np.max(m.geom_size[gid]))
            assert abs(d - z) < size + 0.01, f"{name}: {marker} rendered depth {d} vs point depth {z}"
            if name != "wrist":  # near the wrist camera the pads are large and cut by the image border
                ys, xs = np.nonzero(mask)
                centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
                assert np.linalg.norm(centroid - uv) < 2.5, f"{name}: {marker} at {uv}, blob at {centroid}"
            checked += 1
    assert checked >= 9


def test_depth_unprojects_onto_the_table_plane(env):
    """Sub-pixel check of K and T_cam_world: table pixels unprojected with the rendered depth lie on the
    table top (z = 0) to well under a millimetre (a half-pixel error in K would give ~4 mm)."""
    obs, _ = env.reset(seed=0)
    for v, name in enumerate(env.view_names):
        P = unproject_depth(
            obs["K"][v].astype(np.float64),
            obs["T_cam_world"][v].astype(np.float64),
            obs["depth"][v].astype(np.float64),
        )
        x, y, z = P[..., 0], P[..., 1], P[..., 2]
        on_table = (np.abs(z) < 0.02) & (np.abs(x) < 0.3) & (y > 0.45) & (y < 0.85)
        assert on_table.sum() > 500, f"{name}: too little table in view"
        assert np.percentile(np.abs(z[on_table]), 90) < 5e-4, name


def test_seeds_are_reproducible_and_distinct():
    e = MetaWorldEnv(TASK, views=("main",), width=32, height=32)
    try:
        a, _ = e.reset(seed=3)
        b, _ = e.reset(seed=3)
        c, _ = e.reset(seed=4)
        np.testing.assert_array_equal(a["privileged"], b["privileged"])
        np.testing.assert_array_equal(a["rgb"], b["rgb"])
        assert not np.allclose(a["privileged"][-3:], c["privileged"][-3:])
    finally:
        e.close()


def test_action_mapping_round_trip_and_validation(env):
    s = env.action_scale
    ours = np.array([0.004, -0.02, 0.0, 0.1, 0.0, 0.0, 1.0], np.float32)
    mw = to_metaworld_action(ours, s)
    np.testing.assert_allclose(mw, [0.4, -1.0, 0.0, -1.0], atol=1e-6)
    for mw_a in ([0.3, -0.5, 1.0, 1.0], [0.0, 0.2, -0.7, 0.0], [-1.0, 1.0, 0.5, -1.0]):
        np.testing.assert_allclose(to_metaworld_action(from_metaworld_action(mw_a, s), s), mw_a, atol=1e-6)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, 0, 0, np.nan, 0, 0, 1], np.float32))


def test_bad_arguments():
    with pytest.raises(ValueError, match="did you mean 'pick-place-v3'.*reach-v3"):
        MetaWorldEnv("pick-plce-v3")
    with pytest.raises(ValueError, match="control"):
        MetaWorldEnv(TASK, control="joint")
    with pytest.raises(ValueError, match="unknown camera"):
        MetaWorldEnv(TASK, views=("main", "top"))
    e = make_env("metaworld/reach-v3", views=("main",), width=16, height=16)
    assert isinstance(e, MetaWorldEnv) and e.instruction == "reach"
    e.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_expert_solves_pick_place(seed):
    e = MetaWorldEnv(TASK, views=("main",), width=32, height=32, max_steps=150)
    expert = MetaWorldExpert(TASK)
    expert.reset()
    try:
        obs, _ = e.reset(seed=seed)
        for _ in range(e.max_steps):
            a = expert.act({k: v[None] for k, v in obs.items()})
            assert a.shape == (1, 1, 7) and e.action_space.contains(a[0, 0])
            obs, r, terminated, truncated, info = e.step(a[0, 0])
            if terminated or truncated:
                break
        assert terminated and info["success"] and r == 1.0, f"seed {seed}: not solved in {e.max_steps} steps"
    finally:
        e.close()


def test_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    e = MetaWorldEnv(TASK, views=("main", "anchor_left"), width=16, height=16)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(e.unwrapped, skip_render_check=True)
        # unbounded float Boxes are the project's observation layout (as in EnerVerseEnv); nothing else
        others = [str(w.message) for w in caught if "infinity" not in str(w.message)]
        assert not others, others
    finally:
        e.close()
