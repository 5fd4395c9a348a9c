"""ament_python package of the EnerVerse ROS 2 nodes (``colcon build --base-paths ros_nodes``).

The nodes import the project (``policies``, ``sim``, ``enerverse.core``): install it into the Python
environment colcon uses (``pip install -e <repo>``) before building.
"""

from glob import glob

from setuptools import setup

PACKAGE = "ros_nodes"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="EnerVerse maintainers",
    maintainer_email="maintainers@enerverse.invalid",
    description="EnerVerse on ROS 2: policy node, MuJoCo simulation node, episode recorder",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = ros_nodes.policy_node:main",
            "sim_node = ros_nodes.sim_node:main",
            "recorder_node = ros_nodes.recorder_node:main",
        ],
    },
)
