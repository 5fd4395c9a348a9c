"""configs/task/: one profile per task, the one home of its episode limit, views and resolution."""

from __future__ import annotations

import subprocess
import sys

import pytest
import zarr

import sim  # noqa: F401  (headless GL defaults)
from enerverse.core.config import ConfigError
from sim.collect import CollectConfig
from sim.env import EnerVerseEnv
from sim.tasks import TASKS
from sim.tasks.profile import TaskProfile, profile_tasks, task_profile


def test_every_task_has_a_profile_and_every_profile_a_task() -> None:
    assert set(profile_tasks()) == set(TASKS) | {"metaworld"}
    for name in TASKS:
        p = task_profile(name)
        assert p.max_steps and p.max_steps > 0 and p.description, name
    assert task_profile("metaworld/reach-v3").max_steps is None  # Meta-World's own horizon


def test_profiles_are_copies() -> None:
    task_profile("reach").views.append("wrist")
    assert "wrist" not in task_profile("reach").views


def test_environment_and_settings_start_from_the_profile() -> None:
    p = task_profile("reach")
    env = EnerVerseEnv("reach")
    assert env.max_steps == p.max_steps and env.width == p.resolution and list(env.rig.views) == p.views
    env.close()
    cfg = CollectConfig(task="reach")
    assert (cfg.views, cfg.resolution, cfg.max_steps) == (p.views, p.resolution, p.max_steps)
    cfg = CollectConfig(task="reach", views=["main"], resolution=32, max_steps=7)  # overrides win
    assert (cfg.views, cfg.resolution, cfg.max_steps) == (["main"], 32, 7)
    assert EnerVerseEnv("reach", views=["main"], width=32, height=32, max_steps=7).max_steps == 7


def test_explicit_anchors_without_views_render_main_and_those_anchors() -> None:
    """The profile's views give way to explicit anchors: main and those anchors are rendered."""
    env = EnerVerseEnv("reach", width=16, height=16, anchors=[{"name": "top", "yaw_deg": 45.0}])
    try:
        assert env.view_names == ["main", "top"]
        obs, _ = env.reset(seed=0)
        assert obs["rgb"].shape == (2, 16, 16, 3)
    finally:
        env.close()


def test_a_bad_profile_is_refused() -> None:
    from enerverse.core.config import config_from_dict

    with pytest.raises(ConfigError, match="max_steps must be positive"):
        config_from_dict(TaskProfile, {"max_steps": 0})
    with pytest.raises(ConfigError, match="camera"):
        config_from_dict(TaskProfile, {"views": ["top"]})
    with pytest.raises(ConfigError, match="unknown task preset 'pick_plce'"):
        task_profile("pick_plce")


def test_collect_cli_uses_the_profile(tmp_path) -> None:
    """ev-collect task=reach records the profile's settings in the store."""
    from enerverse.core.store import EpisodeStore

    out = tmp_path / "store"
    r = subprocess.run(
        [sys.executable, "-m", "sim.collect", "task=reach", "episodes=1", "resolution=32", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # its run folder (outputs/collect/<time>) goes here, not into the checkout
    )
    assert r.returncode == 0, r.stderr[-2000:]
    meta = EpisodeStore.open(out).root_attrs["collection"]
    assert meta["max_steps"] == task_profile("reach").max_steps
    assert meta["views"] == task_profile("reach").views and meta["resolution"] == 32
    legacy = dict(meta, max_steps=None)  # a store from before configs/task/ ("the task's own")
    zarr.open_group(str(out), mode="r+").attrs["collection"] = legacy
    r = subprocess.run(
        [sys.executable, "-m", "sim.collect", "task=reach", "episodes=2", "resolution=32", f"out={out}",
         "resume=true"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(EpisodeStore.open(out)) == 2
