"""Fault injection around the policy node: a stand-in robot driver with fault switches, and an observer
of the commands. The fault-injection test (tests/test_ros_nodes.py) and the soak
(bench/ros_soak.py) drive the policy node with them over real topics.

Faults (``FakeRobot.fault``): ``bad_image`` (wrong encoding), ``cameras_silent`` (no images),
``nan_joints`` (a non-finite joint), ``old_stamps`` (images and joints stamped 5 s in the past, so
out of order); plus ``restart_cameras()`` (the camera driver dies and comes back) and the e-stop.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ros_nodes.convert import K_to_camera_info, rgb_to_image

FAULTS = ("bad_image", "cameras_silent", "nan_joints", "old_stamps")
HOME_JOINTS = [0.0, -0.35, 0.0, -2.45, 0.0, 2.1, 0.0, 0.04, 0.04]


def moving(m) -> bool:
    """A twist that moves, or any joint trajectory (holds are not published while joints are unknown)."""
    if not hasattr(m, "twist"):
        return bool(m.points)
    t = m.twist
    return any(
        abs(x) > 1e-9 for x in (t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z)
    )


class CommandObserver:
    """A node in its own context that records the policy node's commands ``(monotonic time, msg)`` and
    the sim node's latched episode end."""

    def __init__(self, domain: int, trajectory: bool = False) -> None:
        os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("observer", context=self.ctx)
        self.twists: list[tuple[float, object]] = []
        self.end: dict | None = None
        msg_type, topic = (
            (JointTrajectory, "cmd_joint_trajectory") if trajectory else (TwistStamped, "cmd_twist")
        )
        self.node.create_subscription(
            msg_type, topic, lambda m: self.twists.append((time.monotonic(), m)), 50
        )
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "episode_end", self._on_end, latched)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def _on_end(self, msg) -> None:
        self.end = json.loads(msg.data)

    def spin_until(self, done, timeout: float) -> bool:
        """Spin until ``done()`` (True) or ``timeout`` seconds (False)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.executor.spin_once(timeout_sec=0.05)
            if done():
                return True
        return False

    def reset_estop(self, timeout: float = 10.0) -> bool:
        """Call the policy node's ``reset_estop`` service; whether it answered with success."""
        client = self.node.create_client(Trigger, "/enerverse_policy/reset_estop")
        if not client.wait_for_service(timeout_sec=timeout):
            return False
        future = client.call_async(Trigger.Request())
        ok = self.spin_until(future.done, timeout) and future.result().success
        self.node.destroy_client(client)
        return bool(ok)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


class FakeRobot:
    """Publishes what a robot would (``views`` at ``size`` px + camera_info, joint states, the end-effector
    pose) at ``rate`` Hz on the observer's node, with :attr:`fault` switches (module docstring)."""

    def __init__(self, obs: CommandObserver, views: list[str], size: int = 32, rate: float = 20.0) -> None:
        self.node, self.views, self.size = obs.node, views, int(size)
        self.estop = obs.node.create_publisher(Bool, "estop", 10)
        self.fault: str | None = None
        self.rng = np.random.default_rng(0)
        self._make_camera_pubs()
        self.joint_pub = obs.node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.pose_pub = obs.node.create_publisher(PoseStamped, "ee_pose", qos_profile_sensor_data)
        f = 0.94 * self.size  # the focal length of a 56 degree field of view
        self.K = np.array([[f, 0, self.size / 2], [0, f, self.size / 2], [0, 0, 1]])
        obs.node.create_timer(1.0 / rate, self.publish)

    def _make_camera_pubs(self) -> None:
        qos = qos_profile_sensor_data
        self.image_pubs = {
            v: self.node.create_publisher(Image, f"camera/{v}/image_raw", qos) for v in self.views
        }
        self.info_pubs = {
            v: self.node.create_publisher(CameraInfo, f"camera/{v}/camera_info", qos) for v in self.views
        }

    def restart_cameras(self) -> None:
        """The camera driver dies and comes back: its publishers are destroyed and made anew."""
        for pub in [*self.image_pubs.values(), *self.info_pubs.values()]:
            self.node.destroy_publisher(pub)
        self._make_camera_pubs()

    def publish(self) -> None:
        t = self.node.get_clock().now().nanoseconds * 1e-9 - (5.0 if self.fault == "old_stamps" else 0.0)
        if self.fault != "cameras_silent":
            frame = self.rng.integers(60, 200, (self.size, self.size, 3), dtype=np.uint8)
            for v in self.views:
                img = rgb_to_image(frame, t, v)
                if self.fault == "bad_image":
                    img.encoding = "mono16"
                self.image_pubs[v].publish(img)
                self.info_pubs[v].publish(K_to_camera_info(self.K, self.size, self.size, t, v))
        js = JointState(name=[f"joint{i}" for i in range(1, 8)] + ["finger_left", "finger_right"])
        js.header.stamp.sec, js.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        js.position = list(HOME_JOINTS)
        if self.fault == "nan_joints":
            js.position[2] = float("nan")
        self.joint_pub.publish(js)
        pose = PoseStamped()
        pose.pose.position.x, pose.pose.position.z = 0.5, 0.3
        pose.pose.orientation.x, pose.pose.orientation.w = 1.0, 0.0  # gripper pointing down
        self.pose_pub.publish(pose)
