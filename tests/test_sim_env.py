"""sim.env.EnerVerseEnv: camera convention in every view, spaces, gymnasium API, seeding, anchors,
bad input and joint control."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest

import sim  # noqa: F401  (sets the headless GL defaults and registers the gymnasium ids)
from enerverse.core.camera import intrinsics_from_fovy, invert_se3, look_at, project_points, ray_map
from sim.cameras import MAIN_EYE, MAIN_FOVY, MAIN_TARGET
from sim.env import STATE_DIM, EnerVerseEnv
from sim.scene import CUBE_HALF, WORKSPACE_CENTER
from sim.tasks import TASKS

RES = 48
HOLD = np.array([0, 0, 0, 0, 0, 0, 1.0])
MAGENTA, CYAN = (1.0, 0.0, 1.0, 1.0), (0.0, 1.0, 1.0, 1.0)
TOP_EYE, TOP_TARGET = [0.75, 0.1, 1.1], [0.5, 0.0, 0.0]


def _rz(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _centre(T_cam_world: np.ndarray) -> np.ndarray:
    return invert_se3(np.asarray(T_cam_world, dtype=np.float64))[:3, 3]


@pytest.fixture(scope="module")
def rig_env() -> Iterator[EnerVerseEnv]:
    env = EnerVerseEnv(
        "pick_place",
        views=["main", "wrist", "anchor_left", "anchor_right"],
        width=RES,
        height=RES,
        depth=True,
    )
    yield env
    env.close()


@pytest.fixture(scope="module")
def top_env() -> Iterator[EnerVerseEnv]:
    env = EnerVerseEnv(
        "pick_place",
        views=["main", "top"],
        width=RES,
        height=RES,
        depth=True,
        anchors=[{"name": "top", "eye": TOP_EYE, "target": TOP_TARGET}],
    )
    yield env
    env.close()


def _check_known_points_in_every_view(env: EnerVerseEnv, seed: int) -> None:
    """Recolour the cube magenta and the plate cyan, then find each where its 3-D point projects."""
    env.reset(seed=seed)
    env.model.geom_rgba[env.model.geom("cube_geom").id] = MAGENTA
    env.model.geom_rgba[env.model.geom("plate_geom").id] = CYAN
    obs, *_ = env.step(HOLD)  # re-render through the public API (the arm holds still)
    cube = env.task.body_pos("cube")
    cube_top = cube + [0.0, 0.0, CUBE_HALF]
    plate_top = env.task.body_pos("plate") + [0.0, 0.0, 0.001]
    for v, name in enumerate(env.view_names):
        K, T = obs["K"][v].astype(np.float64), obs["T_cam_world"][v].astype(np.float64)
        rgb, depth = obs["rgb"][v].astype(int), obs["depth"][v]
        uv, z = project_points(K, T, np.stack([cube_top, plate_top, cube]))
        for (u, vv), zz, colour, what in [
            (uv[0], z[0], "magenta", "cube top"),
            (uv[1], z[1], "cyan", "plate centre"),
        ]:
            where = f"{name} (seed {seed}): {what} projects to ({u:.1f}, {vv:.1f})"
            assert zz > 0 and 1 <= u < RES - 1 and 1 <= vv < RES - 1, f"{where}: not in the image"
            r, g, b = rgb[int(vv), int(u)]
            if colour == "magenta":
                assert r > 150 and b > 150 and g < 90, f"{where}: pixel is {(r, g, b)}, not magenta"
            else:
                assert g > 150 and b > 150 and r < 90, f"{where}: pixel is {(r, g, b)}, not cyan"
            d = float(depth[int(vv), int(u)])
            assert abs(d - zz) < 0.02, f"{where}: rendered depth {d:.3f} m, camera z {zz:.3f} m"
        # the magenta blob is centred on the projected cube centre
        mask = (rgb[..., 0] > 150) & (rgb[..., 2] > 150) & (rgb[..., 1] < 90)
        ys, xs = np.nonzero(mask)
        assert len(xs) >= 3, f"{name}: cube barely visible ({len(xs)} px)"
        centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        assert np.linalg.norm(centroid - uv[2]) < 1.5, f"{name}: cube blob at {centroid}, projected {uv[2]}"


@pytest.mark.parametrize("seed", [0, 1])
def test_known_points_project_onto_their_objects_in_every_view(rig_env: EnerVerseEnv, seed: int) -> None:
    _check_known_points_in_every_view(rig_env, seed)


def test_ray_maps_predict_the_rendered_plate_to_sub_pixel_accuracy() -> None:
    """Cast each view's ray map (pixel centres u+0.5, v+0.5) onto the plate's top plane; the pixels whose
    ray lands inside the plate disc must be the ones rendered in its colour. A half-pixel convention
    error drops the overlap to ~0.7-0.89."""
    res = 96
    env = EnerVerseEnv(
        "pick_place", views=["main", "wrist", "anchor_left", "anchor_right"], width=res, height=res
    )
    try:
        env.reset(seed=0)
        env.model.geom_rgba[env.model.geom("plate_geom").id] = CYAN
        obs, *_ = env.step(HOLD)
        centre = env.task.body_pos("plate") + [0.0, 0.0, 0.001]
        radius = 0.05 * 0.983  # the plate is drawn as a 12-sided polygon inscribed in r = 5 cm
        for v, name in enumerate(env.view_names):
            rm = ray_map(obs["K"][v].astype(np.float64), obs["T_cam_world"][v].astype(np.float64), res, res)
            o, d = rm[:3].astype(np.float64), rm[3:].astype(np.float64)
            hit = o + (centre[2] - o[2]) / d[2] * d
            predicted = np.hypot(hit[0] - centre[0], hit[1] - centre[1]) < radius
            rgb = obs["rgb"][v].astype(int)
            rendered = (rgb[..., 1] > 150) & (rgb[..., 2] > 150) & (rgb[..., 0] < 90)
            assert predicted.sum() > 20, name
            iou = (predicted & rendered).sum() / (predicted | rendered).sum()
            assert iou > 0.92, f"{name}: rendered plate vs ray-map prediction IoU {iou:.3f}"
    finally:
        env.close()


def test_explicit_anchor_view_follows_the_camera_convention(top_env: EnerVerseEnv) -> None:
    assert top_env.view_names == ["main", "top"]
    assert top_env.view_kinds == ["real", "anchor"]
    obs, _ = top_env.reset(seed=0)
    np.testing.assert_allclose(_centre(obs["T_cam_world"][1]), TOP_EYE, atol=1e-4)
    uv, _ = project_points(
        obs["K"][1].astype(np.float64), obs["T_cam_world"][1].astype(np.float64), np.array([TOP_TARGET])
    )
    np.testing.assert_allclose(uv[0], [RES / 2, RES / 2], atol=0.05)
    _check_known_points_in_every_view(top_env, 0)


def test_straight_down_anchor_needs_and_accepts_an_up_vector() -> None:
    down = {"name": "down", "eye": [0.5, 0.0, 1.2], "target": [0.5, 0.0, 0.0]}
    with pytest.raises(ValueError, match="parallel to the up vector"):
        EnerVerseEnv("reach", width=16, height=16, anchors=[down])
    env = EnerVerseEnv("reach", width=32, height=32, anchors=[{**down, "up": [1.0, 0.0, 0.0]}])
    try:
        obs, _ = env.reset(seed=0)
        T = obs["T_cam_world"][1].astype(np.float64)
        pts = np.array([[0.5, 0.0, 0.0], [0.6, 0.0, 0.0]])
        uv, z = project_points(obs["K"][1].astype(np.float64), T, pts)
        np.testing.assert_allclose(uv[0], [16, 16], atol=0.05)  # target at the image centre
        assert uv[1][1] < uv[0][1]  # +x (the up vector) appears up in the image
        np.testing.assert_allclose(z[0], 1.2, atol=1e-4)
    finally:
        env.close()


def test_static_cameras_match_the_rig_and_the_wrist_follows_the_hand(rig_env: EnerVerseEnv) -> None:
    obs, _ = rig_env.reset(seed=0)
    np.testing.assert_allclose(obs["T_cam_world"][0], look_at(MAIN_EYE, MAIN_TARGET), atol=1e-5)
    for v in (0, 2, 3):  # main and the default anchors share the main camera's field of view
        np.testing.assert_allclose(obs["K"][v], intrinsics_from_fovy(MAIN_FOVY, RES, RES), rtol=1e-6)
    K0 = obs["K"].copy()
    for name, cam in zip(rig_env.view_names, rig_env.cameras()):
        assert cam.name == name and (cam.width, cam.height) == (RES, RES)
    # the wrist camera sits at (-0.08, 0, 0.02) in the hand frame (scene.py)
    hand = rig_env.model.body("hand").id

    def wrist_centre_expected() -> np.ndarray:
        return rig_env.data.xpos[hand] + rig_env.data.xmat[hand].reshape(3, 3) @ [-0.08, 0.0, 0.02]

    np.testing.assert_allclose(_centre(obs["T_cam_world"][1]), wrist_centre_expected(), atol=1e-5)
    before = obs["T_cam_world"].copy()
    for _ in range(8):
        obs, *_ = rig_env.step(np.array([0.02, 0.03, -0.02, 0.0, 0.0, 0.1, 1.0]))
    np.testing.assert_allclose(obs["T_cam_world"][[0, 2, 3]], before[[0, 2, 3]], atol=1e-6)
    assert np.abs(obs["T_cam_world"][1] - before[1]).max() > 0.01
    np.testing.assert_allclose(_centre(obs["T_cam_world"][1]), wrist_centre_expected(), atol=1e-5)
    np.testing.assert_array_equal(obs["K"], K0)  # intrinsics are static
    assert obs["K"].dtype == np.float32 and obs["T_cam_world"].dtype == np.float32


def test_anchor_views_are_main_rotated_about_workspace_centre(rig_env: EnerVerseEnv) -> None:
    obs, _ = rig_env.reset(seed=0)
    T = obs["T_cam_world"].astype(np.float64)
    main, left, right = _centre(T[0]), _centre(T[2]), _centre(T[3])
    pivot = np.asarray(WORKSPACE_CENTER, dtype=np.float64)
    np.testing.assert_allclose(left, _rz(30.0) @ (main - pivot) + pivot, atol=1e-4)
    np.testing.assert_allclose(right, _rz(-30.0) @ (main - pivot) + pivot, atol=1e-4)
    R_main = invert_se3(T[0])[:3, :3]
    np.testing.assert_allclose(invert_se3(T[2])[:3, :3], _rz(30.0) @ R_main, atol=1e-4)
    np.testing.assert_allclose(invert_se3(T[3])[:3, :3], _rz(-30.0) @ R_main, atol=1e-4)
    assert left[1] > 0 > right[1]  # +30 deg is counter-clockwise seen from above
    assert rig_env.view_kinds == ["real", "real", "anchor", "anchor"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_obs_matches_observation_space(task: str) -> None:
    env = EnerVerseEnv(task, views=["main", "wrist"], width=16, height=24, depth=task == "push")
    try:
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs), {k: (v.shape, v.dtype) for k, v in obs.items()}
        assert set(obs) == set(env.observation_space.spaces)
        assert obs["rgb"].shape == (2, 24, 16, 3) and obs["state"].shape == (STATE_DIM,)
        assert ("depth" in obs) == (task == "push")
        assert info["task"] == task and isinstance(info["instruction"], str) and info["instruction"]
        assert info["success"] is False and info["step"] == 0
        obs, reward, term, trunc, info = env.step(env.action_space.sample() * 0 + HOLD.astype(np.float32))
        assert env.observation_space.contains(obs)
        assert reward == 0.0 and not term and not trunc and info["step"] == 1
        assert env.action_space.shape == (7,)
    finally:
        env.close()


def test_gymnasium_check_env_on_registered_id() -> None:
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    assert sim.GYM_IDS["pick_place"] == "enerverse/PickPlace-v0"
    env = gymnasium.make("enerverse/PickPlace-v0", views=["main"], width=32, height=32)
    try:
        assert env.unwrapped.task.name == "pick_place"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=True)
            check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()
    for name, gym_id in sim.GYM_IDS.items():
        assert gym_id in gymnasium.registry, name


def test_render_rgb_array_tiles_views() -> None:
    env = EnerVerseEnv("reach", views=["main", "anchor_left"], width=16, height=16, render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (16, 32, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, np.concatenate(list(obs["rgb"]), axis=1))
    finally:
        env.close()


def test_reset_is_reproducible_from_its_seed() -> None:
    a = EnerVerseEnv("pick_place", views=["main", "wrist"], width=32, height=32)
    b = EnerVerseEnv("pick_place", views=["main", "wrist"], width=32, height=32)
    try:
        o1, i1 = a.reset(seed=7)
        for _ in range(3):  # disturb the state before resetting again
            a.step(np.array([0.03, 0.0, -0.02, 0.0, 0.0, 0.2, 0.0]))
        o2, i2 = a.reset(seed=7)
        o3, _ = b.reset(seed=7)
        for other in (o2, o3):
            for key in ("rgb", "state", "privileged", "T_cam_world", "K"):
                np.testing.assert_array_equal(o1[key], other[key], err_msg=key)
        assert i1["instruction"] == i2["instruction"]
        o4, _ = a.reset(seed=8)
        cube1, cube4 = o1["privileged"][:3], o4["privileged"][:3]
        plate1, plate4 = o1["privileged"][7:10], o4["privileged"][7:10]
        assert np.linalg.norm(cube1 - cube4) > 1e-3 and np.linalg.norm(plate1 - plate4) > 1e-3
        assert not np.array_equal(o1["rgb"], o4["rgb"])
    finally:
        a.close()
        b.close()


def test_memory_cue_is_restored_on_reset() -> None:
    env = EnerVerseEnv("memory", views=["main"], width=16, height=16)
    try:
        o1, _ = env.reset(seed=3)
        lamp = env.task.decode_privileged(o1["privileged"])["lamp_rgb"].copy()
        for _ in range(env.task.cue_steps + 1):
            obs, *_ = env.step(HOLD)
        assert not np.allclose(env.task.decode_privileged(obs["privileged"])["lamp_rgb"], lamp)  # cue gone
        o2, _ = env.reset(seed=3)
        np.testing.assert_array_equal(o1["rgb"], o2["rgb"])
        np.testing.assert_array_equal(o1["privileged"], o2["privileged"])
    finally:
        env.close()


# --- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,fragments",
    [
        ({"task": "nope"}, ["unknown task 'nope'", "valid tasks", "pick_place", "long_horizon"]),
        ({"task": "pick_plac"}, ["did you mean 'pick_place'"]),
        ({"views": ["main", "fisheye"]}, ["unknown camera 'fisheye'", "valid views", "wrist", "anchor_left"]),
        ({"views": []}, ["at least one view", "valid views"]),
        ({"views": ["main", "main"]}, ["distinct"]),
        ({"width": 0}, ["resolution must be positive", "width=0"]),
        ({"height": 0}, ["resolution must be positive", "height=0"]),
        ({"control": "torque"}, ["'ee' or 'joint'", "'torque'"]),
        ({"max_steps": 0}, ["max_steps must be positive"]),
        ({"anchors": [{"name": "x"}]}, ["anchor 'x'", "yaw_deg or eye"]),
        ({"anchors": [{"name": "x", "eye": [1, 0, 1]}]}, ["anchor 'x'", "eye and target"]),
    ],
)
def test_bad_constructor_arguments_name_what_was_expected(kwargs: dict, fragments: list[str]) -> None:
    args = {"task": "reach", "width": 16, "height": 16} | kwargs
    with pytest.raises(ValueError) as exc:
        EnerVerseEnv(**args)
    for frag in fragments:
        assert frag in str(exc.value)


@pytest.fixture(scope="module")
def ee_env() -> Iterator[EnerVerseEnv]:
    env = EnerVerseEnv("reach", views=["main"], width=16, height=16)
    env.reset(seed=0)
    yield env
    env.close()


@pytest.mark.parametrize(
    "action,fragments",
    [
        (np.zeros(6), ["shape (7,)", "(6,)"]),
        (np.zeros(8), ["shape (7,)", "(8,)"]),
        (np.zeros((1, 7)), ["shape (7,)", "(1, 7)"]),
        (np.full(7, np.nan), ["NaN"]),
        (np.array([0, 0, np.inf, 0, 0, 0, 1.0]), ["inf"]),
    ],
)
def test_bad_ee_actions_raise(ee_env: EnerVerseEnv, action: np.ndarray, fragments: list[str]) -> None:
    state = ee_env.data.qpos.copy()
    with pytest.raises(ValueError) as exc:
        ee_env.step(action)
    for frag in fragments:
        assert frag in str(exc.value)
    np.testing.assert_array_equal(ee_env.data.qpos, state)  # a rejected action does not step


def test_joint_control_rejects_a_7d_action() -> None:
    env = EnerVerseEnv("reach", views=["main"], width=16, height=16, control="joint")
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError) as exc:
            env.step(np.zeros(7))
        assert "joint" in str(exc.value) and "(8,)" in str(exc.value) and "(7,)" in str(exc.value)
    finally:
        env.close()


def test_joint_control_moves_toward_commanded_positions() -> None:
    env = EnerVerseEnv("reach", views=["main"], width=16, height=16, control="joint")
    try:
        obs, _ = env.reset(seed=0)
        assert env.action_space.shape == (8,)
        q0 = obs["state"][8:15].astype(np.float64)
        q_target = q0 + np.array([0.3, 0.2, -0.2, 0.25, 0.3, -0.2, 0.4])
        errs = []
        for _ in range(20):
            obs, *_ = env.step(np.concatenate([q_target, [1.0]]))
            errs.append(np.abs(obs["state"][8:15] - q_target).max())
        assert errs[-1] < 0.01 < np.abs(q0 - q_target).max()
        assert errs[-1] < errs[0]
        # the Δ-EE target is re-seated on the measured pose after joint control
        np.testing.assert_allclose(env.arm.target_pos, obs["state"][:3], atol=1e-5)
        # gripper command: 0 closes the fingers
        for _ in range(10):
            obs, *_ = env.step(np.concatenate([q_target, [0.0]]))
        assert obs["state"][7] < 0.01
    finally:
        env.close()


def test_anchor_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown anchor key.*valid keys: name, yaw_deg"):
        EnerVerseEnv("reach", width=16, height=16, anchors=[{"name": "a", "yaw": 30}])
    with pytest.raises(ValueError, match="taken by a built-in camera"):
        EnerVerseEnv("reach", width=16, height=16, anchors=[{"name": "main", "yaw_deg": 30}])


def test_applied_action_is_the_clipped_one_and_hold_keeps_still() -> None:
    horizon = {"name": "horizon", "eye": [0.5, 0.0, 0.3], "target": [1.5, 0.0, 0.0]}  # table + sky
    env = EnerVerseEnv("reach", views=["horizon"], anchors=[horizon], width=16, height=16, depth=True)
    try:
        obs, _ = env.reset(seed=0)
        assert np.isinf(obs["depth"]).any() and np.isfinite(obs["depth"]).any()  # background has no depth
        _, _, _, _, info = env.step(np.array([1.0, 0, 0, 0, 0, 0, 0.3], np.float32))
        np.testing.assert_allclose(info["applied_action"][:3], [0.05, 0, 0], atol=1e-7)
        hold = env.hold_action()
        np.testing.assert_allclose(hold, [0, 0, 0, 0, 0, 0, 0.3], atol=1e-6)  # gripper as commanded
    finally:
        env.close()
    env = EnerVerseEnv("reach", views=["main"], width=16, height=16, control="joint")
    try:
        obs, _ = env.reset(seed=0)
        q = obs["state"][8:15].astype(np.float64)
        hold = env.hold_action()
        assert hold.shape == (8,)
        for _ in range(5):
            obs, *_ = env.step(hold)
        np.testing.assert_allclose(obs["state"][8:15], q, atol=2e-3)  # holding, not driving to q = 0
    finally:
        env.close()
