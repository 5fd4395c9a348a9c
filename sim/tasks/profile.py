"""Per-task environment settings, one YAML file per task in ``configs/task/`` (the one home of a task's
episode limit, default views and resolution). Meta-World tasks share ``configs/task/metaworld.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache

from enerverse.core.config import ConfigError
from enerverse.core.presets import load_preset, preset_names
from sim.cameras import DEFAULT_RESOLUTION, DEFAULT_VIEWS, RigSpec


@dataclass
class TaskProfile:
    """What an environment of one task starts from unless a command line overrides it."""

    description: str = ""
    """one line: what the task asks"""
    max_steps: int | None = None
    """episode step limit (null: the environment's own, Meta-World's max_path_length)"""
    views: list[str] = field(default_factory=lambda: list(DEFAULT_VIEWS))
    """camera views: main, wrist, anchor_left, anchor_right"""
    resolution: int = DEFAULT_RESOLUTION
    """square image size in pixels"""

    def validate(self) -> None:
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps must be positive, got {self.max_steps}")
        if self.resolution <= 0:
            raise ConfigError(f"resolution must be a positive number of pixels, got {self.resolution}")
        try:
            RigSpec(views=tuple(self.views)).validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None


def profile_name(task: str) -> str:
    """The ``configs/task/`` file a task reads (``metaworld`` for every ``metaworld/<name>``)."""
    return "metaworld" if task.startswith("metaworld/") else task


@cache
def _load(name: str) -> TaskProfile:
    return load_preset(TaskProfile, "task", name)


def task_profile(task: str) -> TaskProfile:
    """The settings of ``task`` from ``configs/task/<task>.yaml`` (a fresh copy); ConfigError naming
    the valid profiles when there is no such file."""
    p = _load(profile_name(task))
    return dataclasses.replace(p, views=list(p.views))


def profile_tasks() -> list[str]:
    """The tasks with a profile (the ``configs/task/`` stems, ``metaworld`` included)."""
    return preset_names("task")
