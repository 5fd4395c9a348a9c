"""The EnerVerse policy node on a real arm (+ optionally the episode recorder).

    ros2 launch ros_nodes robot.launch.py robot:=example_arm checkpoint:=<policy checkpoint>

``robot`` names a parameter file ``config/<robot>.yaml`` (topics, joint names, camera extrinsics,
limits); ``params_file`` overrides the path. The command topics are remapped to the arm's servo
interface with ``twist_out`` / ``gripper_out``. The policy node is configured, then activated once it
is inactive, through launch_ros lifecycle events; ``activate:=false`` leaves it configured (inactive,
holding) for a manual ``ros2 lifecycle set /enerverse_policy activate``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def _nodes(context):
    robot = LaunchConfiguration("robot").perform(context)
    params = LaunchConfiguration("params_file").perform(context) or os.path.join(
        get_package_share_directory("ros_nodes"), "config", f"{robot}.yaml"
    )
    remap = [
        ("cmd_twist", LaunchConfiguration("twist_out").perform(context)),
        ("cmd_gripper", LaunchConfiguration("gripper_out").perform(context)),
    ]
    policy = LifecycleNode(
        package="ros_nodes", executable="policy_node", name="enerverse_policy", namespace="", output="screen",
        parameters=[params, {"checkpoint": LaunchConfiguration("checkpoint")}], remappings=remap,
    )  # fmt: skip
    recorder = Node(
        package="ros_nodes", executable="recorder_node", name="enerverse_recorder", output="screen",
        parameters=[params, {"store": LaunchConfiguration("store"), "provenance": "real"}], remappings=remap,
        condition=IfCondition(LaunchConfiguration("record")),
    )  # fmt: skip

    def change(transition: int) -> EmitEvent:
        matcher = matches_action(policy)
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matcher, transition_id=transition))

    activate = RegisterEventHandler(
        OnStateTransition(target_lifecycle_node=policy, goal_state="inactive",
                          entities=[change(Transition.TRANSITION_ACTIVATE)]),
        condition=IfCondition(LaunchConfiguration("activate")),
    )  # fmt: skip
    return [policy, recorder, activate, change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("robot", default_value="example_arm"),
            DeclareLaunchArgument("params_file", default_value=""),
            DeclareLaunchArgument("checkpoint", default_value="checkpoints/enerverse_a_pick_place"),
            DeclareLaunchArgument("twist_out", default_value="/servo_node/delta_twist_cmds"),
            DeclareLaunchArgument("gripper_out", default_value="/gripper/command"),
            DeclareLaunchArgument("activate", default_value="true"),
            DeclareLaunchArgument("record", default_value="false"),
            DeclareLaunchArgument("store", default_value="data/recorded/real"),
            OpaqueFunction(function=_nodes),
        ]
    )
