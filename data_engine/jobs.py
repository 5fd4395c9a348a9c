"""``ev-data-engine``: the flywheel as a resumable batch job over an episode store.

    ev-data-engine run store=data/pick_place out=data/pick_place_engine    # generator: the shipped one
    ev-data-engine run ... backend=ray workers=4             # the same job as Ray tasks (RAY_ADDRESS)
    ev-data-engine flywheel store=... episodes=[0] out=...   # one episode, its per-round picture and metrics

Every episode of ``store`` (or ``episodes``) goes through the flywheel (:mod:`data_engine.flywheel`)
in its own worker and is committed to the ``out`` store atomically, with provenance ``generated`` and
the generator's version; the observed views keep their real frames. An episode already committed in
``out`` is skipped, so a killed job resumes where it stopped and never loses a finished episode. An
episode that fails is reported (``failed`` in the summary) and skipped; its input is never touched.
Workers are a local process pool (``backend=local``) or Ray tasks (``backend=ray``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_engine.flywheel import EpisodeData, Flywheel, FlywheelSettings, summarise_rounds
from enerverse.core.cluster import absolute_path, check_backend, ray_map
from enerverse.core.config import ConfigError, config_from_dict, parse_cli
from enerverse.core.errors import user_errors
from enerverse.core.media import write_png
from enerverse.core.outputs import write_json_atomic
from enerverse.core.progress import progress
from enerverse.core.signals import die_with_parent

_GENERATORS: dict[str, object] = {}  # per worker process: generators already loaded


@dataclass
class DataEngineConfig:
    """Settings of ``ev-data-engine``."""

    store: str = "data/pick_place"
    """input episode store (the observed views are read from it)"""
    out: str = "data/pick_place_engine"
    """output episode store (created, or resumed)"""
    generator: str = "checkpoints/generator_pretrained"
    episodes: list[int] | None = None
    """episode indices (None: every committed episode)"""
    backend: str = "local"
    """local (a process pool) | ray (Ray tasks on the cluster RAY_ADDRESS names, else a local instance)"""
    workers: int = 1
    pictures: bool = True
    """write <out>/pictures/episode_<i>.png: per round, observed | generated | 4DGS | truth"""
    flywheel: FlywheelSettings = field(default_factory=FlywheelSettings)

    def validate(self) -> None:
        check_backend(self.backend)
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if not (Path(self.store) / "zarr.json").is_file():
            raise ConfigError(f"store={self.store} is not an episode store (no zarr.json)")
        found = [f for f in ("config.json", "model.safetensors") if (Path(self.generator) / f).is_file()]
        if len(found) < 2:
            raise ConfigError(
                f"generator={self.generator} is not a generator checkpoint folder: expected config.json and "
                f"model.safetensors, found {found or 'neither'}"
            )
        if Path(self.out).resolve() == Path(self.store).resolve():
            raise ConfigError("out must be a new store, not the input store (real data is never overwritten)")


def generator_version(folder: str) -> str:
    """``<folder name>@<sha1 of its weights, 12 hex>``: recorded with every generated episode."""
    h = hashlib.sha1((Path(folder) / "model.safetensors").read_bytes()).hexdigest()[:12]
    return f"{Path(folder).name}@{h}"


def _generator(folder: str):
    if folder not in _GENERATORS:
        import torch

        from enerverse.io import load_generator

        torch.set_num_threads(1)  # one thread per worker: workers are the parallelism
        _GENERATORS[folder] = load_generator(folder).eval()
    return _GENERATORS[folder]


def _write_episode(
    out, index: int, src, frames: np.ndarray, grid: np.ndarray, missing: list[int], version: str
) -> None:
    """Commit episode ``index`` to ``out``: every recorded frame of ``src``; the missing views from
    ``frames`` (grid frames; a frame between two grid frames shows the earlier one)."""
    a = src.attrs
    rgb = src.load("rgb")
    made = np.searchsorted(grid, np.arange(len(rgb)), side="right") - 1  # the grid frame at or before
    rgb[:, missing] = frames[made][:, missing]
    extra = {k: a[k] for k in ("seg_names",) if k in a}
    extra["generated_views"] = [a["view_names"][v] for v in missing]
    state, action, cams = src.load("state"), src.load("action"), src.load("T_cam_world")
    priv = src.load("privileged") if src.has("privileged") else None
    with out.write_episode(
        index, task=a["task"], instruction=a["instruction"], seed=a["seed"], view_names=a["view_names"],
        view_kinds=a["view_kinds"], fps=a["fps"], K=src.load("K"), provenance="generated",
        generator_version=version, success=a["success"], source_episode=index, **extra,
    ) as w:  # fmt: skip
        for t in range(len(rgb)):
            w.add_frame(rgb=rgb[t], state=state[t], action=action[t], T_cam_world=cams[t],
                        privileged=None if priv is None else priv[t])  # fmt: skip
        w.commit()


def process_episode(cfg_dict: dict, index: int) -> dict:
    """Worker: run the flywheel on episode ``index`` and commit it; a summary dict (``error`` on failure)."""
    t0 = time.time()
    try:
        from enerverse.core.store import EpisodeStore
        from enerverse.core.store.format import check_finite

        cfg = config_from_dict(DataEngineConfig, cfg_dict)
        src = EpisodeStore.open(cfg.store).episode(index)
        check_finite(f"{cfg.store} episode {index}", {k: src.load(k) for k in ("state", "action")})
        gen = _generator(cfg.generator)
        ep = EpisodeData.load(src, gen.cfg.frame_stride, cfg.flywheel.max_frames)
        res = Flywheel(gen, cfg.flywheel).run(ep)
        out = EpisodeStore.open(cfg.out)
        _write_episode(
            out, index, src, res["frames"], ep.frames, res["missing"], generator_version(cfg.generator)
        )
        if cfg.pictures and res["sheets"]:
            write_png(
                Path(cfg.out) / "pictures" / f"episode_{index:06d}.png", np.concatenate(res["sheets"], axis=0)
            )
        return {"episode": index, "rounds": res["rounds"], "seconds": time.time() - t0}
    except Exception as e:  # reported and skipped: one bad episode must not stop the job
        return {"episode": index, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}


def _dispatch(cfg: DataEngineConfig, todo: list[int]):
    """Yield worker summaries as episodes finish (local process pool or Ray)."""
    from data_engine.jobs import process_episode as work  # by reference, also when run as __main__

    d = dataclasses.asdict(cfg)
    if cfg.backend == "ray":  # workers on other nodes start in other folders
        d.update({k: absolute_path(d[k]) for k in ("store", "out", "generator")})
        yield from ray_map(work, [(d, i) for i in todo], cfg.workers)
        return
    if cfg.workers == 1:
        for i in todo:
            yield work(d, i)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")  # workers die with this process: a killed job leaves no writer behind
    with ProcessPoolExecutor(cfg.workers, ctx, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        for fut in as_completed([pool.submit(work, d, i) for i in todo]):
            yield fut.result()


def run_job(cfg: DataEngineConfig) -> dict:
    """Run the job (see module docstring); the JSON summary, also written to ``<out>/job.json``."""
    from enerverse.core.store import EpisodeStore

    cfg.validate()
    src = EpisodeStore.open(cfg.store)
    wanted = src.indices() if cfg.episodes is None else list(cfg.episodes)
    missing = [i for i in wanted if not src.has_episode(i)]
    if missing:
        raise ConfigError(f"episodes {missing[:5]} are not in {cfg.store} (it has {len(src)} episodes)")
    engine = {"source": str(cfg.store), "generator": generator_version(cfg.generator),
              "observed": cfg.flywheel.observed}  # fmt: skip
    if wanted:  # settings every episode would fail on: one line now, not one warning per episode
        first = src.episode(wanted[0])
        cfg.flywheel.check_views(list(first.attrs["view_names"]))
        if not first.has("depth"):
            raise ConfigError(
                f"{cfg.store} has no depth, which the flywheel's 4DGS needs: collect with depth=true"
            )
    out = EpisodeStore.create(
        cfg.out, attrs={"collection": src.root_attrs.get("collection"), "data_engine": engine}
    )
    out.cleanup_incomplete(min_age_s=0.0)
    todo = [i for i in wanted if not out.has_episode(i)]
    done, failed = [], []
    t0 = time.time()
    for r in progress(_dispatch(cfg, todo), total=len(todo), desc="data engine", unit="ep"):
        (failed if "error" in r else done).append(r)
        if "error" in r:
            print(
                f"warning: episode {r['episode']} failed and was skipped: {r['error']}",
                file=sys.stderr,
                flush=True,
            )
    summary = {
        "store": cfg.store, "out": cfg.out, "episodes": len(wanted), "skipped_done": len(wanted) - len(todo),
        "processed": len(done), "failed": [{"episode": r["episode"], "error": r["error"]} for r in failed],
        "seconds": round(time.time() - t0, 1), "flywheel": summarise_rounds(done), "per_episode": done,
    }  # fmt: skip
    write_json_atomic(Path(cfg.out) / "job.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-data-engine run|flywheel key=value ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args.pop(0) if args and not args[0].startswith("-") and "=" not in args[0] else None
    if cmd not in ("run", "flywheel"):
        if cmd is None and ("-h" in args or "--help" in args):
            print(__doc__)
            raise SystemExit(0)
        print(f"error: expected a command, run or flywheel (ev-data-engine run key=value ...), got {cmd!r}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    if cmd == "flywheel" and not any(a.startswith("episodes=") for a in args):
        args.append("episodes=[0]")
    cfg = parse_cli(DataEngineConfig, args, prog=f"ev-data-engine {cmd}")
    with user_errors():
        summary = run_job(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_episode"}))


if __name__ == "__main__":
    main()
