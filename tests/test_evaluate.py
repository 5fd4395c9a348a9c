"""ev-eval and sim.evaluate: results files, any policy object, partial batches, output checks, the
Wilson interval."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import SMALL, last_json, run_entry

import sim  # noqa: F401  (headless GL defaults)
from enerverse.core.seeding import episode_seed
from sim.evaluate import EvalConfig, evaluate, wilson_interval
from sim.experts import make_expert


# --- ev-eval --------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_eval_expert_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = run_entry(
        "ev-eval",
        ["task=pick_place", "policy=expert", "episodes=2", "num_envs=2", *SMALL, f"out={out}", "videos=1"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    assert summary["task"] == "pick_place" and summary["episodes"] == 2
    assert summary["success_rate"] == 1.0
    lo, hi = summary["ci95"]
    assert (lo, hi) == pytest.approx(wilson_interval(2, 2), abs=1e-5)
    results = json.loads((out / "results.json").read_text())
    assert results["policy"] == "expert"
    (row,) = results["tasks"]
    assert row["task"] == "pick_place" and row["successes"] == 2
    assert row["stages"] == {"cube lifted": 1.0, "cube placed": 1.0}  # partial credit, here all of it
    assert all(e["stages_done"] == 2 for e in row["per_episode"])
    assert [e["seed"] for e in row["per_episode"]] == [episode_seed(1000, 0), episode_seed(1000, 1)]
    assert (out / "success.png").is_file() and (out / "config.json").is_file()
    assert (out / "pick_place.mp4").is_file()
    assert not (tmp_path / "outputs").exists()  # out= was honoured


class _Noop:
    def reset(self, instructions: list[str] | None = None) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        a = np.zeros((len(obs["state"]), 2, 7), dtype=np.float32)
        a[..., 6] = 1.0
        return a


@pytest.mark.integration
def test_evaluate_any_policy_with_partial_batches() -> None:
    kw = {"views": ["main"], "width": 16, "height": 16, "max_steps": 12}
    res = evaluate(_Noop(), "reach", episodes=3, num_envs=2, seed=5, env_kwargs=kw, show_progress=False)
    assert res["episodes"] == 3 and res["successes"] == 0 and res["success_rate"] == 0.0
    assert [e["seed"] for e in res["per_episode"]] == [episode_seed(5, i) for i in range(3)]
    assert all(e["length"] == 12 for e in res["per_episode"])
    assert res["ci95"] == list(wilson_interval(0, 3))
    assert "stages" not in res and "stages_done" not in res["per_episode"][0]  # reach has no stages
    res = evaluate(_Noop(), "pick_place", episodes=2, num_envs=2, seed=5, env_kwargs=kw, show_progress=False)
    assert res["stages"] == {"cube lifted": 0.0, "cube placed": 0.0}


@pytest.mark.integration
def test_evaluate_expert_in_process_counts_each_episode_once() -> None:
    kw = {"views": ["main"], "width": 16, "height": 16}
    res = evaluate(
        make_expert("reach"),
        "reach",
        episodes=3,
        num_envs=2,
        seed=0,
        videos=2,
        env_kwargs=kw,
        show_progress=False,
    )
    assert res["successes"] == 3
    assert len(res["frames"]) == 2 and res["frames"][0].shape[1:] == (1, 16, 16, 3)
    for e, clip in zip(res["per_episode"], res["frames"]):
        assert clip.shape[0] == e["length"] + 1  # reset frame + one per step


@pytest.mark.integration
def test_evaluate_imagines_only_for_recorded_episodes_still_running() -> None:
    """Imagined views sit beside the real ones of each recorded episode; an env is imagined for only
    while its recorded episode runs (the generator's sampling is most of an evaluation's cost)."""
    expert, calls = make_expert("reach"), []

    class Dreamer:
        def reset(self, instructions: list[str] | None = None) -> None:
            expert.reset(instructions)

        def act(self, obs: dict) -> np.ndarray:  # env 0 solves reach, env 1 idles to the step limit
            a = np.array(expert.act(obs))
            a[1:] = 0.0
            return a

        def imagine(self, envs: list[int]) -> np.ndarray:  # [len(envs), V, M, H, W, 3]: 100 + env
            calls.append(list(envs))
            return np.stack([np.full((1, 4, 16, 16, 3), 100 + i, np.uint8) for i in envs])

    kw = {"views": ["main"], "width": 16, "height": 16, "max_steps": 80}
    res = evaluate(Dreamer(), "reach", episodes=3, num_envs=2, seed=0, videos=2, env_kwargs=kw,
                   show_progress=False)  # fmt: skip
    first, second, third = res["per_episode"]
    assert first["success"] and first["length"] < second["length"] == 80
    n = first["length"]  # one chunk (one step) a decision; env 0's episode ends first
    assert calls[:80] == [[0, 1]] * n + [[1]] * (80 - n)
    assert len(calls) == 80 and third["length"] > 0  # the third episode is not recorded: never imagined
    clip0, clip1 = res["frames"]
    assert clip0.shape == (n + 1, 2, 16, 16, 3) and clip1.shape == (81, 2, 16, 16, 3)  # real | imagined
    assert (clip0[1:, 1] == 100).all() and (clip1[1:, 1] == 101).all()  # each env its own imagination


def test_evaluate_rejects_badly_shaped_policy_output() -> None:
    class Bad(_Noop):
        def act(self, obs: dict) -> np.ndarray:
            return np.zeros((len(obs["state"]), 7), dtype=np.float32)

    with pytest.raises(ValueError, match=r"policy.act must return actions \[B=2, chunk, A\]"):
        evaluate(
            Bad(),
            "reach",
            episodes=2,
            num_envs=2,
            show_progress=False,
            env_kwargs={"views": ["main"], "width": 16, "height": 16},
        )


@pytest.mark.parametrize(
    "k,n,expected",
    [
        (0, 10, (0.0, 0.27753)),
        (10, 10, (0.72247, 1.0)),
        (5, 10, (0.23659, 0.76341)),
        (1, 2, (0.09453, 0.90547)),
        (0, 0, (0.0, 1.0)),
    ],
)
def test_wilson_interval_known_values(k: int, n: int, expected: tuple[float, float]) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4) and hi == pytest.approx(expected[1], abs=1e-4)
    if n:
        assert lo <= k / n <= hi


def test_wilson_interval_narrows_with_more_episodes() -> None:
    w10 = np.diff(wilson_interval(5, 10))[0]
    w100 = np.diff(wilson_interval(50, 100))[0]
    assert w100 < w10
    assert np.diff(wilson_interval(50, 100, z=2.576))[0] > w100  # 99% is wider than 95%
    assert math.isclose(sum(wilson_interval(3, 10)) / 2, (3 + 1.96**2 / 2) / (10 + 1.96**2), rel_tol=1e-9)


def test_success_plot_labels_never_overlap_or_leave_the_image(tmp_path: Path) -> None:
    import imageio.v3 as iio

    from sim.plots import layout, success_plot

    names = ["reach", "metaworld/button-press-topdown-wall-v3", "pick_place", "metaworld/pick-place-wall-v3"]
    x0, slot, spans = layout(names)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))  # left to right, apart
    rows = [{"task": n, "success_rate": 0.5, "ci95": (0.3, 0.7)} for n in names]
    img = iio.imread(success_plot(rows, tmp_path / "success.png"))
    assert spans[0][0] >= 0 and spans[-1][1] <= img.shape[1]


# --- sweeps: units of work, shards, Ray -------------------------------------------------------------------
def test_a_sweep_plans_one_unit_per_policy_and_task_locally_and_whole_batch_shards_on_ray() -> None:
    from sim.sweep import plan_units

    cfg = EvalConfig(policies=["a", "b"], tasks=["reach", "push"], episodes=5, num_envs=2, shard_episodes=2)
    local = plan_units(cfg)
    assert [(u.policy, u.task, u.first, u.episodes) for u in local] == [
        ("a", "reach", 0, 5), ("a", "push", 0, 5), ("b", "reach", 0, 5), ("b", "push", 0, 5),
    ]  # fmt: skip
    shards = plan_units(dataclasses.replace(cfg, backend="ray"))
    assert len(shards) == 2 * 2 * 3 and {(u.first, u.episodes) for u in shards} == {(0, 2), (2, 2), (4, 1)}
    # a checkpoint draws its sampling noise per batch of num_envs: shards are whole batches
    odd = plan_units(dataclasses.replace(cfg, backend="ray", num_envs=4, shard_episodes=3, policies=["a"]))
    assert [(u.first, u.episodes) for u in odd if u.task == "reach"] == [(0, 4), (4, 1)]


def test_policies_get_short_distinct_names() -> None:
    from sim.sweep import policy_names

    assert policy_names(["expert"]) == {"expert": "expert"}
    names = policy_names(["outputs/run_a/checkpoint", "/x/run_b/checkpoint", "checkpoints/enerverse_a"])
    assert list(names.values()) == ["run_a/checkpoint", "run_b/checkpoint", "enerverse_a"]
    # one path ending another's: the shorter is told apart by the folder it sits in
    here = Path.cwd().name
    assert policy_names(["checkpoint", "old/checkpoint"]) == {
        "checkpoint": f"{here}/checkpoint", "old/checkpoint": "old/checkpoint",
    }  # fmt: skip


class _BatchRecorder:
    """The reach expert, recording the batch size of every reset (a checkpoint's noise depends on it)."""

    def __init__(self) -> None:
        self.inner, self.batches = make_expert("reach"), []

    def reset(self, instructions: list[str]) -> None:
        self.batches.append(len(instructions))
        self.inner.reset(instructions)

    def act(self, obs: dict):
        return self.inner.act(obs)


def test_merged_shards_equal_the_unsharded_evaluation() -> None:
    """The same 5 episodes evaluated whole and as shards of 2 (in completion order) give one row, run
    in the same batches (the short last shard too)."""
    from sim.sweep import Unit, evaluate_unit, merge_shards, plan_units

    kw = {"views": ["main"], "width": 16, "height": 16, "max_steps": 12}
    cfg = EvalConfig(task="reach", episodes=5, num_envs=2, seed=3, videos=0)
    recorders = [_BatchRecorder()]
    whole = evaluate_unit(recorders[0], Unit("expert", "reach", 0, 5), cfg, kw, show_progress=False)
    parts = []
    units = plan_units(dataclasses.replace(cfg, backend="ray", shard_episodes=2))
    for u in sorted(units, key=lambda u: -u.first):  # completion order need not be episode order
        recorders.append(_BatchRecorder())
        part = evaluate_unit(recorders[-1], u, cfg, kw, show_progress=False)
        parts.append({**part, "policy": "expert", "first": u.first, "views": ["main"], "seconds": 1.0})
    row = merge_shards(parts)
    for key in ("per_episode", "successes", "success_rate", "ci95", "mean_length", "episodes"):
        assert row[key] == whole[key], key
    assert row["shards"] == 3 and row["seconds"] == 3.0
    assert sorted(b for r in recorders[1:] for b in r.batches) == sorted(recorders[0].batches) == [2, 2, 2]


@pytest.mark.integration
def test_a_ray_sweep_gives_the_local_result_episode_for_episode(tmp_path: Path, monkeypatch) -> None:
    """The same evaluation, in this process and as 2-episode shards on a local Ray instance with 2 CPUs:
    the same seeds, successes and lengths per task, and the same video grids."""
    pytest.importorskip("ray")
    import imageio.v3 as iio

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    common = ["tasks=[reach,push]", "policy=expert", "episodes=3", "num_envs=2", *SMALL, "videos=3"]
    rows = {}
    for backend, extra in (("local", []), ("ray", ["workers=2", "shard_episodes=2"])):
        args = [*common, f"backend={backend}", *extra, f"out={tmp_path / backend}"]
        proc = run_entry("ev-eval", args, tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[backend] = json.loads((tmp_path / backend / "results.json").read_text())["tasks"]
    assert [r["task"] for r in rows["ray"]] == ["reach", "push"] and rows["ray"][0]["shards"] == 2
    for a, b in zip(rows["local"], rows["ray"], strict=True):
        assert a["per_episode"] == b["per_episode"] and a["ci95"] == b["ci95"]
        shape = [iio.improps(tmp_path / backend / f"{a['task']}.mp4").shape for backend in ("local", "ray")]
        assert shape[0] == shape[1]  # three episodes in the grid, whichever shard recorded them


def test_sweep_settings_are_checked_in_one_line(tmp_path: Path) -> None:
    for args, msg in (
        (["backend=slurm"], "backend must be 'local' or 'ray'"),
        (["policies=[expert,./expert]"], "policies must be distinct folders"),
        (["tasks=[reach,reach]"], "tasks must be distinct"),
        (["shard_episodes=0"], "shard_episodes must be positive"),
        (["backend=ray", "device=cuda"], "device=cuda needs backend=local"),
        (["backend=ray", "asynchronous=true"], "asynchronous=true (a process per env) needs backend=local"),
        (["policies=[expert]", "policy=somewhere"], "give policy= or policies=, not both"),
        (["policies=[expert,nowhere]"], "policy='nowhere': expected 'expert' or a policy checkpoint"),
    ):
        proc = run_entry("ev-eval", ["task=reach", "episodes=1", *args], tmp_path)
        assert proc.returncode == 2 and msg in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
