"""Where ``ev-eval`` runs: one unit of work per (policy, task) in this process, or shards of episodes
as Ray tasks (``backend=ray``) when a sweep of many tasks × seeds × checkpoints outgrows one machine.

    ev-eval policies=[ckpt_a,ckpt_b] tasks=[reach,pick_place] episodes=100 backend=ray workers=8

A shard evaluates episodes ``first .. first + episodes - 1`` of one (policy, task) with the seeds an
unsharded run gives them (``episode_seed(seed, i)``), and shards are whole batches of ``num_envs``
(a checkpoint draws its sampling noise per batch), so the merged shards equal the local result
episode for episode. Ray starts locally unless ``RAY_ADDRESS`` names a cluster
(:mod:`enerverse.core.cluster`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from enerverse.core.cluster import absolute_path, ray_map
from enerverse.core.config import ConfigError, config_from_dict
from enerverse.core.latency import latency_summary
from enerverse.core.progress import progress
from sim.outcomes import summarise_episodes

if TYPE_CHECKING:
    from sim.evaluate import EvalConfig


@dataclass(frozen=True)
class Unit:
    """Episodes ``first .. first + episodes - 1`` of ``task`` under ``policy``."""

    policy: str
    task: str
    first: int
    episodes: int


def shard_size(cfg: EvalConfig) -> int:
    """Episodes per unit: all of them locally; on Ray ``shard_episodes`` rounded up to whole batches."""
    if cfg.backend == "local":
        return cfg.episodes
    return math.ceil(cfg.shard_episodes / cfg.num_envs) * cfg.num_envs


def plan_units(cfg: EvalConfig) -> list[Unit]:
    """The units of work of an evaluation, (policy, task) by (policy, task), shards in episode order."""
    size = shard_size(cfg)
    return [
        Unit(policy, task, first, min(size, cfg.episodes - first))
        for policy in cfg.policy_list
        for task in cfg.task_list
        for first in range(0, cfg.episodes, size)
    ]


def policy_names(policies: list[str]) -> dict[str, str]:
    """A short, distinct display name per policy: the fewest trailing parts of its absolute path that no
    other policy's ends with (``run_a/checkpoint`` and ``run_b/checkpoint``, not ``checkpoint`` twice),
    so relative and absolute spellings of a sweep get the same names."""
    parts = {p: Path(absolute_path(p)).parts for p in policies}

    def name(p: str) -> str:
        for k in range(1, len(parts[p]) + 1):
            if all(q == p or parts[q][-k:] != parts[p][-k:] for q in policies):
                return "/".join(parts[p][-k:])
        return str(absolute_path(p))  # only when two spellings name one folder (validate refuses that)

    return {p: name(p) for p in policies}


def run_unit(cfg_dict: dict, unit: Unit, show_progress: bool = True) -> dict:
    """Evaluate one unit (in this process or a Ray worker): :func:`sim.evaluate.evaluate`'s result
    plus ``policy``, ``first``, ``views``, ``seconds`` and, for checkpoints with a runtime, the raw
    per-chunk ``latencies_ms``."""
    from sim.evaluate import EvalConfig, make_policy

    cfg = config_from_dict(EvalConfig, cfg_dict)
    t0 = time.perf_counter()
    env_kwargs = cfg.env_kwargs()
    if unit.policy == "expert":
        policy = make_policy(unit.policy, unit.task)
    else:
        policy = make_policy(
            unit.policy, unit.task, device=cfg.device, steps=cfg.policy_steps, action_steps=cfg.action_steps
        )
        env_kwargs.update(views=list(policy.views), width=policy.resolution, height=policy.resolution)
    res = evaluate_unit(policy, unit, cfg, env_kwargs, show_progress)
    res.update(policy=unit.policy, first=unit.first, views=list(env_kwargs.get("views", cfg.views)))
    res["seconds"] = time.perf_counter() - t0
    if hasattr(policy, "runtime"):
        res["latencies_ms"] = list(policy.runtime.latencies_ms)
    return res


def evaluate_unit(policy, unit: Unit, cfg: EvalConfig, env_kwargs: dict, show_progress: bool = True) -> dict:
    """:func:`sim.evaluate.evaluate` on the unit's episodes in the batches the whole run has: a short
    last shard keeps ``min(num_envs, episodes)`` envs, padded as the unsharded run's last batch is (a
    checkpoint's sampling noise depends on the batch)."""
    from sim.evaluate import evaluate

    return evaluate(
        policy, unit.task, unit.episodes, min(cfg.num_envs, cfg.episodes), cfg.seed, cfg.asynchronous,
        max(0, cfg.videos - unit.first), env_kwargs, show_progress=show_progress, imagine=cfg.imagine,
        first_episode=unit.first, pad_batches=True,
    )  # fmt: skip


def run_units(cfg: EvalConfig, units: list[Unit]) -> Iterator[dict]:
    """Yield each unit's result as it finishes (in order locally; in completion order on Ray)."""
    d = dataclasses.asdict(cfg)
    if cfg.backend == "local":
        for u in units:
            yield run_unit(d, u)
        return
    results = ray_map(run_unit, [(d, u, False) for u in units], cfg.workers)
    yield from progress(results, total=len(units), desc="eval shards (ray)", unit="shard")


def merged_rows(cfg: EvalConfig, units: list[Unit]) -> Iterator[dict]:
    """One row per (policy, task), as soon as all its shards are in (so only the frames of unfinished
    pairs are held), from :func:`run_units`."""
    expected: dict[tuple[str, str], int] = {}
    for u in units:
        expected[(u.policy, u.task)] = expected.get((u.policy, u.task), 0) + 1
    parts: dict[tuple[str, str], list[dict]] = {}
    for res in run_units(cfg, units):
        key = (res["policy"], res["task"])
        parts.setdefault(key, []).append(res)
        if len(parts[key]) == expected[key]:
            yield merge_shards(parts.pop(key))


def merge_shards(parts: list[dict]) -> dict:
    """One (policy, task) row from its shards: episodes in order, successes summed, the Wilson CI of
    the whole, frames of the shards that recorded them; ``seconds`` is the shards' summed compute time
    (each loads the policy), not wall time."""
    parts = sorted(parts, key=lambda p: p["first"])
    per_episode = [e for p in parts for e in p["per_episode"]]
    row = {"policy": parts[0]["policy"], **summarise_episodes(parts[0]["task"], per_episode)}
    row.update(frames=[f for p in parts for f in p["frames"]], views=parts[0]["views"], shards=len(parts),
               seconds=sum(p["seconds"] for p in parts))  # fmt: skip
    if "latencies_ms" in parts[0]:
        row["latency"] = latency_summary([x for p in parts for x in p["latencies_ms"]])
    return row


def check_sweep(cfg: EvalConfig) -> None:
    """Settings a sweep on Ray cannot honour, in one line."""
    if cfg.backend == "ray" and cfg.device != "cpu":
        raise ConfigError(f"backend=ray runs one CPU per shard; device={cfg.device} needs backend=local")
    if cfg.backend == "ray" and cfg.asynchronous:
        raise ConfigError("backend=ray runs one CPU per shard; asynchronous=true (a process per env) needs "
                          "backend=local")  # fmt: skip
