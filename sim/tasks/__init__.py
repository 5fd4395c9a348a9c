"""Task registry: name -> Task class."""

from __future__ import annotations

import difflib

from sim.tasks.base import Task
from sim.tasks.long_horizon import LongHorizonTask
from sim.tasks.memory import MemoryTask
from sim.tasks.pick_place import PickPlaceTask
from sim.tasks.push import PushTask
from sim.tasks.reach import ReachTask
from sim.tasks.stack import StackTask

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ReachTask, PushTask, PickPlaceTask, StackTask, LongHorizonTask, MemoryTask)
}
DEFAULT_TASK = "pick_place"


def get_task_class(name: str) -> type[Task]:
    """The Task class for ``name``; ValueError listing the valid names otherwise."""
    if name in TASKS:
        return TASKS[name]
    hint = difflib.get_close_matches(name, list(TASKS), n=1)
    raise ValueError(
        f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}"
        + (f"; did you mean {hint[0]!r}?" if hint else "")
    )


__all__ = ["TASKS", "DEFAULT_TASK", "Task", "get_task_class"]
