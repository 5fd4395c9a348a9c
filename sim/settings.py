"""Config schemas of the sim entry points (hydra structured configs, validated on load)."""

from __future__ import annotations

from dataclasses import dataclass

from enerverse.core.config import ConfigError
from sim.cameras import RIG_VERSION, RigSpec
from sim.tasks import get_task_class
from sim.tasks.profile import task_profile


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
    views: list[str] | None = None
    """camera views: main, wrist, anchor_left, anchor_right (default: the task's, configs/task/)"""
    resolution: int | None = None
    """square image size in pixels (default: the task's, configs/task/)"""
    depth: bool = False
    """also render z-depth per view"""
    seg: bool = False
    """also render object segmentation masks per view (object-pixel metrics of the generator)"""
    max_steps: int | None = None
    """episode step limit (default: the task's, configs/task/)"""

    def __post_init__(self) -> None:
        """Fill the settings left unset from the task's profile (an unknown task is left for
        :meth:`validate` to report)."""
        try:
            p = task_profile(self.task)
        except ConfigError:
            return
        self.views = list(p.views) if self.views is None else self.views
        self.resolution = p.resolution if self.resolution is None else self.resolution
        self.max_steps = p.max_steps if self.max_steps is None else self.max_steps

    def validate(self) -> None:
        """Fail early, with the valid choices, on a bad task, camera or resolution."""
        try:
            check_task(self.task)
        except (ValueError, ImportError) as e:
            raise ConfigError(str(e)) from None
        self.__post_init__()
        if self.resolution <= 0:
            raise ConfigError(f"resolution must be a positive number of pixels, got {self.resolution}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max_steps must be positive, got {self.max_steps}")
        if self.seg and self.task.startswith("metaworld/"):
            raise ConfigError(
                "seg=true: object masks are rendered for the project's tasks only, not Meta-World"
            )
        try:
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
