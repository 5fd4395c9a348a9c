"""gymnasium registration and (vectorised) environment construction."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from sim.tasks import TASKS

GYM_IDS = {name: "enerverse/" + "".join(p.title() for p in name.split("_")) + "-v0" for name in TASKS}


def register_envs() -> None:
    """Register every task as ``enerverse/<Task>-v0`` (idempotent)."""
    for name, gym_id in GYM_IDS.items():
        if gym_id not in gym.registry:
            gym.register(
                gym_id,
                entry_point="sim.env:EnerVerseEnv",
                kwargs={"task": name},
                max_episode_steps=None,
                disable_env_checker=True,
            )


def make_env(task: str, **kwargs: Any) -> gym.Env:
    """One environment: a project task name, or ``metaworld/<name>-v3`` for the Meta-World adapter."""
    if task.startswith("metaworld/"):
        from sim.metaworld_adapter import MetaWorldEnv

        return MetaWorldEnv(task.split("/", 1)[1], **kwargs)
    from sim.env import EnerVerseEnv

    return EnerVerseEnv(task, **kwargs)


def make_vec_env(task: str, num_envs: int, asynchronous: bool = False, **kwargs: Any) -> gym.vector.VectorEnv:
    """``num_envs`` copies of a task as a gymnasium vector env with autoreset disabled.

    Sub-environments are reset explicitly (``reset(seed=[...])``), so every episode's seed is known.
    ``asynchronous=True`` runs each copy in its own process (spawned, so GL contexts are not forked).
    """
    if num_envs <= 0:
        raise ValueError(f"num_envs must be positive, got {num_envs}")
    fns = [lambda: make_env(task, **kwargs) for _ in range(num_envs)]
    mode = gym.vector.AutoresetMode.DISABLED
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=mode)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
