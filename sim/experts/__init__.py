"""Scripted experts for every task: ``make_expert(task)`` returns a batched policy."""

from __future__ import annotations

from sim.experts.base import ScriptedExpert
from sim.experts.scripts import SCRIPTS
from sim.tasks import get_task_class


def make_expert(task: str):
    """The scripted expert for ``task`` (``reset()`` / ``act(obs) -> [B, 1, 7]``).

    ``metaworld/<name>-v3`` tasks get Meta-World's own scripted policy behind the same protocol.
    """
    if task.startswith("metaworld/"):
        from sim.metaworld_adapter import MetaWorldExpert

        return MetaWorldExpert(task.split("/", 1)[1])
    get_task_class(task)
    return ScriptedExpert(task, SCRIPTS[task])


__all__ = ["ScriptedExpert", "make_expert"]
