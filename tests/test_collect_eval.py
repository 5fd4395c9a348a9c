"""ev-collect and ev-eval: stores they write, resume, crash safety, summaries, config errors."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.cli import SMALL, entry_command, last_json, run_entry

import sim  # noqa: F401  (headless GL defaults)
from enerverse.core.camera import intrinsics_from_fovy, look_at
from enerverse.core.seeding import episode_seed
from enerverse.core.store import EpisodeStore
from sim import collect as collect_mod
from sim import evaluate as evaluate_mod
from sim.cameras import MAIN_EYE, MAIN_FOVY, MAIN_TARGET
from sim.env import STATE_DIM, EnerVerseEnv
from sim.experts import make_expert

EPISODE_DIR = re.compile(r"^episode_\d{6}$")


def episode_hashes(store: Path, index: int) -> dict[str, str]:
    root = store / "episodes" / f"episode_{index:06d}"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def committed(store: Path) -> list[str]:
    d = store / "episodes"
    return sorted(e.name for e in d.iterdir() if EPISODE_DIR.match(e.name)) if d.is_dir() else []


def check_episode_reads_back(ep, views: int = 1, res: int = 32) -> None:
    T = ep.length
    assert T >= 2
    names = ep.keys()
    assert {"rgb", "state", "action", "T_cam_world", "K"} <= set(names)
    arrays = {k: ep.load(k) for k in names}
    assert arrays["rgb"].shape == (T, views, res, res, 3) and arrays["rgb"].dtype == np.uint8
    assert arrays["action"].shape == (T, 7) and arrays["action"].dtype == np.float32
    assert arrays["state"].shape == (T, STATE_DIM)
    assert arrays["T_cam_world"].shape == (T, views, 4, 4)
    assert arrays["K"].shape == (views, 3, 3)
    for a in arrays.values():
        assert np.all(np.isfinite(a))
    # no torn (zero-filled) frames: every pose is rigid and every image has content
    np.testing.assert_array_equal(
        arrays["T_cam_world"][:, :, 3], np.broadcast_to([0, 0, 0, 1], (T, views, 4))
    )
    assert (arrays["rgb"].reshape(T, -1).max(axis=1) > 0).all()
    assert isinstance(ep.attrs["success"], bool)


# --- ev-collect -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    cwd = tmp_path_factory.mktemp("collect")
    store = cwd / "store"
    proc = run_entry("ev-collect", ["episodes=2", *SMALL, f"out={store}", "video_episodes=1"], cwd)
    return proc, store, cwd


@pytest.mark.integration
def test_collect_writes_a_readable_store(collected) -> None:
    proc, store_path, cwd = collected
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0
    assert summary["task"] == "pick_place" and summary["collected_now"] == 2
    store = EpisodeStore.open(store_path)
    assert store.indices() == [0, 1] and store.incomplete() == []
    K_main = intrinsics_from_fovy(MAIN_FOVY, 32, 32)
    T_main = look_at(MAIN_EYE, MAIN_TARGET)
    for i in (0, 1):
        ep = store.episode(i)
        check_episode_reads_back(ep)
        a = ep.attrs
        assert a["success"] is True and a["task"] == "pick_place" and a["provenance"] == "sim"
        assert a["seed"] == episode_seed(0, i) and a["view_names"] == ["main"] and a["view_kinds"] == ["real"]
        assert a["fps"] == 20.0 and a["instruction"].startswith("put the ")
        T_cw = ep.load("T_cam_world")
        np.testing.assert_allclose(T_cw, np.broadcast_to(T_main, T_cw.shape[:2] + (4, 4)), atol=1e-5)
        np.testing.assert_allclose(ep.load("K")[0], K_main, rtol=1e-6)
        action = ep.load("action")
        np.testing.assert_array_equal(action[-1, :6], 0.0)  # the final frame holds still
        assert ep.load("rgb")[0].std() > 0  # not a blank image
    # run folder: config, summary, video (relative to the working directory)
    run_dir = cwd / summary["run_dir"]
    assert (run_dir / "config.json").is_file() and (run_dir / "summary.json").is_file()
    assert json.loads((run_dir / "config.json").read_text())["episodes"] == 2
    assert Path(cwd / summary["video"]).is_file()


@pytest.mark.integration
def test_collected_episode_is_reproducible_from_its_seed(collected) -> None:
    _, store_path, _ = collected
    ep = EpisodeStore.open(store_path).episode(1)
    env = EnerVerseEnv("pick_place", views=["main"], width=32, height=32)
    try:
        obs, info = env.reset(seed=ep.attrs["seed"])
        assert info["instruction"] == ep.attrs["instruction"]
        np.testing.assert_allclose(ep.load("state", 0), obs["state"], atol=1e-6)
        np.testing.assert_allclose(ep.load("privileged", 0), obs["privileged"], atol=1e-6)  # object state
        np.testing.assert_array_equal(ep.load("rgb", 0), obs["rgb"])
        # replaying the stored actions reproduces the stored states
        states, actions = ep.load("state"), ep.load("action")
        for t in range(5):
            obs, *_ = env.step(actions[t])
            np.testing.assert_allclose(obs["state"], states[t + 1], atol=1e-5)
    finally:
        env.close()


def test_noise_injection_stores_the_experts_corrections(tmp_path: Path) -> None:
    """action_noise: the env executes expert + noise, the store keeps the expert's own action, and the
    expert still succeeds by correcting the drift."""
    from sim.rollout import record_episode

    env = EnerVerseEnv("reach", views=["main"], width=32, height=32)
    store = EpisodeStore.create(tmp_path / "s")
    try:
        clean = record_episode(env, make_expert("reach"), store, 0, 5)
        noisy = record_episode(env, make_expert("reach"), store, 1, 5, action_noise=0.01)
        record_episode(env, make_expert("reach"), store, 2, 5, action_noise=0.01)
        with pytest.raises(ValueError, match="action_noise must be >= 0"):
            record_episode(env, make_expert("reach"), store, 3, 5, action_noise=-1.0)
    finally:
        env.close()
    assert clean["success"] and noisy["success"]
    a, b, c = (store.episode(i) for i in range(3))
    assert "action_noise" not in a.attrs and b.attrs["action_noise"] == 0.01
    # same first observation, so the same expert label; then the executed noise moves the arm elsewhere
    np.testing.assert_allclose(a.load("action", 0), b.load("action", 0), atol=1e-6)
    assert np.abs(a.load("state", 1) - b.load("state", 1)).max() > 1e-4
    # the labels are the expert's clipped actions, not the noisy ones the env executed
    steps = np.linalg.norm(b.load("action")[:-1, :3], axis=1)
    assert steps.max() <= 0.05 + 1e-6
    np.testing.assert_array_equal(b.load("state"), c.load("state"))  # the noise follows the seed


@pytest.mark.integration
def test_collect_refuses_an_existing_store_without_resume(collected, tmp_path: Path) -> None:
    _, src, _ = collected
    store = tmp_path / "store"
    shutil.copytree(src, store)
    before = {i: episode_hashes(store, i) for i in (0, 1)}
    proc = run_entry("ev-collect", ["episodes=3", *SMALL, f"out={store}"], tmp_path)
    assert proc.returncode == 2
    assert "resume=true" in proc.stderr and "2 episodes" in proc.stderr
    assert committed(store) == ["episode_000000", "episode_000001"]
    assert {i: episode_hashes(store, i) for i in (0, 1)} == before


@pytest.mark.integration
def test_collect_resume_adds_only_the_missing_episode(collected, tmp_path: Path) -> None:
    _, src, _ = collected
    store = tmp_path / "store"
    shutil.copytree(src, store)
    before = {i: episode_hashes(store, i) for i in (0, 1)}
    assert all(before.values())
    proc = run_entry(
        "ev-collect", ["episodes=3", *SMALL, f"out={store}", "resume=true", "video_episodes=0"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["episodes"] == 3 and summary["collected_now"] == 1
    assert "success_rate" in summary
    assert committed(store) == ["episode_000000", "episode_000001", "episode_000002"]
    assert {i: episode_hashes(store, i) for i in (0, 1)} == before  # byte-identical
    ep2 = EpisodeStore.open(store).episode(2)
    check_episode_reads_back(ep2)
    assert ep2.attrs["seed"] == episode_seed(0, 2)


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_collect_survives_sigkill_and_resumes(tmp_path: Path, workers: int) -> None:
    store = tmp_path / "store"
    args = ["episodes=50", f"workers={workers}", *SMALL, f"out={store}", "video_episodes=0"]
    module_cmd = entry_command("ev-collect", "sim.collect")
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(module_cmd + args, cwd=tmp_path, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 90
            while len(committed(store)) < 2:
                if proc.poll() is not None:
                    pytest.fail(f"ev-collect exited early: {(tmp_path / 'stderr.txt').read_text()}")
                assert time.monotonic() < deadline, "no 2 episodes committed within 90 s"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    s = EpisodeStore.open(store)
    n = max(s.indices()) + 1
    assert len(s) >= 2
    if workers == 1:
        assert s.indices() == list(range(n))  # one worker: committed in order
    for ep in s.episodes():
        check_episode_reads_back(ep)
    # resume at once (pool workers of the killed run must not keep writing into the store)
    proc = run_entry(
        "ev-collect",
        [f"episodes={n + 1}", f"workers={workers}", *SMALL, f"out={store}", "--resume", "video_episodes=0"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["episodes"] == n + 1
    s = EpisodeStore.open(store)
    assert s.indices() == list(range(n + 1))
    assert s.incomplete() == []  # leftovers of the killed writers were cleaned up
    for ep in s.episodes():  # every committed episode is complete
        check_episode_reads_back(ep)


@pytest.mark.integration
def test_collect_records_seg_masks_and_the_camera_rig(tmp_path: Path) -> None:
    from sim.cameras import RIG_VERSION

    store_path = tmp_path / "seg"
    proc = run_entry("ev-collect", ["episodes=1", *SMALL, "seg=true", f"out={store_path}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = EpisodeStore.open(store_path)
    assert store.root_attrs["collection"]["rig_version"] == RIG_VERSION
    ep = store.episode(0)
    assert ep.seg_names == ["cube", "plate"]
    seg = ep.load("seg")
    assert seg.shape == (ep.length, 1, 32, 32) and set(np.unique(seg[0])) == {0, 1, 2}


@pytest.mark.integration
def test_collect_resume_refuses_a_store_of_the_legacy_camera_rig(collected, tmp_path: Path) -> None:
    _, store, _ = collected
    copy = tmp_path / "legacy"
    shutil.copytree(store, copy)
    root = zarr.open_group(str(copy), mode="r+", zarr_format=3)
    settings = dict(root.attrs["collection"])
    del settings["rig_version"], settings["seg"]  # as written before these settings existed
    root.attrs["collection"] = settings
    proc = run_entry("ev-collect", ["episodes=3", *SMALL, f"out={copy}", "resume=true"], tmp_path)
    assert proc.returncode == 2
    assert "rig_version" in proc.stderr and "(1, " in proc.stderr


@pytest.mark.integration
def test_collect_resume_refuses_other_settings(collected, tmp_path: Path) -> None:
    _, store, _ = collected
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    proc = run_entry(
        "ev-collect", ["episodes=3", "resolution=48", "views=[main]", f"out={copy}", "resume=true"], tmp_path
    )
    assert proc.returncode == 2
    assert "other settings" in proc.stderr and "resolution" in proc.stderr
    assert len(EpisodeStore.open(copy)) == len(EpisodeStore.open(store))


def test_collect_into_a_file_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as exc:
        collect_mod.main([f"out={tmp_path / 'f'}", *SMALL])
    assert exc.value.code == 2 and "is a file" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


# --- config errors (in process: parsing fails before any simulation) ------------------------------------
@pytest.mark.parametrize("main", [collect_mod.main, evaluate_mod.main], ids=["ev-collect", "ev-eval"])
@pytest.mark.parametrize(
    "args,fragments",
    [
        (
            ["episdoes=2"],
            [
                "unknown config key 'episdoes'",
                "valid keys",
                "episodes",
                "resolution",
                "did you mean 'episodes'",
            ],
        ),
        (
            ["task=nope"],
            [
                "unknown task 'nope'",
                "valid tasks",
                "reach",
                "push",
                "pick_place",
                "stack",
                "long_horizon",
                "memory",
            ],
        ),
        (["resolution=-1"], ["resolution", "-1"]),
        (["resolution=abc"], ["resolution"]),
        (["views=[main,fisheye]"], ["unknown camera 'fisheye'", "valid views"]),
        (["episodes=0"], ["episodes must be positive"]),
        (["--episodes", "2"], ["key=value"]),
        (["task=metaworld/bogus-v3"], ["unknown Meta-World task 'bogus-v3'"]),
    ],
)
def test_entry_point_config_errors_exit_2(
    main,
    args: list[str],
    fragments: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for frag in fragments:
        assert frag in err, err
    assert not (tmp_path / "outputs").exists()  # nothing is written for a bad config


def test_eval_unknown_policy_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        evaluate_mod.main(["policy=ckpt/foo", "episodes=1", "num_envs=1", *SMALL, f"out={tmp_path / 'e'}"])
    assert exc.value.code == 2
    assert "policy='ckpt/foo'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()  # refused before writing anything


@pytest.mark.parametrize(
    "args,fragment", [(["resolution=0"], "resolution"), (["views=[fisheye]"], "fisheye")]
)
def test_eval_all_checks_the_settings_too(
    args: list[str],
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        evaluate_mod.main(["task=all", *args])
    assert exc.value.code == 2 and fragment in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_collect_help_lists_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        collect_mod.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for key in ("episodes", "resume", "workers", "views", "resolution", "task"):
        assert key in out
