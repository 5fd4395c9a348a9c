"""The ros_nodes package builds with colcon into a workspace layout that ``ros2 run``/``ros2 launch``
find (executables under lib/ros_nodes, launch and config files under share/ros_nodes, the ament
index marker). Needs a ``colcon`` executable (``$COLCON`` or on PATH; ``pip install
colcon-common-extensions`` in its own venv), so it is marked slow and skipped without one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLCON = os.environ.get("COLCON") or shutil.which("colcon")


@pytest.mark.slow
@pytest.mark.skipif(COLCON is None, reason="no colcon executable ($COLCON or PATH)")
def test_colcon_builds_the_ament_python_package(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        REPO / "ros_nodes", src / "ros_nodes", ignore=shutil.ignore_patterns("__pycache__", "build*")
    )
    r = subprocess.run([COLCON, "build", "--base-paths", "src/ros_nodes"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    inst = tmp_path / "install" / "ros_nodes"
    for exe in ("policy_node", "sim_node", "recorder_node"):
        assert (inst / "lib" / "ros_nodes" / exe).is_file(), exe
    for f in ("launch/sim.launch.py", "launch/robot.launch.py", "config/sim.yaml", "package.xml"):
        assert (inst / "share" / "ros_nodes" / f).is_file(), f
    assert (inst / "share" / "ament_index" / "resource_index" / "packages" / "ros_nodes").is_file()
