"""The ROS nodes' safety layer: watchdog, e-stop latch, action checks, speed / acceleration /
workspace limits (pure Python, no ROS needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ros_nodes.safety import CommandShaper, EStop, SafetyLimits, Watchdog, check_action

STEP = [0.01, 0.0, -0.005, 0.0, 0.0, 0.05, 1.0]  # 1 cm / step along x, a little down, open gripper


def test_watchdog_holds_on_missing_and_stale_inputs() -> None:
    w = Watchdog(["main", "joint_states"], limit_s=0.5)
    assert w.stale(0.0) == ["main", "joint_states"]  # nothing seen yet
    w.feed("main", 1.0)
    w.feed("joint_states", 1.2)
    assert w.stale(1.4) == []
    assert w.stale(1.6) == ["main"]
    w.feed("main", 0.2)  # an out-of-order (older) stamp does not count as fresh
    assert w.stale(1.6) == ["main"]


def test_watchdog_expires_bad_inputs_and_looks_one_period_ahead() -> None:
    w = Watchdog(["main", "state"], limit_s=0.3)
    w.feed("main", 1.0)
    w.feed("state", 1.0)
    assert w.stale(1.25) == []
    assert w.stale(1.25, horizon=0.1) == ["main", "state"]  # would age out before the next tick
    w.expire("state")  # a malformed message: stale at once, not 0.3 s later
    assert w.stale(1.05) == ["state"]
    w.feed("state", 1.1)
    assert w.stale(1.15) == []


def test_observation_buffer_holds_on_late_stamps_and_invalidated_inputs() -> None:
    from ros_nodes.observation import ObservationBuffer

    eye = {v: np.eye(4) for v in ("main", "left")}
    buf = ObservationBuffer(["main", "left"], eye, max_age=0.3, sync_tolerance=0.05)
    img = np.zeros((8, 8, 3), np.uint8)
    for v in ("main", "left"):
        buf.add_camera_info(v, np.eye(3))
        buf.add_image(v, 10.0, img, now=10.01)
    buf.add_state(np.zeros(15, np.float32), now=10.01)
    assert buf.observation(10.05)[0] is not None
    late = ObservationBuffer(["main"], eye, max_age=0.3, sync_tolerance=0.05)
    late.add_camera_info("main", np.eye(3))
    late.add_state(np.zeros(15, np.float32), now=10.25)
    late.add_image("main", 10.0, img, now=10.25)  # captured 0.25 s before it arrived: its age counts
    assert late.observation(10.26)[0] is not None and late.observation(10.26, horizon=0.1)[0] is None
    buf.add_image("left", 5.0, img, now=10.06)  # stamped 5 s ago: the camera is late
    obs, why = buf.observation(10.07)
    assert obs is None and "left" in why
    for v in ("main", "left"):  # fresh images clear it
        buf.add_image(v, 10.08, img, now=10.09)
    assert buf.observation(10.1)[0] is not None
    buf.invalidate("state")  # e.g. a non-finite joint state
    obs, why = buf.observation(10.1)
    assert obs is None and "state" in why


def test_estop_latches_until_reset() -> None:
    e = EStop()
    e.trigger("operator")
    assert e.latched and e.reason == "operator"
    e.trigger("again")
    assert e.latched
    e.reset()
    assert not e.latched and e.reason == ""


@pytest.mark.parametrize(
    "bad, why",
    [
        ([0.0] * 6, "7-D"),
        ([np.nan, 0, 0, 0, 0, 0, 1], "non-finite"),
        ([np.inf, 0, 0, 0, 0, 0, 1], "non-finite"),
        ([0.2, 0, 0, 0, 0, 0, 1], "beyond the limits"),
        ([0, 0, 0, 0, 0, 0, 1.5], "gripper in"),
    ],
)
def test_bad_actions_are_dropped_with_a_reason(bad, why: str) -> None:
    assert why in check_action(bad, SafetyLimits())
    cmd = CommandShaper(SafetyLimits(), period=0.1).shape(bad)
    assert cmd.hold and why in cmd.reason
    assert not cmd.linear.any() and not cmd.angular.any()


def test_the_step_limit_scales_with_the_actions_summed_into_one_command() -> None:
    """A node at 10 Hz over a 20 Hz policy sends two policy steps per command: 0.03 + 0.03 m passes
    the 0.05 m per-step limit, 0.06 m as one step does not; the gripper's range never scales."""
    two = [0.06, 0, 0, 0, 0, 0, 1]
    assert "beyond the limits" in check_action(two, SafetyLimits())
    assert check_action(two, SafetyLimits(), steps=2) is None
    assert "gripper in" in check_action([0, 0, 0, 0, 0, 0, 1.5], SafetyLimits(), steps=2)
    assert not CommandShaper(SafetyLimits(), period=0.1).shape(two, steps=2).hold


def test_speed_and_acceleration_are_limited() -> None:
    lim = SafetyLimits(max_linear_speed=0.2, max_linear_accel=1.0)
    s = CommandShaper(lim, period=0.1)
    assert check_action(STEP, lim) is None
    fast = [0.05, 0, 0, 0, 0, 0, 1]  # 0.5 m/s asked, 0.2 m/s allowed, +0.1 m/s per period
    speeds = [np.linalg.norm(s.shape(fast).linear) for _ in range(4)]
    np.testing.assert_allclose(speeds, [0.1, 0.2, 0.2, 0.2], atol=1e-9)
    held = s.hold("stale image")
    assert held.hold and held.gripper == 1.0
    assert np.linalg.norm(s.shape(fast).linear) == pytest.approx(0.1)  # ramps up again after a hold
    assert np.linalg.norm(s.shape(STEP).angular) <= lim.max_angular_speed + 1e-9


def test_workspace_box_stops_motion_at_its_faces() -> None:
    lim = SafetyLimits(workspace_min=[0.2, -0.4, 0.05], workspace_max=[0.8, 0.4, 0.5], max_linear_accel=100.0)
    s = CommandShaper(lim, period=0.1)
    down = [0.0, 0.0, -0.02, 0.0, 0.0, 0.0, 0.5]  # 0.2 m/s down
    at_floor = s.shape(down, ee_position=[0.5, 0.0, 0.05]).linear
    assert at_floor[2] == pytest.approx(0.0)
    near = s.shape(down, ee_position=[0.5, 0.0, 0.06]).linear  # 1 cm above: may move 1 cm
    assert near[2] == pytest.approx(-0.1)
    assert s.shape([0.0, 0.0, 0.02, 0, 0, 0, 0.5], ee_position=[0.5, 0.0, 0.05]).linear[2] > 0  # away: free


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="workspace_min"):
        SafetyLimits(workspace_min=[0.9, 0, 0]).validate()
    with pytest.raises(ValueError, match="max_linear_speed"):
        SafetyLimits(max_linear_speed=0).validate()


def test_message_conversions_round_trip_and_name_what_they_expected() -> None:
    pytest.importorskip("rclpy")
    from ros_nodes.convert import (
        K_to_camera_info,
        MessageError,
        camera_info_to_K,
        image_to_rgb,
        joint_positions,
        rgb_to_image,
        stamp_seconds,
    )
    from sensor_msgs.msg import JointState

    rgb = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, 12.25, "main")
    assert stamp_seconds(msg.header.stamp) == pytest.approx(12.25)
    np.testing.assert_array_equal(image_to_rgb(msg, 16, "main"), rgb)
    msg.encoding = "bgr8"
    np.testing.assert_array_equal(image_to_rgb(msg), rgb[:, :, ::-1])
    for bad, why in (
        ({"encoding": "mono8"}, "expected one of"),
        ({"width": 8, "step": 24}, "expected 16x16"),
        ({"data": msg.data[:-3]}, "bytes"),
    ):
        broken = rgb_to_image(rgb, 0.0, "main")
        for k, v in bad.items():
            setattr(broken, k, v)
        with pytest.raises(MessageError, match=why):
            image_to_rgb(broken, 16)
    with pytest.raises(MessageError, match="expected 'main'"):
        image_to_rgb(rgb_to_image(rgb, 0.0, "wrist"), 16, "main")
    K = np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    np.testing.assert_array_equal(camera_info_to_K(K_to_camera_info(K, 16, 16, 0.0, "main"), 16), K)
    with pytest.raises(MessageError, match="fx, fy > 0"):
        camera_info_to_K(K_to_camera_info(np.zeros((3, 3)), 16, 16, 0.0, "main"))
    js = JointState(name=["j2", "j1", "extra"], position=[2.0, 1.0, 9.0])
    np.testing.assert_array_equal(joint_positions(js, ["j1", "j2"]), [1.0, 2.0])
    with pytest.raises(MessageError, match=r"lacks joints \['j3'\]"):
        joint_positions(js, ["j1", "j3"])


ROS_PKG = Path(__file__).resolve().parents[1] / "ros_nodes"


def test_package_files_are_a_valid_ament_python_package() -> None:
    import ast
    import xml.etree.ElementTree as ET

    root = ET.parse(ROS_PKG / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "ros_nodes"
    assert root.find("export").findtext("build_type") == "ament_python"
    assert (ROS_PKG / "resource" / "ros_nodes").is_file()
    setup = (ROS_PKG / "setup.py").read_text()
    for script in ("policy_node", "sim_node", "recorder_node"):
        assert (
            f"{script} = ros_nodes.{script}:main" in setup
            and (ROS_PKG / "ros_nodes" / f"{script}.py").is_file()
        )
    for launch in ("sim.launch.py", "robot.launch.py"):
        tree = ast.parse((ROS_PKG / "launch" / launch).read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "generate_launch_description" in names, launch


def test_parameter_files_only_set_parameters_the_nodes_declare() -> None:
    pytest.importorskip("rclpy")
    import yaml
    from ros_nodes.policy_node import PARAMETERS
    from ros_nodes.recorder_node import RECORDER_PARAMETERS
    from ros_nodes.sim_node import SIM_PARAMETERS

    declared = {
        "enerverse_policy": PARAMETERS,
        "enerverse_sim": SIM_PARAMETERS,
        "enerverse_recorder": RECORDER_PARAMETERS,
    }
    for path in sorted((ROS_PKG / "config").glob("*.yaml")):
        for node, body in yaml.safe_load(path.read_text()).items():
            params = body["ros__parameters"]
            unknown = set(params) - set(declared[node])
            assert not unknown, f"{path.name}: {node} does not declare {sorted(unknown)}"
            flat = params.get("camera_extrinsics", [0.0])
            assert flat == [0.0] or len(flat) == 16 * len(params["views"]), f"{path.name}: {node} extrinsics"


def test_joint_targets_move_the_end_effector_by_the_step() -> None:
    import mujoco
    from ros_nodes.kinematics import JointTargets

    from sim.scene import HOME_QPOS

    jt = JointTargets()
    q1 = jt.step(HOME_QPOS, np.array([0.01, -0.005, 0.0, 0.0, 0.0, 0.0, 1.0]))
    poses = []
    for q in (HOME_QPOS, q1):
        jt.data.qpos[jt.arm.qadr] = q
        mujoco.mj_kinematics(jt.model, jt.data)
        poses.append(jt.arm.ee_pose())
    np.testing.assert_allclose(poses[1][0] - poses[0][0], [0.01, -0.005, 0.0], atol=1e-3)
    np.testing.assert_allclose(poses[1][1], poses[0][1], atol=1e-2)  # orientation kept
