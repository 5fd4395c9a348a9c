"""Scripted experts solve every task; doing nothing does not; the memory task needs the cue."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import sim  # noqa: F401  (headless GL defaults)
from sim.env import EnerVerseEnv
from sim.experts import make_expert
from sim.rollout import batch_obs
from sim.tasks import TASKS
from sim.tasks.base import LAMP_OFF
from sim.tasks.profile import task_profile

pytestmark = pytest.mark.integration

SEEDS = (0, 1)
NOOP = np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32)  # zero motion, gripper open


def _env(task: str) -> EnerVerseEnv:
    return EnerVerseEnv(task, views=["main"], width=32, height=32)


def _run(env: EnerVerseEnv, seed: int, act) -> list[dict]:
    """Roll out ``act(obs) -> action [7]`` from reset(seed) until the episode ends; returns the infos."""
    obs, info = env.reset(seed=seed)
    infos, done = [info], False
    while not done:
        obs, reward, term, trunc, info = env.step(act(obs))
        assert reward == float(info["success"])
        assert not (term and trunc)
        infos.append(info)
        done = term or trunc
    return infos


@functools.cache
def expert_rollout(task: str, seed: int) -> tuple[dict, ...]:
    env = _env(task)
    try:
        expert = make_expert(task)
        expert.reset()

        def act(obs: dict) -> np.ndarray:
            a = expert.act(batch_obs(obs))
            assert a.shape == (1, 1, 7) and a.dtype == np.float32 and np.all(np.isfinite(a))
            return a[0, 0]

        return tuple(_run(env, seed, act))
    finally:
        env.close()


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds(task: str) -> None:
    for seed in SEEDS:
        infos = expert_rollout(task, seed)
        last = infos[-1]
        assert last["success"], f"{task} seed {seed}: expert failed after {last['step']} steps"
        assert last["step"] < task_profile(task).max_steps
        assert not any(i["success"] for i in infos[:-1])  # the episode ends on the first success


@pytest.mark.parametrize("task", list(TASKS))
def test_noop_policy_does_not_succeed(task: str) -> None:
    env = _env(task)
    try:
        for seed in SEEDS:
            infos = _run(env, seed, lambda obs: NOOP)
            assert not any(i["success"] for i in infos), f"{task} seed {seed}: doing nothing succeeded"
            assert infos[-1]["step"] == task_profile(task).max_steps  # truncated at the limit
    finally:
        env.close()


def test_long_horizon_stages_count_up() -> None:
    for seed in SEEDS:
        stages = [i["stages_done"] for i in expert_rollout("long_horizon", seed)]
        assert stages[0] == 0 and stages[-1] == 3
        assert all(b >= a for a, b in zip(stages, stages[1:])), stages
        assert {0, 1, 2, 3} <= set(stages)  # one stage at a time


def test_expert_is_batched_and_resettable() -> None:
    """Two environments driven by one expert (as ev-eval does) behave like two single runs."""
    envs = [_env("reach"), _env("reach")]
    try:
        expert = make_expert("reach")
        expert.reset()
        obs = [e.reset(seed=s)[0] for e, s in zip(envs, SEEDS)]
        done = [False, False]
        for _ in range(60):
            batch = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
            actions = expert.act(batch)
            assert actions.shape == (2, 1, 7)
            for b, e in enumerate(envs):
                if not done[b]:
                    obs[b], _, term, trunc, info = e.step(actions[b, 0])
                    done[b] = term or trunc
            if all(done):
                break
        assert all(done)
        assert [len(expert_rollout("reach", s)) - 1 for s in SEEDS] == [e._steps for e in envs]
    finally:
        for e in envs:
            e.close()


def test_unknown_task_expert() -> None:
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_expert("nope")


# --- memory: the cue matters ----------------------------------------------------------------------------
def _memory_rollout(env: EnerVerseEnv, seed: int, choose) -> tuple[bool, str, str, int]:
    """Run the memory expert, replacing its remembered plate with ``choose(remembered)`` after the first
    act. Returns (success, cued plate, remembered plate, most stages done)."""
    expert = make_expert("memory")
    expert.reset()
    state = {"first": True, "remembered": None}

    def act(obs: dict) -> np.ndarray:
        a = expert.act(batch_obs(obs))[0, 0]
        if state["first"]:
            ctx = expert._ctx[0]
            state["remembered"] = ctx.memo["plate"]
            ctx.memo["plate"] = choose(ctx.memo["plate"])
            state["first"] = False
        return a

    infos = _run(env, seed, act)
    stages = max(i["stages_done"] for i in infos)
    return bool(infos[-1]["success"]), env.task.cued, state["remembered"], stages


def test_memory_cue_is_only_shown_at_the_start() -> None:
    env = _env("memory")
    try:
        obs, _ = env.reset(seed=0)
        p = env.task.decode_privileged(obs["privileged"])
        np.testing.assert_allclose(p["lamp_rgb"], p[f"{env.task.cued}_rgb"])
        for _ in range(env.task.cue_steps):
            obs, *_ = env.step(NOOP)
        p = env.task.decode_privileged(obs["privileged"])
        np.testing.assert_allclose(p["lamp_rgb"], LAMP_OFF, atol=1e-6)
        assert not np.allclose(p["lamp_rgb"], p["plate_a_rgb"]) and not np.allclose(
            p["lamp_rgb"], p["plate_b_rgb"]
        )
        # the answer stays in the object state (for the auxiliary loss) after the lamp goes dark
        np.testing.assert_allclose(p["cued_plate"], p[env.task.cued])
    finally:
        env.close()


@pytest.mark.parametrize(
    "task, first, second", [("memory", "plate_a", "plate_b"), ("long_horizon", "cube_a", "cube_b")]
)
def test_look_alike_objects_are_named_by_position(task: str, first: str, second: str) -> None:
    """Two objects of one kind (random colours) are named by where they start, so the auxiliary loss's
    per-name targets can be read from an image: ``first`` has the smaller y."""
    env = _env(task)
    try:
        for seed in range(8):
            obs, _ = env.reset(seed=seed)
            p = env.task.decode_privileged(obs["privileged"])
            assert p[first][1] < p[second][1], (
                f"seed {seed}: {first} {p[first][:2]}, {second} {p[second][:2]}"
            )
    finally:
        env.close()


def test_memory_wrong_plate_fails() -> None:
    env = _env("memory")
    try:
        for seed in (0, 4):
            ok, cued, remembered, stages = _memory_rollout(
                env, seed, lambda p: "plate_b" if p == "plate_a" else "plate_a"
            )
            assert remembered == cued  # the expert read the cue correctly ...
            assert not ok, f"seed {seed}: success on the wrong plate"  # ... and the wrong plate fails
            assert stages == 2  # progress: lifted, placed on a plate, but not on the cued one
    finally:
        env.close()


def test_memory_fixed_plate_succeeds_only_when_it_was_cued() -> None:
    """A policy that ignores the cue (always plate_a) succeeds exactly on the seeds that cued plate_a."""
    env = _env("memory")
    try:
        outcomes = [_memory_rollout(env, seed, lambda p: "plate_a") for seed in (0, 1, 4, 5)]
    finally:
        env.close()
    for ok, cued, _, stages in outcomes:
        assert ok == (cued == "plate_a") and stages == (3 if ok else 2)
    assert {cued for _, cued, _, _ in outcomes} == {"plate_a", "plate_b"}  # both cues occur
