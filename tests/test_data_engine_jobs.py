"""ev-data-engine: the flywheel as a resumable batch job, locally and on a local Ray instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import nan_store, run_module

pytestmark = pytest.mark.integration
TINY_FLYWHEEL = [
    "flywheel.observed=[main]", "flywheel.rounds=1", "flywheel.max_frames=5", "flywheel.steps=2",
    "flywheel.n_init=300", "flywheel.fit.coarse_steps=10", "flywheel.fit.fine_steps=10",
]  # fmt: skip


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory) -> Path:
    """A 3-episode pick_place store with depth (2 views, 32 px) and a tiny generator checkpoint."""
    import torch

    from enerverse.generator import EnerVerseGenerator
    from enerverse.io import save_generator
    from enerverse.presets import get_preset
    from sim.cameras import RIG_VERSION

    d = tmp_path_factory.mktemp("engine")
    run_module(d, "sim.collect", "task=pick_place", "episodes=3", "resolution=32", "views=[main,anchor_left]",
               "depth=true", "out=store", "video_episodes=0", "max_steps=30")  # fmt: skip
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    save_generator(EnerVerseGenerator(cfg), cfg, d / "gen", extra={"rig_version": RIG_VERSION})
    return d


def _job(d: Path, out: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_module(d, "data_engine.jobs", "run", f"store={d / 'store'}", f"out={d / out}",
                      f"generator={d / 'gen'}", *TINY_FLYWHEEL, *extra, check=check)  # fmt: skip


def test_a_job_writes_a_generated_store_keeps_real_views_and_resumes(engine_dir: Path) -> None:
    from enerverse.core.store import EpisodeStore

    r = _job(engine_dir, "out")
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["processed"] == 3 and s["failed"] == [] and s["skipped_done"] == 0
    src, out = EpisodeStore.open(engine_dir / "store"), EpisodeStore.open(engine_dir / "out")
    assert out.indices() == src.indices()
    ep, real = out.episode(0), src.episode(0)
    assert ep.attrs["provenance"] == "generated" and ep.attrs["generator_version"].startswith("gen@")
    assert ep.attrs["generated_views"] == ["anchor_left"] and ep.attrs["length"] == real.attrs["length"]
    assert (ep.load("rgb")[:, 0] == real.load("rgb")[:, 0]).all()  # the observed view is untouched
    assert (ep.load("action") == real.load("action")).all()
    assert (engine_dir / "out" / "pictures" / "episode_000000.png").is_file()
    job = json.loads((engine_dir / "out" / "job.json").read_text())
    rounds = job["per_episode"][0]["rounds"]
    assert {"generated", "render", "render_vs_generated_psnr", "depth_warp_error"} <= set(rounds[0])
    fw = s["flywheel"]  # the job's means: the generator alone against the flywheel's final views
    alone = np.mean([e["rounds"][0]["generated"]["psnr"] for e in job["per_episode"]])
    final = np.mean([e["rounds"][-1]["generated"]["psnr"] for e in job["per_episode"]])
    assert fw["episodes"] == 3 and np.isclose(fw["gain_db"], final - alone)
    assert fw["by_round"][0]["episodes"] == 3 and "render_psnr" in fw["by_round"][0]
    again = json.loads(_job(engine_dir, "out").stdout.strip().splitlines()[-1])
    assert again["processed"] == 0 and again["skipped_done"] == 3


def _pool_workers(pid: int) -> list[int]:
    """Live multiprocessing pool workers whose parent is ``pid`` (Linux /proc; not the resource tracker)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid and b"--multiprocessing-fork" in cmdline:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_job_loses_no_finished_episode_and_resumes(engine_dir: Path) -> None:
    """Killed with SIGKILL mid-job (2 pool workers): committed episodes stay, the workers die with
    the job (no writer left behind), and the same command finishes the rest."""
    from enerverse.core.store import EpisodeStore

    env = {**os.environ, "EV_NO_PROGRESS": "1"}
    args = [sys.executable, "-m", "data_engine.jobs", "run", f"store={engine_dir / 'store'}",
            f"out={engine_dir / 'killed'}", f"generator={engine_dir / 'gen'}", "workers=2",
            *TINY_FLYWHEEL]  # fmt: skip
    p = subprocess.Popen(args, cwd=engine_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = engine_dir / "killed"
    committed = lambda: sorted((out / "episodes").glob("episode_*/zarr.json"))  # noqa: E731
    deadline = time.time() + 240
    while time.time() < deadline and not committed():
        time.sleep(0.2)
    workers = _pool_workers(p.pid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert len(workers) == 2, f"expected the job's 2 pool workers, found {workers}"
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a pool worker outlived the killed job"
    first = EpisodeStore.open(out).indices()
    assert first and len(first) < 3
    kept = committed()[0]
    stamp = kept.stat().st_mtime_ns
    s = json.loads(_job(engine_dir, "killed").stdout.strip().splitlines()[-1])
    assert s["skipped_done"] == len(first) and s["processed"] == 3 - len(first)
    assert EpisodeStore.open(out).indices() == [0, 1, 2]
    assert kept.stat().st_mtime_ns == stamp  # not rewritten


def test_the_ray_backend_runs_the_same_job_with_two_workers(engine_dir: Path) -> None:
    pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    r = _job(engine_dir, "ray_out", "backend=ray", "workers=2", "episodes=[0,2]")
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["processed"] == 2 and s["failed"] == []
    from enerverse.core.store import EpisodeStore

    assert EpisodeStore.open(engine_dir / "ray_out").indices() == [0, 2]


def test_bad_input_is_one_line_and_a_failing_episode_is_skipped(engine_dir: Path) -> None:
    r = _job(engine_dir, "x", "backend=spark", check=False)
    assert (
        r.returncode != 0 and "backend must be 'local' or 'ray'" in r.stderr and "Traceback" not in r.stderr
    )
    r = _job(engine_dir, "x", "flywheel.observed=[wrist]", check=False)  # every episode would fail
    assert r.returncode == 2 and "flywheel.observed must be a non-empty subset" in r.stderr
    assert not (engine_dir / "x").exists()  # refused before the output store is made
    bad = nan_store(engine_dir / "store", engine_dir / "nan_store", episode=0)  # one bad episode
    r = run_module(engine_dir, "data_engine.jobs", "run", f"store={bad}", f"out={engine_dir / 'y'}",
                   f"generator={engine_dir / 'gen'}", "episodes=[0,2]", *TINY_FLYWHEEL)  # fmt: skip
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["processed"] == 1 and [f["episode"] for f in s["failed"]] == [0]  # reported and skipped
    assert "action has NaN or inf values" in s["failed"][0]["error"] and "episode 0 failed" in r.stderr
    r = run_module(engine_dir, "data_engine.jobs", "run", f"store={engine_dir}", check=False)
    assert r.returncode != 0 and "not an episode store" in r.stderr
