"""Shared test setup.

MuJoCo picks its GL backend when ``mujoco`` is first imported, so the headless defaults that
``import sim`` sets must be in place before any test module imports ``mujoco`` directly.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")
