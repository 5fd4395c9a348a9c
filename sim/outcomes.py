"""What a set of evaluated episodes says: success rate with its Wilson interval, mean length, and how
far long tasks got (stages). Shared by ``ev-eval`` and the shards of a sweep (:mod:`sim.sweep`)."""

from __future__ import annotations

import math

import numpy as np

from sim.tasks import TASKS


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise_episodes(task: str, per_episode: list[dict]) -> dict:
    """A task's row from its episodes: task, episodes, successes, success_rate, ci95 (Wilson),
    mean_length, stages (tasks that report them), per_episode."""
    n, k = len(per_episode), sum(e["success"] for e in per_episode)
    return {
        "task": task,
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "ci95": list(wilson_interval(k, n)),
        "mean_length": float(np.mean([e["length"] for e in per_episode])),
        **stages_reached(task, per_episode),
        "per_episode": per_episode,
    }


def stages_reached(task: str, per_episode: list[dict]) -> dict:
    """``{"stages": {stage name: fraction of episodes that got at least that far}}`` for tasks that
    report stages (partial credit on long tasks), else ``{}``."""
    done = [e["stages_done"] for e in per_episode if "stages_done" in e]
    if not done or len(done) != len(per_episode):
        return {}
    names = list(TASKS[task].stage_names) if task in TASKS else []  # Meta-World: numbered stages
    n = max(len(names), max(done))
    names += [f"stage {k + 1}" for k in range(len(names), n)]
    return {"stages": {names[k]: float(np.mean([d > k for d in done])) for k in range(n)}}
