"""Shared test setup.

MuJoCo picks its GL backend when ``mujoco`` is first imported, so the headless defaults that
``import sim`` sets must be in place before any test module imports ``mujoco`` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")

pytest_plugins = ["helpers.store_testing"]  # the episode-store tests' ``store`` fixture


def run_torchrun(args: list[str], cwd, port: int, timeout: int = 300):
    """``python -m torch.distributed.run --nproc_per_node 2`` on ``args`` (one thread per rank)."""
    import subprocess
    import sys

    env = {**os.environ, "EV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def run_module(cwd, *args: str, check: bool = True):
    """``python -m <args>`` in ``cwd`` without progress bars; asserts success unless ``check=False``."""
    import subprocess
    import sys

    env = {**os.environ, "EV_NO_PROGRESS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env
    )
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="session")
def policy_workdir(tmp_path_factory) -> Path:
    """4 reach episodes (2 views, 32 px, with the object state) and a tiny generator trained 3 steps."""
    d = tmp_path_factory.mktemp("policy")
    run_module(
        d, "sim.collect", "task=reach", "episodes=4", "resolution=32", "views=[main,anchor_left]",
        "out=store", "video_episodes=0",
    )  # fmt: skip
    run_module(
        d, "enerverse.train", "task=reach", "preset=tiny", "store=store", "codec.steps=4", "train.steps=3",
        "sample_every=0", "out=gen",
    )  # fmt: skip
    return d


@pytest.fixture(scope="session")
def tiny_enerverse_policy(policy_workdir: Path) -> Path:
    """A tiny EnerVerse-A checkpoint trained 5 steps on ``policy_workdir`` (runtime and eval tests)."""
    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(
        policy_workdir, "pol_ev", gen, "train.steps=5", "policy.encoder.feature_shift=4"
    )  # shift: training only
    assert s["steps"] == 5 and s["encoder"] == "enerverse"
    return Path(s["checkpoint"])


def train_tiny_policy(workdir: Path, out: str, *extra: str) -> dict:
    """``ev-train-policy task=reach preset=tiny`` on the ``policy_workdir`` store, in process."""
    from policies.train import parse_args, train

    store, run = f"store={workdir / 'store'}", f"out={workdir / out}"
    cfg = parse_args(["task=reach", "preset=tiny", store, run, "device=cpu", *extra])
    cfg.validate()
    return train(cfg, workdir / out)


def random_observation(rt, B: int | None = None, seed: int = 0) -> dict:
    """A valid observation for PolicyRuntime ``rt`` (random pixels and state), batched when B is given."""
    import numpy as np

    rng = np.random.default_rng(seed)
    V, R = len(rt.views), rt.resolution
    lead = () if B is None else (B,)
    K = np.array([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]])
    T = np.eye(4)
    T[2, 3] = 1.0
    return {
        "rgb": rng.integers(0, 255, (*lead, V, R, R, 3), dtype=np.uint8),
        "state": rng.normal(size=(*lead, rt.state_dim)).astype(np.float32),
        "K": np.broadcast_to(K, (*lead, V, 3, 3)).copy(),
        "T_cam_world": np.broadcast_to(T, (*lead, V, 4, 4)).copy(),
    }


def nan_store(src: Path, dst: Path, key: str = "action", episode: int = -1, frame: int = 0) -> Path:
    """A copy of store ``src`` whose episode (position ``episode`` in its index list) has a NaN ``key``
    value at ``frame``: the store writer refuses NaN, so the copy is edited in place."""
    import shutil

    import numpy as np
    import zarr

    from enerverse.core.store import EpisodeStore

    shutil.copytree(src, dst)
    index = EpisodeStore.open(dst).indices()[episode]
    zarr.open_array(str(dst / "episodes" / f"episode_{index:06d}" / key), mode="r+")[frame, 0] = np.nan
    return dst
