"""Config schemas of the sim entry points (hydra structured configs, validated on load)."""

from __future__ import annotations

from dataclasses import dataclass, field

from enerverse.core.config import ConfigError
from sim.cameras import DEFAULT_RESOLUTION, DEFAULT_VIEWS, RIG_VERSION, RigSpec
from sim.tasks import get_task_class


def rig_version(task: str) -> int | str:
    """Camera-rig version of a task's environment (the tabletop's, or the Meta-World adapter's)."""
    if task.startswith("metaworld/"):
        from sim.metaworld_adapter import RIG_VERSION as METAWORLD_RIG

        return METAWORLD_RIG
    return RIG_VERSION


def check_task(task: str) -> None:
    """Raise ValueError (valid names listed) for an unknown project or Meta-World task."""
    if task.startswith("metaworld/"):
        from sim.metaworld_adapter import check_task_name  # ImportError names the extra to install

        check_task_name(task.split("/", 1)[1])
    else:
        get_task_class(task)


@dataclass
class SimSettings:
    """Which task and camera rig an environment runs."""

    task: str = "pick_place"
    """task name (reach, push, pick_place, stack, long_horizon, memory) or metaworld/<name>-v3"""
    views: list[str] = field(default_factory=lambda: list(DEFAULT_VIEWS))
    """camera views: main, wrist, anchor_left, anchor_right"""
    resolution: int = DEFAULT_RESOLUTION
    """square image size in pixels"""
    depth: bool = False
    """also render z-depth per view"""
    seg: bool = False
    """also render object segmentation masks per view (object-pixel metrics of the generator)"""
    max_steps: int | None = None
    """episode step limit (default: the task's own)"""

    def validate(self) -> None:
        """Fail early, with the valid choices, on a bad task, camera or resolution."""
        if self.resolution <= 0:
            raise ConfigError(f"resolution must be a positive number of pixels, got {self.resolution}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps must be positive, got {self.max_steps}")
        if self.seg and self.task.startswith("metaworld/"):
            raise ConfigError(
                "seg=true: object masks are rendered for the project's tasks only, not Meta-World"
            )
        try:
            check_task(self.task)
            RigSpec(views=tuple(self.views)).validate()
        except (ValueError, ImportError) as e:
            raise ConfigError(str(e)) from None

    def env_kwargs(self) -> dict:
        """Keyword arguments for :func:`sim.make_env`."""
        return {
            "views": list(self.views),
            "width": self.resolution,
            "height": self.resolution,
            "depth": self.depth,
            "seg": self.seg,
            "max_steps": self.max_steps,
        }
