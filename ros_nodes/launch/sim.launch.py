"""One simulated episode: the MuJoCo sim node + the EnerVerse policy node (+ optionally the recorder).

    ros2 launch ros_nodes sim.launch.py checkpoint:=<policy checkpoint> task:=pick_place seed:=1000

The policy node is a lifecycle node: this file configures it, and activates it once it is inactive
(configured), through launch_ros lifecycle events.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> LaunchDescription:
    config = os.path.join(get_package_share_directory("ros_nodes"), "config", "sim.yaml")
    args = [
        DeclareLaunchArgument("checkpoint", default_value="checkpoints/enerverse_a_pick_place"),
        DeclareLaunchArgument("task", default_value="pick_place"),
        DeclareLaunchArgument("seed", default_value="1000"),
        DeclareLaunchArgument("params_file", default_value=config),
        DeclareLaunchArgument("record", default_value="false"),
        DeclareLaunchArgument("store", default_value="data/recorded/sim"),
    ]
    params = LaunchConfiguration("params_file")
    sim = Node(
        package="ros_nodes", executable="sim_node", name="enerverse_sim", output="screen",
        parameters=[params, {"task": LaunchConfiguration("task"), "seed": LaunchConfiguration("seed")}],
    )  # fmt: skip
    policy = LifecycleNode(
        package="ros_nodes", executable="policy_node", name="enerverse_policy", namespace="", output="screen",
        parameters=[params, {"checkpoint": LaunchConfiguration("checkpoint")}],
    )  # fmt: skip
    recorder = Node(
        package="ros_nodes", executable="recorder_node", name="enerverse_recorder", output="screen",
        parameters=[params, {"store": LaunchConfiguration("store"), "provenance": "sim",
                             "task": LaunchConfiguration("task")}],
        condition=IfCondition(LaunchConfiguration("record")),
    )  # fmt: skip
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(policy), transition_id=Transition.TRANSITION_CONFIGURE
        )
    )
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=policy,
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(policy),
                        transition_id=Transition.TRANSITION_ACTIVATE,
                    )
                )
            ],
        )
    )
    return LaunchDescription([*args, sim, policy, recorder, activate_when_configured, configure])
