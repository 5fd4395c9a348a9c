"""Record episodes from ROS 2 topics into the project's episode store (teleoperation or policy runs).

    ros2 run ros_nodes recorder_node --ros-args -p store:=data/real/pick_place -p provenance:=real \\
        -p task:=pick_place

It reads the same inputs as the policy node (camera images + camera_info per view, joint states,
end-effector pose, instruction) and the commands (``cmd_twist`` + ``cmd_gripper``). At ``record_rate``
(the store's fps) it appends one frame: the views, the state, and the action that was commanded (the
twist over one period plus the gripper command, the project's 7-D step action). A frame is written only
when every input is fresh and the views are time-matched.

An episode starts with the first command after an instruction (or ``record`` = true) and ends on the
sim node's ``episode_end`` (its success) or ``record`` = false (success from ``success_on_stop``).
Episodes are committed atomically by the store writer: a crash loses at most the episode being
recorded, never a committed one. Provenance is ``real`` or ``sim``.
"""

from __future__ import annotations

import json

import numpy as np
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from std_msgs.msg import Bool, Float64, String

from enerverse.core.store import EpisodeStore
from ros_nodes.inputs import INPUT_PARAMETERS, RobotInputs, camera_extrinsics
from ros_nodes.observation import ObservationBuffer
from ros_nodes.runner import run_node
from sim.cameras import RIG_VERSION

LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
RECORDER_PARAMETERS: dict[str, object] = {
    "store": "data/recorded",
    "provenance": "real",
    "rig_version": RIG_VERSION,  # the camera rig; a real robot names its own (e.g. "ur5-lab-1")
    "task": "pick_place",
    "resolution": 128,
    "state_dim": 15,
    "record_rate": 20.0,
    "max_input_age": 0.5,
    "twist_topic": "cmd_twist",
    "gripper_topic": "cmd_gripper",
    "instruction_topic": "instruction",
    "success_on_stop": False,
    "max_frames": 2000,
    **INPUT_PARAMETERS,
}


class RecorderNode(Node):
    """See module docstring."""

    def __init__(self, name: str = "enerverse_recorder") -> None:
        super().__init__(name)
        for k, v in RECORDER_PARAMETERS.items():  # rig_version may be a number (sim) or a name (a robot)
            self.declare_parameter(k, v, ParameterDescriptor(dynamic_typing=k == "rig_version"))
        if self.p("provenance") not in ("real", "sim"):
            raise ValueError(f"provenance must be 'real' or 'sim', got {self.p('provenance')!r}")
        self.views = list(self.p("views"))
        collection = {"rig_version": self.p("rig_version"), "source": "ros_nodes.recorder_node"}
        self.store = EpisodeStore.create(self.p("store"), attrs={"collection": collection})
        extrinsics = camera_extrinsics(list(self.p("camera_extrinsics")), self.views)
        self.buffer = ObservationBuffer(
            self.views, extrinsics, self.p("max_input_age"), self.p("sync_tolerance")
        )
        self.inputs = RobotInputs(self, self.buffer, int(self.p("resolution")), int(self.p("state_dim")))
        self.instruction, self.armed, self.moving = "", False, False
        self.twist, self.gripper = np.zeros(6), 1.0
        self.writer = None
        self.committed: list[int] = []
        self.create_subscription(String, self.p("instruction_topic"), self._on_instruction, LATCHED)
        self.create_subscription(TwistStamped, self.p("twist_topic"), self._on_twist, 10)
        self.create_subscription(Float64, self.p("gripper_topic"), self._on_gripper, 10)
        self.create_subscription(String, "episode_end", self._on_episode_end, LATCHED)
        self.create_subscription(Bool, "record", self._on_record, 10)
        self.create_timer(1.0 / float(self.p("record_rate")), self._tick)

    def p(self, name: str):
        return self.get_parameter(name).value

    # --- episode boundaries -------------------------------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        if self.writer is not None:
            self._finish(success=False, why="a new instruction arrived")
        self.instruction, self.armed, self.moving = msg.data, True, False

    def _on_record(self, msg: Bool) -> None:
        if msg.data:
            self.armed = True
        elif self.writer is not None:
            self._finish(success=bool(self.p("success_on_stop")), why="record = false")

    def _on_episode_end(self, msg: String) -> None:
        if self.writer is None:
            return
        try:
            success = bool(json.loads(msg.data)["success"])
        except (ValueError, KeyError, TypeError):
            self.get_logger().warning(f"episode_end {msg.data!r}: expected JSON with 'success'")
            success = False
        self._finish(success, "episode_end")

    def _start(self, obs: dict) -> None:
        index = max(self.store.indices(), default=-1) + 1
        self.writer = self.store.write_episode(
            index, task=self.p("task"), instruction=self.instruction, seed=-1, view_names=self.views,
            view_kinds=self._view_kinds(), fps=float(self.p("record_rate")), K=obs["K"],
            provenance=self.p("provenance"),
        )  # fmt: skip
        self.armed = self.moving = False
        self.get_logger().info(f"recording episode {index}: {self.instruction!r}")

    def _view_kinds(self) -> list[str]:
        """A real robot's views are real cameras; in sim the anchors are Free Anchor Views."""
        if self.p("provenance") == "real":
            return ["real"] * len(self.views)
        return ["real" if v in ("main", "wrist") else "anchor" for v in self.views]

    def _finish(self, success: bool, why: str) -> None:
        w, self.writer = self.writer, None
        if len(w) < 2:
            w.abort()
            self.get_logger().warning(f"episode dropped ({why}): fewer than 2 frames")
            return
        w.set_attrs(success=success)
        index = w.commit()
        self.committed.append(index)
        self.get_logger().info(
            f"committed episode {index} ({len(self.committed)} this run): {why}, success={success}"
        )

    # --- frames -------------------------------------------------------------------------------------
    def _on_twist(self, msg: TwistStamped) -> None:
        t = msg.twist
        v = np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])
        if np.isfinite(v).all():
            self.twist = v
            self.moving = self.moving or bool(self.armed and v.any())

    def _on_gripper(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self.gripper = float(np.clip(msg.data, 0.0, 1.0))

    def _tick(self) -> None:
        obs, _ = self.buffer.observation(self.inputs.now())
        if obs is None:
            return
        if self.writer is None:
            if not (self.armed and self.moving):
                return
            self._start(obs)
        action = np.concatenate([self.twist / float(self.p("record_rate")), [self.gripper]]).astype(
            np.float32
        )
        self.writer.add_frame(
            rgb=obs["rgb"], state=obs["state"], action=action, T_cam_world=obs["T_cam_world"]
        )
        if len(self.writer) >= int(self.p("max_frames")):
            self._finish(success=False, why=f"max_frames={self.p('max_frames')}")

    def close(self) -> None:
        """On shutdown an unfinished episode is discarded (committed ones are untouched)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def main(args: list[str] | None = None) -> None:
    """``ros2 run ros_nodes recorder_node``."""
    run_node(RecorderNode, args, threads=2)


if __name__ == "__main__":
    main()
