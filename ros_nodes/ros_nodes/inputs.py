"""The robot inputs the policy node and the recorder share: camera images + camera_info per view,
joint states and the end-effector pose, converted, checked and fed into an
:class:`~ros_nodes.observation.ObservationBuffer`. A malformed message is logged (throttled) with what
was expected and dropped; it never raises into the executor."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState

from ros_nodes.convert import MessageError, camera_info_to_K, image_to_rgb, joint_positions, stamp_seconds
from ros_nodes.observation import ObservationBuffer, robot_state

INPUT_PARAMETERS: dict[str, object] = {
    "views": ["main", "anchor_left", "anchor_right"],
    "image_topic": "camera/{view}/image_raw",
    "camera_info_topic": "camera/{view}/camera_info",
    "camera_extrinsics": [0.0],  # 16 numbers per view (T_cam_world, row-major); [0.0]: the simulator rig
    "joint_states_topic": "joint_states",
    "arm_joints": [f"joint{i}" for i in range(1, 8)],
    "gripper_joints": ["finger_left", "finger_right"],
    "ee_pose_topic": "ee_pose",
    "sync_tolerance": 0.06,
}


def camera_extrinsics(flat: list[float], views: list[str]) -> dict[str, np.ndarray]:
    """T_cam_world per view from a flat parameter (16 numbers per view), or the simulator rig's."""
    if len(flat) == 16 * len(views):
        return {v: np.asarray(flat[16 * i : 16 * i + 16], float).reshape(4, 4) for i, v in enumerate(views)}
    if list(flat) not in ([0.0], []):
        raise ValueError(f"camera_extrinsics needs 16 numbers per view ({16 * len(views)}), got {len(flat)}")
    from ros_nodes.sim_rig import rig_extrinsics

    return rig_extrinsics(views)


class RobotInputs:
    """Subscriptions feeding ``buffer`` (see module docstring). ``state_dim``: the expected state size."""

    def __init__(self, node: Node, buffer: ObservationBuffer, resolution: int, state_dim: int) -> None:
        self.node, self.buffer, self.resolution, self.state_dim = node, buffer, resolution, state_dim
        p = lambda k: node.get_parameter(k).value  # noqa: E731
        self.arm_joints, self.gripper_joints = list(p("arm_joints")), list(p("gripper_joints"))
        self.joints_q: np.ndarray | None = None
        self.gripper_width = 0.0
        self.pose: np.ndarray | None = None
        self.arrived = {"joints": -1e9, "pose": -1e9}  # when each valid part of the state last came
        group = ReentrantCallbackGroup()
        self.subs = []

        def sub(msg_type, topic: str, callback) -> None:
            self.subs.append(node.create_subscription(msg_type, topic, callback, qos_profile_sensor_data,
                                                      callback_group=group))  # fmt: skip

        for v in buffer.views:
            sub(Image, p("image_topic").format(view=v), lambda m, v=v: self._on_image(v, m))
            sub(CameraInfo, p("camera_info_topic").format(view=v), lambda m, v=v: self._on_info(v, m))
        sub(JointState, p("joint_states_topic"), self._on_joints)
        sub(PoseStamped, p("ee_pose_topic"), self._on_pose)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def reject(self, what: str, e: Exception, stale: str | None = None) -> None:
        """Log a dropped message; ``stale``: the input (a view or "state") that now holds the arm."""
        self.node.get_logger().warning(f"dropped a {what} message: {e}", throttle_duration_sec=2.0)
        if stale is not None:
            self.buffer.invalidate(stale)

    def _on_image(self, view: str, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg, self.resolution)
        except MessageError as e:
            return self.reject(f"{view} image", e, stale=view)
        self.buffer.add_image(view, stamp_seconds(msg.header.stamp), rgb, self.now())

    def _on_info(self, view: str, msg: CameraInfo) -> None:
        try:
            self.buffer.add_camera_info(view, camera_info_to_K(msg, self.resolution))
        except MessageError as e:
            self.reject(f"{view} camera_info", e)

    def _on_joints(self, msg: JointState) -> None:
        try:
            q = joint_positions(msg, self.arm_joints)
            fingers = joint_positions(msg, self.gripper_joints)
            self._check_stamp(msg)
        except MessageError as e:
            self.joints_q = None  # the state is stale until valid joint states arrive again
            return self.reject("joint_states", e, stale="state")
        self.joints_q, self.gripper_width = q, float(fingers.sum())
        self.arrived["joints"] = self.now()
        self._update_state()

    def _on_pose(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        pose = np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w])
        if not np.isfinite(pose).all() or abs(np.linalg.norm(pose[3:]) - 1.0) > 0.05:
            self.pose = None  # the state is stale until a valid pose arrives again
            why = f"pose {pose.tolist()}: expected finite numbers and a unit quaternion"
            return self.reject("ee_pose", MessageError(why), stale="state")
        self.pose = pose
        self.arrived["pose"] = self.now()
        self._update_state()

    def _check_stamp(self, msg) -> None:
        """Refuse a stamped message older than the input limit (an unstamped one, 0, is accepted)."""
        t = stamp_seconds(msg.header.stamp)
        age = self.now() - t
        if t > 0 and age > self.buffer.watchdog.limit:
            raise MessageError(f"stamped {age:.2f} s ago; expected under {self.buffer.watchdog.limit} s")

    def _update_state(self) -> None:
        """A new state only from fresh joint states and a fresh pose (one silent source makes it stale)."""
        if self.joints_q is None or self.pose is None:
            return
        if self.now() - min(self.arrived.values()) > self.buffer.watchdog.limit:
            return
        state = robot_state(self.pose[:3], self.pose[3:], self.gripper_width, self.joints_q)
        if state.shape[0] != self.state_dim:
            why = f"{state.shape[0]} numbers; the policy expects {self.state_dim}"
            return self.reject("state", MessageError(why))
        self.buffer.add_state(state, self.now())
