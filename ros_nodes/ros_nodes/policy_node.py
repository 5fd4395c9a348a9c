"""The EnerVerse policy as a ROS 2 lifecycle node.

    ros2 run ros_nodes policy_node --ros-args --params-file config/sim.yaml

- ``configure`` loads the checkpoint into :class:`~policies.runtime.PolicyRuntime` (background
  inference) and warms it up; ``activate`` starts the control timer; ``deactivate`` holds the arm.
- Inputs: ``sensor_msgs/Image`` + ``CameraInfo`` per view (sensor-data QoS, time-matched within
  ``sync_tolerance``), ``sensor_msgs/JointState``, the end-effector pose (``geometry_msgs/PoseStamped``),
  the instruction (``std_msgs/String``), and an e-stop (``std_msgs/Bool``; ``~/reset_estop`` clears it).
- Outputs: ``geometry_msgs/TwistStamped`` (Cartesian servoing, MoveIt Servo style) or, with
  ``command_mode=trajectory``, ``trajectory_msgs/JointTrajectory`` (ros2_control style: one point a
  period ahead, by IK with the project's arm model, :mod:`ros_nodes.kinematics`), and the gripper
  command (``std_msgs/Float64``, 1 = open); optionally the imagined future views as images; latency
  and hold diagnostics on ``/diagnostics``.

The policy's actions are steps at ``action_rate`` (its training data's rate, 20 Hz in sim). At a
lower ``control_rate`` each tick takes the next ``action_rate / control_rate`` actions and commands
their summed motion over the tick. The safety layer (:mod:`ros_nodes.safety`) holds the arm on stale
inputs, an e-stop, a malformed or non-finite action, and limits speed, acceleration and workspace.
"""

from __future__ import annotations

import sys
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from enerverse.core.errors import EnerVerseError
from ros_nodes.convert import rgb_to_image
from ros_nodes.inputs import INPUT_PARAMETERS, RobotInputs, camera_extrinsics
from ros_nodes.observation import ObservationBuffer
from ros_nodes.runner import run_node
from ros_nodes.safety import Command, CommandShaper, EStop, SafetyLimits

LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
PARAMETERS: dict[str, object] = {
    "checkpoint": "checkpoints/enerverse_a_pick_place",
    "device": "cpu",
    **INPUT_PARAMETERS,
    "instruction_topic": "instruction",
    "instruction": "",
    "control_rate": 10.0,
    "action_rate": 20.0,
    "command_mode": "twist",  # twist (MoveIt Servo style) | trajectory (ros2_control JointTrajectory)
    "twist_topic": "cmd_twist",
    "trajectory_topic": "cmd_joint_trajectory",
    "gripper_topic": "cmd_gripper",
    "base_frame": "world",
    "estop_topic": "estop",
    "publish_imagination": False,
    "autostart": False,
    "gil_switch_interval": 0.0002,  # s; see PolicyNode.__init__
    **vars(SafetyLimits()),
}


class PolicyNode(LifecycleNode):
    """See module docstring."""

    def __init__(self, name: str = "enerverse_policy") -> None:
        super().__init__(name)
        for k, v in PARAMETERS.items():
            self.declare_parameter(k, v)
        # Inference runs in a thread beside the executor's. Each torch op releases the GIL and then
        # waits up to the interpreter's switch interval (5 ms by default) to get it back while the
        # executor threads run Python callbacks (90 images/s): about a thousand ops per chunk made a
        # 0.1 s chunk take 5 s and the control loop fall to 1 Hz (bench/ros_loop.py). A short interval
        # gives the GIL back within a fraction of a millisecond.
        interval = float(self.p("gil_switch_interval"))
        if not interval > 0:
            default = PARAMETERS["gil_switch_interval"]
            self.get_logger().error(f"gil_switch_interval must be > 0 s, got {interval}; using {default}")
            interval = default
        sys.setswitchinterval(interval)
        self.runtime = None
        self.buffer: ObservationBuffer | None = None
        self.estop = EStop()
        self.timer = None
        self.holds, self.hold_reason, self.ticks = 0, "", 0
        self.latencies: list[float] = []
        self.tick_times: list[float] = []
        self._autostart_timer = None
        if self.p("autostart"):  # configure + activate without a lifecycle manager (tests, quick starts)
            self._autostart_timer = self.create_timer(0.01, self._autostart)

    def p(self, name: str):
        return self.get_parameter(name).value

    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.get_logger().info("autostart: configure, then activate")
        self.trigger_configure()
        if self._state_machine.current_state[1] == "inactive":
            self.trigger_activate()

    # --- lifecycle --------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except (EnerVerseError, OSError, ValueError, RuntimeError) as e:  # a wrong checkpoint or parameter
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        except Exception:  # a bug: the whole traceback (lifecycle transitions swallow exceptions)
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        from policies.runtime import PolicyRuntime

        t0 = time.perf_counter()
        self.runtime = PolicyRuntime(self.p("checkpoint"), self.p("device"), background=True, prefetch_at=2)
        views = list(self.p("views"))
        missing = [v for v in self.runtime.views if v not in views]
        if missing:
            raise ValueError(
                f"the checkpoint reads views {self.runtime.views}; parameter views lacks {missing}"
            )
        self.views = list(self.runtime.views)
        self.limits = SafetyLimits(**{k: self.p(k) for k in vars(SafetyLimits())})
        self.limits.validate()
        period = 1.0 / float(self.p("control_rate"))
        if self.limits.max_input_age <= period:  # inputs must stay fresh for a whole command
            raise ValueError(f"max_input_age ({self.limits.max_input_age} s) must exceed one control "
                             f"period ({period:.3f} s at control_rate {self.p('control_rate')})")  # fmt: skip
        self.shaper = CommandShaper(self.limits, period)
        self.per_tick = max(1, round(float(self.p("action_rate")) * period))
        extrinsics = camera_extrinsics(list(self.p("camera_extrinsics")), self.views)
        self.buffer = ObservationBuffer(
            self.views, extrinsics, self.limits.max_input_age, self.p("sync_tolerance")
        )
        self._warm_up()
        self._make_io()
        self.get_logger().info(
            f"configured {self.p('checkpoint')} ({self.runtime.policy.cfg.encoder.kind}, views {self.views}, "
            f"{self.runtime.resolution} px) in {time.perf_counter() - t0:.1f} s"
        )

    def _warm_up(self) -> None:
        rt, R, V = self.runtime, self.runtime.resolution, len(self.views)
        rt.reset(self.p("instruction") or "warm up")
        T = np.stack([self.buffer.T[i] for i in range(V)])
        K = np.array([[R, 0, R / 2], [0, R, R / 2], [0, 0, 1]], float)
        obs = {"rgb": np.zeros((V, R, R, 3), np.uint8), "state": np.zeros(rt.state_dim, np.float32),
               "K": np.stack([K] * V), "T_cam_world": T}  # fmt: skip
        rt.act(obs)
        rt.reset(self.p("instruction"))

    def _make_io(self) -> None:
        self.inputs = RobotInputs(self, self.buffer, self.runtime.resolution, self.runtime.state_dim)
        self._subs = [
            self.create_subscription(String, self.p("instruction_topic"), self._on_instruction, LATCHED),
            # its own group: an executor thread takes it at once, not after queued image callbacks
            self.create_subscription(
                Bool,
                self.p("estop_topic"),
                self._on_estop,
                10,
                callback_group=MutuallyExclusiveCallbackGroup(),
            ),  # fmt: skip
        ]
        if self.p("command_mode") not in ("twist", "trajectory"):
            raise ValueError(f"command_mode must be 'twist' or 'trajectory', got {self.p('command_mode')!r}")
        self.joint_targets = None
        if self.p("command_mode") == "trajectory":
            from ros_nodes.kinematics import JointTargets

            self.joint_targets = JointTargets()
            self.trajectory_pub = self.create_publisher(JointTrajectory, self.p("trajectory_topic"), 10)
        self.twist_pub = self.create_publisher(TwistStamped, self.p("twist_topic"), 10)
        self.gripper_pub = self.create_publisher(Float64, self.p("gripper_topic"), 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.imagined_pubs = {}
        if self.p("publish_imagination"):
            self.imagined_pubs = {
                v: self.create_publisher(Image, f"imagined/{v}/image_raw", 2) for v in self.views
            }
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        self.create_timer(1.0, self._publish_diagnostics)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.reset(self.p("instruction"))
        self.shaper.hold("activated")
        self.timer = self.create_timer(1.0 / float(self.p("control_rate")), self._tick,
                                       callback_group=MutuallyExclusiveCallbackGroup())  # fmt: skip
        self.get_logger().info(f"active: control at {self.p('control_rate')} Hz")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None
        self._publish(self.shaper.hold("deactivated"))
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = None
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """On process exit: stop the inference worker."""
        if self.runtime is not None:
            self.runtime.close()

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    # --- inputs ---------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_instruction(self, msg: String) -> None:
        if msg.data != self.p("instruction"):
            self.set_parameters([rclpy.parameter.Parameter("instruction", value=msg.data)])
            if self.runtime is not None:
                self.runtime.reset(msg.data)
            self.get_logger().info(f"instruction: {msg.data!r}")

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estop.latched:
            self.estop.trigger("e-stop topic")
            self._publish(self.shaper.hold("e-stop"))
            self.get_logger().error("EMERGENCY STOP latched: holding until ~/reset_estop")

    def _on_reset_estop(self, request, response):
        self.estop.reset()
        response.success, response.message = True, "e-stop cleared"
        self.get_logger().warning("e-stop cleared")
        return response

    # --- control ----------------------------------------------------------------------------------
    def _tick(self) -> None:
        t0 = time.perf_counter()
        self.ticks += 1
        self.tick_times.append(t0)
        cmd = self._command()
        if self.estop.latched and not cmd.hold:  # latched while this tick was computing
            cmd = self._hold(self.estop.reason)
        self._publish(cmd)
        if not cmd.hold:
            self.latencies.append(self._now() - self.buffer.newest_stamp())

    def _command(self) -> Command:
        if self.estop.latched:
            return self._hold(self.estop.reason)
        obs, why = self.buffer.observation(self._now(), horizon=self.shaper.period)
        if obs is None:
            return self._hold(why)
        try:
            actions = [self.runtime.step(obs, block=False) for _ in range(self.per_tick)]
        except (ValueError, RuntimeError) as e:  # a bad observation or a non-finite action
            return self._hold(f"policy: {e}")
        ready = [a for a in actions if a is not None]
        if not ready:
            return self._hold("waiting for the first chunk")
        step = np.sum(ready, axis=0)
        step[6] = ready[-1][6]  # the gripper is a position, not a motion
        cmd = self.shaper.shape(step, ee_position=obs["state"][:3], steps=len(ready))
        if cmd.hold:
            self.get_logger().error(f"dropped the action: {cmd.reason}", throttle_duration_sec=2.0)
            self.holds += 1
            self.hold_reason = cmd.reason
        return cmd

    def _hold(self, why: str) -> Command:
        self.holds += 1
        if why != self.hold_reason:
            self.get_logger().info(f"holding the arm: {why}", throttle_duration_sec=2.0)
        self.hold_reason = why
        return self.shaper.hold(why)

    def _publish(self, cmd: Command) -> None:
        if self.joint_targets is not None:
            self._publish_trajectory(cmd)
        else:
            self._publish_twist(cmd)
        self.gripper_pub.publish(Float64(data=float(cmd.gripper)))

    def _publish_trajectory(self, cmd: Command) -> None:
        """One JointTrajectory point one period ahead: the IK of the shaped step, or, for a hold, the
        measured joint positions."""
        q = self.inputs.joints_q
        if q is None:
            return  # no joint state: nothing safe to command; the controller keeps its last goal
        period = 1.0 / float(self.p("control_rate"))
        step = np.concatenate([cmd.linear * period, cmd.angular * period])
        target = q if cmd.hold else self.joint_targets.step(q, step)
        msg = JointTrajectory(joint_names=list(self.p("arm_joints")))
        msg.header.stamp = self.get_clock().now().to_msg()
        point = JointTrajectoryPoint(positions=[float(x) for x in target])
        point.time_from_start = Duration(seconds=period).to_msg()
        msg.points = [point]
        self.trajectory_pub.publish(msg)

    def _publish_twist(self, cmd: Command) -> None:
        msg = TwistStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.p("base_frame")
        (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z) = (float(x) for x in cmd.linear)
        (msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = (float(x) for x in cmd.angular)
        self.twist_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        lat = np.asarray(self.latencies[-200:]) * 1000
        dt = np.diff(self.tick_times[-100:])
        values = {
            "ticks": self.ticks,
            "holds": self.holds,
            "last_hold": self.hold_reason,
            "control_rate_hz": f"{1 / dt.mean():.2f}" if len(dt) else "0",
            "image_to_command_p50_ms": f"{np.percentile(lat, 50):.1f}" if len(lat) else "",
            "image_to_command_p95_ms": f"{np.percentile(lat, 95):.1f}" if len(lat) else "",
            "inference_ms_p95": f"{self.runtime.latency().get('p95_ms', 0):.1f}" if self.runtime else "",
        }
        level = DiagnosticStatus.ERROR if self.estop.latched else DiagnosticStatus.OK
        kv = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        status = DiagnosticStatus(
            level=level, name=self.get_name(), message=self.hold_reason or "ok", values=kv
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)
        if self.imagined_pubs and self.runtime is not None and self.timer is not None:
            self._publish_imagination()

    def _publish_imagination(self) -> None:
        frames = self.runtime.imagine()  # [B, V, M, R, R, 3]
        if frames is None:
            return
        for i, v in enumerate(self.views):
            self.imagined_pubs[v].publish(rgb_to_image(frames[0, i, -1], self._now(), v))


def main(args: list[str] | None = None) -> None:
    """``ros2 run ros_nodes policy_node``."""
    run_node(PolicyNode, args, threads=3)


if __name__ == "__main__":
    main()
