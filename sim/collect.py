"""``ev-collect``: record scripted-expert demonstrations into an episode store.

    ev-collect task=pick_place episodes=50 out=data/pick_place views=[main,anchor_left,anchor_right] \
        resolution=128 workers=2 seed=0
    ev-collect out=data/pick_place episodes=100 resume=true     # continue an interrupted run
    ev-collect out=data/pick_place episodes=100 --resume        # the same

Episode ``i`` always uses seed ``episode_seed(seed, i)``, so a resumed or parallel run produces the
same episodes as a single uninterrupted one. Every episode is committed atomically: killing the run
(even with SIGKILL) loses at most the episodes in flight.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enerverse.core.config import ConfigError, parse_cli, save_config
from enerverse.core.errors import user_errors
from enerverse.core.outputs import make_output_dir, print_summary, write_json_atomic
from enerverse.core.progress import progress
from enerverse.core.seeding import episode_seed
from enerverse.core.signals import die_with_parent
from enerverse.core.store import EpisodeStore
from enerverse.core.store.rig import legacy_rig_version
from sim.settings import SimSettings, rig_version
from sim.tasks.profile import task_profile


@dataclass
class CollectConfig(SimSettings):
    """Settings of ``ev-collect``."""

    episodes: int = 10
    """number of episodes (indices 0 .. episodes-1)"""
    out: str | None = None
    """episode store folder (default: outputs/collect/<timestamp>/episodes)"""
    seed: int = 0
    """base seed; episode i uses episode_seed(seed, i)"""
    workers: int = 1
    """parallel worker processes"""
    resume: bool = False
    """continue a store that already has episodes (fills in the missing indices)"""
    action_noise: float = 0.0
    """noise injection (DART): std of Gaussian noise (metres per step) added to the expert's executed
    position step, while the stored action stays the expert's; the expert's corrections teach a
    policy to recover from its own drift (Δ-EE control; 0 = off)"""
    video_episodes: int = 4
    """how many episodes go into the video grid (0: none)"""
    run_dir: str | None = None
    """folder for config.json, summary.json and the video (default: outputs/collect/<timestamp>)"""

    def validate(self) -> None:
        super().validate()
        if self.episodes <= 0:
            raise ConfigError(f"episodes must be positive, got {self.episodes}")
        if self.workers <= 0:
            raise ConfigError(f"workers must be positive, got {self.workers}")
        if self.action_noise < 0:
            raise ConfigError(f"action_noise must be >= 0 (metres per step), got {self.action_noise}")


_WORKER: dict = {}


def _init_worker(cfg: CollectConfig, store_path: str, parent_pid: int | None = None) -> None:
    from sim.experts import make_expert
    from sim.registration import make_env

    if parent_pid is not None:  # in a pool
        die_with_parent(parent_pid)
    _WORKER["env"] = make_env(cfg.task, **cfg.env_kwargs())
    _WORKER["policy"] = make_expert(cfg.task)
    _WORKER["store"] = EpisodeStore.open(store_path)
    _WORKER["action_noise"] = cfg.action_noise


def _collect_one(job: tuple[int, int]) -> dict | None:
    from sim.rollout import record_episode

    index, seed = job
    store = _WORKER["store"]
    if store.has_episode(index):  # committed meanwhile (e.g. by a worker of an interrupted run)
        return None
    t0 = time.perf_counter()
    try:
        res = record_episode(
            _WORKER["env"],
            _WORKER["policy"],
            store,
            index,
            seed,
            action_noise=_WORKER["action_noise"],
            collector="expert",
        )
    except FileExistsError:
        return None
    res["seconds"] = time.perf_counter() - t0
    return res


def collection_settings(cfg: CollectConfig) -> dict:
    """What every episode of one store shares; recorded in the store and checked on resume."""
    return {
        "task": cfg.task,
        "views": list(cfg.views),
        "resolution": cfg.resolution,
        "depth": cfg.depth,
        "seg": cfg.seg,
        "max_steps": cfg.max_steps,
        "seed": cfg.seed,
        "action_noise": cfg.action_noise,
        "rig_version": rig_version(cfg.task),
    }


def open_store_for_collection(path: Path, cfg: CollectConfig) -> EpisodeStore:
    """Create the store, or reopen it for ``resume`` after checking it was collected with the same
    settings (temp folders of dead writers are dropped)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out={path} is a file; expected an episode store folder (new or existing)")
    settings = collection_settings(cfg)
    if path.exists() and any(path.iterdir()):
        store = EpisodeStore.open(path)
        if len(store) and not cfg.resume:
            raise ConfigError(
                f"{path} already holds {len(store)} episodes; pass resume=true to continue it "
                "or choose another out="
            )
        before = store.root_attrs.get("collection")
        if before is not None:
            # stores from before these settings existed: no noise, no masks, the legacy camera rig
            legacy = legacy_rig_version(settings["rig_version"])
            before = {"action_noise": 0.0, "seg": False, "rig_version": legacy, **before}
            if before.get("max_steps") is None:  # recorded as "the task's own" before configs/task/
                before["max_steps"] = task_profile(cfg.task).max_steps
        if before is not None and before != settings:
            diff = {k: (before.get(k), settings[k]) for k in settings if before.get(k) != settings[k]}
            raise ConfigError(
                f"{path} was collected with other settings; resume with the same ones. "
                f"Differences (store, now): {diff}"
            )
        store.cleanup_incomplete()
        return store
    return EpisodeStore.create(path, attrs={"collection": settings})


def collect(cfg: CollectConfig, run_dir: Path, store_path: Path) -> dict:
    """Fill ``store_path`` with expert episodes 0..episodes-1; returns the summary dict."""
    store = open_store_for_collection(store_path, cfg)
    todo = [i for i in range(cfg.episodes) if not store.has_episode(i)]
    jobs = [(i, episode_seed(cfg.seed, i)) for i in todo]
    results: list[dict] = []
    t0 = time.perf_counter()
    bar = progress(total=len(jobs), desc=f"collect {cfg.task}", unit="ep")

    def record(res: dict | None) -> None:
        bar.update(1)
        if res is not None:
            results.append(res)
            bar.set_postfix(success=f"{np.mean([r['success'] for r in results]):.2f}")

    if cfg.workers == 1 or len(jobs) <= 1:
        _init_worker(cfg, str(store_path))
        try:
            for job in jobs:
                record(_collect_one(job))
        finally:
            _WORKER["env"].close()
    else:
        ctx = mp.get_context("spawn")
        args = (cfg, str(store_path), os.getpid())
        with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=args) as pool:
            for res in pool.imap_unordered(_collect_one, jobs):
                record(res)
    bar.close()
    wall = time.perf_counter() - t0
    store = EpisodeStore.open(store_path)
    all_success = [bool(store.episode(i).attrs["success"]) for i in store.indices()]
    summary = {
        "task": cfg.task,
        "episodes": len(store),
        "collected_now": len(results),
        "success_rate": float(np.mean(all_success)) if all_success else 0.0,
        "frames_now": int(sum(r["length"] for r in results)),
        "episodes_per_s": len(results) / wall if wall > 0 else 0.0,
        "store": str(store_path),
        "run_dir": str(run_dir),
    }
    write_json_atomic(
        run_dir / "summary.json", {**summary, "episodes_detail": sorted(results, key=lambda r: r["index"])}
    )
    if cfg.video_episodes > 0 and len(store):
        summary["video"] = str(write_store_video(store, run_dir / "episodes.mp4", cfg.video_episodes))
    return summary


def write_store_video(store: EpisodeStore, path: Path, n: int) -> Path:
    """A grid video (rows: the first ``n`` episodes, columns: views) plus a png contact sheet."""
    from enerverse.core.media import write_png, write_video
    from sim.video import contact_sheet, grid_video

    idx = store.indices()[:n]
    eps = [store.episode(i) for i in idx]
    frames = [e.load("rgb") for e in eps]
    H = frames[0].shape[2]
    labels = [f"ep{e.index} {'ok' if e.attrs['success'] else 'fail'}" for e in eps]
    vid = grid_video(frames, eps[0].attrs["view_names"], labels, scale=max(1, 128 // H))
    write_png(path.with_suffix(".png"), contact_sheet(vid, 4))
    return write_video(path, vid, eps[0].attrs["fps"])


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-collect``."""
    args = list(sys.argv[1:] if argv is None else argv)
    args = ["resume=true" if a == "--resume" else a for a in args]  # the flag spelling works too
    cfg = parse_cli(CollectConfig, args, prog="ev-collect")
    with user_errors():
        if cfg.out:  # refuse a bad store before anything is written
            open_store_for_collection(Path(cfg.out), cfg)
        run_dir = make_output_dir("collect", cfg.run_dir)
        store_path = Path(cfg.out) if cfg.out else run_dir / "episodes"
        save_config(cfg, run_dir / "config.json")
        summary = collect(cfg, run_dir, store_path)
    print_summary(summary)


if __name__ == "__main__":
    main()
