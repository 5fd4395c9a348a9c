"""A MuJoCo task of ``sim`` as if it were a robot, over ROS 2 topics.

    ros2 run ros_nodes sim_node --ros-args -p task:=pick_place -p seed:=1000

- Publishes ``joint_states`` (``sensor_msgs/JointState``: the 7 arm joints and the two fingers) and
  ``ee_pose`` (``geometry_msgs/PoseStamped``) every physics step (``sim.env.CONTROL_HZ``, 20 Hz), the
  camera images and ``camera_info`` of every view at ``camera_rate``, sim time on ``/clock``, the
  instruction (latched ``std_msgs/String``), ``success`` (``std_msgs/Bool``) and, when an episode
  ends, ``episode_end`` (``std_msgs/String``, JSON: success, steps, task, seed).
- Accepts the policy node's commands: ``cmd_twist`` (``geometry_msgs/TwistStamped``, m/s and rad/s
  in the base frame) or, with ``command_mode=trajectory``, ``cmd_joint_trajectory``
  (``trajectory_msgs/JointTrajectory``, its first point as the joint goal), and ``cmd_gripper``
  (``std_msgs/Float64``, 1 = open). Each step applies the
  newest twist times the step period; a command older than ``command_timeout`` holds the arm.
- An episode's steps start with the first command (``wait_for_command``), so a policy that is still
  loading does not lose the episode.
- ``~/reset`` (``std_srvs/Trigger``) starts a new episode from the ``task`` and ``seed`` parameters
  (set them first to change task or seed; ``seed`` then advances by one per episode).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ros_nodes.convert import K_to_camera_info, rgb_to_image, seconds_stamp
from ros_nodes.runner import run_node
from sim.env import EnerVerseEnv
from sim.scene import ARM_JOINTS, CONTROL_HZ, FINGER_JOINTS

LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
SENSOR = qos_profile_sensor_data
SIM_PARAMETERS: dict[str, object] = {
    "task": "pick_place",
    "seed": 1000,
    "views": ["main", "anchor_left", "anchor_right"],
    "resolution": 128,
    "camera_rate": 30.0,
    "command_timeout": 0.3,
    "command_mode": "twist",  # twist | trajectory (joint targets; the arm runs joint-space control)
    "twist_topic": "cmd_twist",
    "trajectory_topic": "cmd_joint_trajectory",
    "gripper_topic": "cmd_gripper",
    "image_topic": "camera/{view}/image_raw",
    "camera_info_topic": "camera/{view}/camera_info",
    "base_frame": "world",
    "wait_for_command": True,  # an episode's clock starts with the first command (the policy is ready)
    "auto_reset": False,  # start the next episode (seed + 1) as soon as one ends
}


class SimNode(Node):
    """See module docstring."""

    def __init__(self, name: str = "enerverse_sim") -> None:
        super().__init__(name)
        for k, v in SIM_PARAMETERS.items():
            self.declare_parameter(k, v)
        self.lock = threading.Lock()
        self.env: EnerVerseEnv | None = None
        self.env_key: tuple | None = None
        self.twist, self.twist_time, self.gripper = np.zeros(6), -1e9, 1.0
        self.views = list(self.p("views"))
        self.joint_pub = self.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.pose_pub = self.create_publisher(PoseStamped, "ee_pose", qos_profile_sensor_data)
        topic = lambda key, v: self.p(key).format(view=v)  # noqa: E731
        self.image_pubs = {
            v: self.create_publisher(Image, topic("image_topic", v), SENSOR) for v in self.views
        }
        self.info_pubs = {
            v: self.create_publisher(CameraInfo, topic("camera_info_topic", v), SENSOR) for v in self.views
        }
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.success_pub = self.create_publisher(Bool, "success", 10)
        self.end_pub = self.create_publisher(String, "episode_end", LATCHED)
        self.create_subscription(TwistStamped, self.p("twist_topic"), self._on_twist, 10)
        self.joint_goal: np.ndarray | None = None
        self.create_subscription(JointTrajectory, self.p("trajectory_topic"), self._on_trajectory, 10)
        self.create_subscription(Float64, self.p("gripper_topic"), self._on_gripper, 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._reset()
        self.create_timer(1.0 / CONTROL_HZ, self._step)
        self.create_timer(1.0 / float(self.p("camera_rate")), self._publish_cameras)

    def p(self, name: str):
        return self.get_parameter(name).value

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # --- episodes ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        key = (self.p("task"), tuple(self.views), int(self.p("resolution")))
        with self.lock:
            if self.env_key != key:  # another task or rig: a new scene
                if self.env is not None:
                    self.env.close()
                R = key[2]
                control = "joint" if self.p("command_mode") == "trajectory" else "ee"
                self.env = EnerVerseEnv(task=key[0], views=list(key[1]), width=R, height=R, control=control)
                self.env_key = key
            self.seed = int(self.p("seed"))
            self.obs, info = self.env.reset(seed=self.seed)
            self.obs_time, self.steps, self.done, self.success = self._now(), 0, False, False
            self.started = not self.p("wait_for_command")
            self.twist, self.gripper = np.zeros(6), 1.0
        self.instruction_pub.publish(String(data=info["instruction"]))
        self.get_logger().info(f"episode: {key[0]} seed {self.seed}: {info['instruction']!r}")

    def _on_reset(self, request, response):
        self.set_parameters(
            [rclpy.parameter.Parameter("seed", value=int(self.p("seed")) + (1 if self.done else 0))]
        )
        self._reset()
        response.success, response.message = True, f"{self.p('task')} seed {self.seed}"
        return response

    # --- commands ---------------------------------------------------------------------------------
    def _on_twist(self, msg: TwistStamped) -> None:
        v = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z,
                      msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z])  # fmt: skip
        if np.isfinite(v).all():
            self.twist, self.twist_time = v, self._now()
        else:
            self.get_logger().warning(f"dropped a non-finite twist {v.tolist()}", throttle_duration_sec=2.0)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(msg.joint_names)
        if not msg.points or sorted(names) != sorted(ARM_JOINTS):
            self.get_logger().warning(f"dropped a trajectory for joints {names}; expected {list(ARM_JOINTS)}",
                                      throttle_duration_sec=2.0)  # fmt: skip
            return
        q = np.array([msg.points[0].positions[names.index(j)] for j in ARM_JOINTS])
        if np.isfinite(q).all():
            self.joint_goal, self.twist_time = q, self._now()

    def _on_gripper(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self.gripper = float(np.clip(msg.data, 0.0, 1.0))

    # --- stepping ---------------------------------------------------------------------------------
    def _step(self) -> None:
        with self.lock:
            fresh = self._now() - self.twist_time <= float(self.p("command_timeout"))
            self.started = self.started or fresh
            if self.started and not self.done:
                action = self._action(fresh)
                self.obs, _, terminated, truncated, info = self.env.step(action)
                self.obs_time, self.steps = self._now(), self.steps + 1
                self.success = bool(info["success"])
                if terminated or truncated:
                    self.done = True
                    end = {
                        "success": self.success,
                        "steps": self.steps,
                        "task": self.p("task"),
                        "seed": self.seed,
                    }
                    self.end_pub.publish(String(data=json.dumps(end)))
                    self.get_logger().info(f"episode end: {end}")
            else:  # paused (waiting for the first command, or ended): the static scene is observed anew
                self.obs_time = self._now()
            state, t = self.obs["state"], self.obs_time
        self._publish_robot(state, t)
        self.success_pub.publish(Bool(data=self.success))
        if self.done and self.p("auto_reset"):
            self.set_parameters([rclpy.parameter.Parameter("seed", value=self.seed + 1)])
            self._reset()

    def _action(self, fresh: bool) -> np.ndarray:
        """The env action: the twist over one step (Δ-EE), or the joint goal (joint control); a stale
        command holds the arm."""
        if self.env.control == "joint":
            if not fresh or self.joint_goal is None:
                return self.env.hold_action()
            return np.concatenate([self.joint_goal, [self.gripper]]).astype(np.float32)
        delta = self.twist / CONTROL_HZ if fresh else np.zeros(6)
        return np.concatenate([delta, [self.gripper]]).astype(np.float32)

    def _publish_robot(self, state: np.ndarray, t: float) -> None:
        stamp = seconds_stamp(t)
        js = JointState(name=[*ARM_JOINTS, *FINGER_JOINTS])
        js.header.stamp = stamp
        width = float(state[7])
        js.position = [float(x) for x in state[8:15]] + [width / 2, width / 2]
        self.joint_pub.publish(js)
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.p("base_frame")
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(x) for x in state[:3])
        w, x, y, z = (float(v) for v in state[3:7])
        pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = (
            x,
            y,
            z,
            w,
        )
        self.pose_pub.publish(pose)
        self.clock_pub.publish(Clock(clock=seconds_stamp(self.steps / CONTROL_HZ)))

    def close(self) -> None:
        if self.env is not None:
            self.env.close()

    def _publish_cameras(self) -> None:
        with self.lock:
            rgb, K, t = self.obs["rgb"], self.obs["K"], self.obs_time
        R = rgb.shape[1]
        for i, v in enumerate(self.views):
            self.image_pubs[v].publish(rgb_to_image(rgb[i], t, v))
            self.info_pubs[v].publish(K_to_camera_info(K[i], R, R, t, v))


def main(args: list[str] | None = None) -> None:
    """``ros2 run ros_nodes sim_node``."""
    run_node(SimNode, args, threads=1)


if __name__ == "__main__":
    main()
