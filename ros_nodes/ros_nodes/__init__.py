"""EnerVerse on ROS 2: a lifecycle policy node, a MuJoCo simulation node and an episode recorder.

The ROS-free parts (safety limits, message checks) are importable without rclpy; the nodes need the
ROS 2 Python packages (the ``ros`` extra of the project, or a sourced ROS 2 workspace).
"""
