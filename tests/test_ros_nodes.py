"""The ROS 2 nodes over real topics: the sim node and the policy node in their own processes run an
episode; an observer in this process checks commands, their rate and the outcome. (There is no
``launch`` package on PyPI: the processes are started the way the launch files start them.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from ros_nodes.faults import CommandObserver, FakeRobot, moving  # noqa: E402

pytestmark = pytest.mark.integration
DOMAIN = 40 + os.getpid() % 150  # one DDS domain per test run


def ros_env(tmp_path: Path) -> dict:
    ros = {"ROS_DOMAIN_ID": str(DOMAIN), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    return {
        **os.environ,
        **ros,
        "ROS_LOG_DIR": str(tmp_path / "ros_log"),
        "EV_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
    }


def stop(proc: subprocess.Popen, log: Path) -> None:
    """SIGINT, as ``ros2 launch`` stops its processes: the node must leave (its exit deadline is 10 s)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        tail = log.read_text()[-4000:]
        raise AssertionError(f"{log.name}: the node ignored SIGINT for 30 s\n{tail}") from None
    if "shutdown stalled" in log.read_text():  # it left by its deadline: keep the stacks visible
        warnings.warn(f"{log.name}: {log.read_text()[-4000:]}", stacklevel=2)


def start(module: str, params: dict, tmp_path: Path, log: str) -> subprocess.Popen:
    args = [
        a for k, v in params.items() for a in ("-p", f"{k}:={json.dumps(v) if isinstance(v, list) else v}")
    ]
    out = open(tmp_path / log, "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *args], stdout=out, stderr=out,
                            env=ros_env(tmp_path), cwd=tmp_path)  # fmt: skip


def wait_for_episode(path: Path, timeout: float):
    """The store at ``path`` once it has a committed episode (None after ``timeout`` seconds)."""
    from enerverse.core.store import EpisodeStore

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (path / "zarr.json").exists() and EpisodeStore.open(path).indices():
            return EpisodeStore.open(path)
        time.sleep(0.2)
    return None


@pytest.mark.parametrize("mode", ["twist", "trajectory"])
def test_sim_and_policy_nodes_run_an_episode_over_topics(
    policy_workdir: Path, tmp_path: Path, mode: str
) -> None:
    from conftest import train_tiny_policy

    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(policy_workdir, "pol_ros", gen, "train.steps=2")
    views = ["main", "anchor_left"]
    sim_params = {"task": "reach", "seed": 1000, "views": views, "resolution": 32, "camera_rate": 20.0,
                  "command_mode": mode}  # fmt: skip
    sim = start("ros_nodes.sim_node", sim_params, tmp_path, "sim.log")
    policy_params = {"checkpoint": s["checkpoint"], "views": views, "control_rate": 10.0, "autostart": True,
                     "command_mode": mode}  # fmt: skip
    pol = start("ros_nodes.policy_node", policy_params, tmp_path, "policy.log")
    procs = {"policy.log": pol, "sim.log": sim}
    if mode == "twist":  # the recorder stores the twist commands as actions
        store = str(tmp_path / "recorded")
        rec_params = {"store": store, "provenance": "sim", "task": "reach", "views": views, "resolution": 32}
        procs["recorder.log"] = start("ros_nodes.recorder_node", rec_params, tmp_path, "recorder.log")
    obs = CommandObserver(DOMAIN, trajectory=mode == "trajectory")
    log = lambda name: (tmp_path / name).read_text()[-3000:]  # noqa: E731
    try:
        assert obs.spin_until(lambda: sum(moving(m) for _, m in obs.twists) >= 10, timeout=120), log(
            "policy.log"
        )
        assert obs.spin_until(lambda: obs.end is not None, timeout=120), log("sim.log")
        assert obs.end["task"] == "reach" and obs.end["steps"] > 0 and isinstance(obs.end["success"], bool)
        # the rate itself is measured by bench/ros_loop.py, not asserted here (no timed assertions)
        assert all(p.poll() is None for p in procs.values())  # every node still running
        if mode == "twist":
            store = wait_for_episode(tmp_path / "recorded", timeout=20)
            assert store is not None, log("recorder.log")
            ep = store.episode(store.indices()[0])
            assert ep.attrs["provenance"] == "sim" and ep.attrs["success"] == obs.end["success"]
            assert ep.attrs["instruction"] == "reach the green sphere"
            assert ep.load("rgb").shape[1:] == (2, 32, 32, 3) and ep.load("action").shape[1] == 7
            assert len(ep.load("state")) >= 2
    finally:
        obs.close()
        for name, p in procs.items():
            stop(p, tmp_path / name)


def test_policy_node_holds_on_faults_and_recovers(policy_workdir: Path, tmp_path: Path) -> None:
    """Malformed, stale, out-of-order and non-finite inputs, a restarted camera driver and the e-stop:
    the node holds the arm within the input-age limit + one period, keeps running, and resumes."""
    from conftest import train_tiny_policy

    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(policy_workdir, "pol_ros_faults", gen, "train.steps=2")
    views = ["main", "anchor_left"]
    params = {"checkpoint": s["checkpoint"], "views": views, "control_rate": 10.0, "autostart": True,
              "max_input_age": 0.3, "max_linear_speed": 5.0, "max_angular_speed": 50.0, "max_step": [1.0] * 7,
              "workspace_min": [-5.0, -5.0, -5.0], "workspace_max": [5.0, 5.0, 5.0]}  # fmt: skip
    pol = start("ros_nodes.policy_node", params, tmp_path, "policy.log")
    obs = CommandObserver(DOMAIN)
    robot = FakeRobot(obs, views)
    hold_within = 0.3 + 0.1 + 0.25  # input age limit + one control period + delivery slack

    def window(seconds: float, at_least: int = 3) -> list:
        """Commands over ``seconds``, and on until ``at_least`` arrived (a loaded machine is slow)."""
        n = len(obs.twists)
        obs.spin_until(lambda: False, timeout=seconds)
        obs.spin_until(lambda: len(obs.twists) - n >= at_least, timeout=20)
        return [m for _, m in obs.twists[n:]]

    try:
        assert obs.spin_until(lambda: any(moving(m) for _, m in obs.twists[-3:]), timeout=60), (
            tmp_path / "policy.log"
        ).read_text()[-3000:]
        for fault in ("bad_image", "cameras_silent", "nan_joints"):
            robot.fault = fault
            window(hold_within)
            held = window(1.0)
            assert held and not any(moving(m) for m in held), f"{fault}: the arm was not held"
            robot.fault = None
            assert obs.spin_until(lambda: any(moving(m) for _, m in obs.twists[-2:]), timeout=10), (
                f"after {fault}"
            )
        robot.fault = "old_stamps"  # out-of-order (older) stamps are ignored: the inputs go stale
        window(hold_within)
        assert not any(moving(m) for m in window(1.0))
        robot.fault = None
        robot.restart_cameras()
        assert obs.spin_until(lambda: any(moving(m) for _, m in obs.twists[-2:]), timeout=10), "after restart"
        from std_msgs.msg import Bool

        robot.estop.publish(Bool(data=True))
        window(0.3, at_least=1)
        assert not any(moving(m) for m in window(1.5)), "e-stop did not latch a hold"
        assert obs.reset_estop()
        assert obs.spin_until(lambda: any(moving(m) for _, m in obs.twists[-2:]), timeout=10), (
            "after e-stop reset"
        )
        assert pol.poll() is None, (tmp_path / "policy.log").read_text()[-3000:]
        log = (tmp_path / "policy.log").read_text()
        # said what it expected (the warning is throttled per call site: either view's may be the one logged)
        assert re.search(r"dropped a (main|anchor_left) image message: .*expected one of", log), log[-3000:]
        assert "Traceback" not in log
    finally:
        obs.close()
        stop(pol, tmp_path / "policy.log")


def test_a_killed_recorder_loses_no_committed_episode_and_resumes(tmp_path: Path) -> None:
    """SIGKILL mid-episode: the committed episodes stay readable, the unfinished one is only a
    leftover that cleanup removes, and a restarted recorder appends after the last committed one."""
    from geometry_msgs.msg import TwistStamped
    from std_msgs.msg import String

    from enerverse.core.store import EpisodeStore

    views, store = ["main", "anchor_left"], tmp_path / "recorded"
    params = {"store": str(store), "provenance": "real", "task": "pick_place", "views": views,
              "resolution": 32, "state_dim": 15, "record_rate": 10.0, "max_frames": 8,
              "max_input_age": 1.0}  # fmt: skip
    obs = CommandObserver(DOMAIN)
    FakeRobot(obs, views)
    twist_pub = obs.node.create_publisher(TwistStamped, "cmd_twist", 10)
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile

    latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    instr_pub = obs.node.create_publisher(String, "instruction", latched)

    from std_msgs.msg import Bool

    record_pub = obs.node.create_publisher(Bool, "record", 10)
    instr_pub.publish(String(data="put the cube on the plate"))

    def drive() -> None:  # a teleoperator moving the arm, with recording armed (re-armed after a commit)
        m = TwistStamped()
        m.twist.linear.x = 0.05
        twist_pub.publish(m)
        record_pub.publish(Bool(data=True))

    obs.node.create_timer(0.05, drive)

    def committed() -> list[int]:
        return EpisodeStore.open(store).indices() if (store / "zarr.json").exists() else []

    rec, log = start("ros_nodes.recorder_node", params, tmp_path, "recorder.log"), "recorder.log"
    try:
        assert obs.spin_until(lambda: len(committed()) >= 2, timeout=90), (
            tmp_path / "recorder.log"
        ).read_text()[-3000:]
        obs.spin_until(lambda: bool(EpisodeStore.open(store).incomplete()), timeout=10)  # one in progress
        rec.send_signal(signal.SIGKILL)
        rec.wait(timeout=10)
        before = committed()
        s = EpisodeStore.open(store)
        for i in before:  # every committed episode is whole
            ep = s.episode(i)
            assert ep.load("rgb").shape == (8, 2, 32, 32, 3) and ep.attrs["provenance"] == "real"
        s.cleanup_incomplete()
        assert not s.incomplete()
        rec, log = start("ros_nodes.recorder_node", params, tmp_path, "recorder2.log"), "recorder2.log"
        assert obs.spin_until(lambda: len(committed()) > len(before), timeout=90), (
            tmp_path / "recorder2.log"
        ).read_text()[-3000:]
        assert committed()[: len(before)] == before and committed()[len(before)] == max(before) + 1
    finally:
        obs.close()
        if rec.poll() is None:
            stop(rec, tmp_path / log)


STUCK_NODE = """
import sys, threading
from rclpy.node import Node
from ros_nodes import runner

class Stuck(Node):
    def __init__(self):
        super().__init__("stuck")
        self.create_timer(0.05, lambda: print("spinning", flush=True))

    def close(self):
        threading.Event().wait()  # a cleanup that never returns

runner.EXIT_DEADLINE_S = 1.0
runner.run_node(Stuck)
"""


def test_a_node_whose_cleanup_hangs_still_leaves_on_sigint(tmp_path: Path) -> None:
    log = tmp_path / "stuck.log"
    with open(log, "w") as out:
        cmd = [sys.executable, "-c", STUCK_NODE]
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=ros_env(tmp_path))
    deadline = time.monotonic() + 60
    while "spinning" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "spinning" in log.read_text(), log.read_text()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 1
    text = log.read_text()
    assert "shutdown stalled for 1 s" in text and "in close" in text  # the stuck frame is in the log
