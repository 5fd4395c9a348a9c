"""EnerVerse-A's runtime: observation checks, finite actions, the action queue, non-blocking steps,
the history and memory it keeps (on a tiny checkpoint trained 5 steps)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_observation


@pytest.fixture(scope="module")
def enerverse_policy(tiny_enerverse_policy: Path) -> Path:
    return tiny_enerverse_policy


@pytest.fixture(scope="module")
def workdir(policy_workdir: Path) -> Path:
    return policy_workdir


def test_runtime_rejects_bad_observations(enerverse_policy: Path) -> None:
    from policies.runtime import ObservationError, PolicyRuntime

    rt = PolicyRuntime(enerverse_policy)
    rt.reset("reach the red sphere")
    good = random_observation(rt)
    bad = {
        "missing view": {**good, "rgb": good["rgb"][:1]},
        "extra view": {**good, "rgb": np.concatenate([good["rgb"], good["rgb"][:1]])},
        "wrong size": {**good, "rgb": np.zeros((2, 16, 16, 3), np.uint8)},
        "float rgb": {**good, "rgb": good["rgb"].astype(np.float32)},
        "nan state": {**good, "state": np.full_like(good["state"], np.nan)},
        "no cameras": {k: v for k, v in good.items() if k != "K"},
    }
    for name, obs in bad.items():
        with pytest.raises(ObservationError, match=r"expected|NaN") as e:
            rt.observe(obs)
        assert "rgb uint8 [B, V=2 (main, anchor_left), 32, 32, 3]" in str(e.value) or name == "nan state", (
            name
        )
    # views picked by name from observations that carry more of them
    rt2 = PolicyRuntime(enerverse_policy, view_names=["wrist", "anchor_left", "main"])
    rt2.reset("reach")
    many = {
        **good,
        "rgb": np.stack([good["rgb"][0]] * 3),
        "K": np.stack([good["K"][0]] * 3),
        "T_cam_world": np.stack([good["T_cam_world"][0]] * 3),
    }
    assert rt2.act(many).shape == (1, rt2.horizon, 7)
    with pytest.raises(ObservationError, match="needs views"):
        PolicyRuntime(enerverse_policy, view_names=["main", "wrist"])


def test_runtime_never_returns_non_finite_actions(enerverse_policy: Path) -> None:
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy)
    rt.reset("reach")
    rt.policy.predict = lambda *a, **k: torch.full((1, rt.horizon, 7), float("nan"))
    with pytest.raises(RuntimeError, match="non-finite"):
        rt.act(random_observation(rt))


@pytest.mark.parametrize("background", [False, True])
def test_runtime_queue_keeps_time_order(enerverse_policy: Path, background: bool) -> None:
    """Each chunk is stamped with the tick it was computed at; step() must return action k at tick k."""
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy, background=background, prefetch_at=2)
    rt.reset("reach")
    H = rt.horizon
    launched: list[int] = []

    def fake_infer(batch: dict) -> np.ndarray:
        t0 = int(batch["frame"][0])  # the tick of the newest observation in this batch
        launched.append(t0)
        time.sleep(0.05)  # inference takes a while: background ticks run on meanwhile
        return (t0 + np.arange(H, dtype=np.float32))[None, :, None].repeat(7, axis=2)

    rt._infer = fake_infer
    got = [float(rt.step(random_observation(rt, seed=k))[0]) for k in range(3 * H)]
    assert got == [float(k) for k in range(3 * H)]
    if background:  # the next chunk was started before the queue ran dry
        assert len(launched) >= 3 and all(b - a < H for a, b in zip(launched, launched[1:]))
    else:
        assert launched == [0, H, 2 * H]
    rt.close()


def test_non_blocking_step_returns_none_until_the_chunk_is_ready(enerverse_policy: Path) -> None:
    """A real-time caller (the ROS node) never waits for inference: it holds for that tick instead."""
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy, background=True, prefetch_at=2)
    rt.reset("reach")
    H = rt.horizon

    def slow_infer(batch: dict) -> np.ndarray:
        time.sleep(0.3)
        return (int(batch["frame"][0]) + np.arange(H, dtype=np.float32))[None, :, None].repeat(7, axis=2)

    rt._infer = slow_infer
    assert rt.step(random_observation(rt, seed=0), block=False) is None  # inference started, nothing yet
    time.sleep(0.5)
    got = rt.step(random_observation(rt, seed=1), block=False)
    assert got is not None and float(got[0]) == 1.0  # the action for this tick (tick 0's was skipped)
    rt.close()


def test_action_steps_executes_a_prefix_of_each_chunk(enerverse_policy: Path) -> None:
    """Receding horizon: act() returns the first k actions of the chunk, step() replans every k ticks."""
    from policies.runtime import PolicyRuntime

    full, short = (
        PolicyRuntime(enerverse_policy, seed=1),
        PolicyRuntime(enerverse_policy, seed=1, action_steps=2),
    )
    for rt in (full, short):
        rt.reset("reach the red sphere")
    o = random_observation(full, seed=0)
    a, b = full.act(o), short.act(o)
    assert b.shape == (1, 2, full.action_dim)
    np.testing.assert_allclose(b, a[:, :2], rtol=1e-5, atol=1e-6)
    for k in range(5):
        short.step(random_observation(short, seed=k))
    assert short.latency()["chunks"] == 1 + 3  # act() once, then step() at ticks 0, 2, 4
    with pytest.raises(ValueError, match="action_steps must be in 1.."):
        PolicyRuntime(enerverse_policy, action_steps=full.horizon + 1)
    with pytest.raises(ValueError, match="must be below action_steps=2"):
        PolicyRuntime(enerverse_policy, action_steps=2, background=True, prefetch_at=2)
    from enerverse.core.config import ConfigError
    from sim.evaluate import EvalConfig

    with pytest.raises(ConfigError, match="action_steps must be >= 1"):
        EvalConfig(task="reach", policy=str(enerverse_policy), action_steps=0).validate()
    with pytest.raises(ConfigError, match="applies to checkpoint policies"):
        EvalConfig(task="reach", policy="expert", action_steps=2).validate()


def test_history_is_bounded_and_keeps_frame_times(enerverse_policy: Path) -> None:
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy, max_history=8)
    rt.reset("reach")
    for k in range(40):
        rt.observe(random_observation(rt, seed=k))
    times = [t for t, _ in rt.history[0]]
    assert len(times) <= 8 and times[0] == 0 and times[-1] == 39 and times == sorted(times)


def test_runtime_reads_memory_on_the_generator_frame_grid_as_training_does(
    enerverse_policy: Path, workdir: Path
) -> None:
    """With a generator of frame stride 2 the runtime picks the memory frames PolicyData trains on (all
    on the decision frame's grid), and their positions reach the generator as whole generator frames."""
    from enerverse.core.store import EpisodeStore
    from policies.data import PolicyData
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy)
    rt.policy.generator.cfg.frame_stride = 2
    store = EpisodeStore.open(workdir / "store")
    data = PolicyData(store, store.indices()[:1], None, 32, rt.policy.cfg.n_memory, 4, memory_stride=2)
    rt.reset("reach")
    for t in range(12):
        rt.observe(random_observation(rt, seed=t))
        picked = [time for time, _ in rt._memory(rt.history[0])]
        assert picked == data.memory(0, t).tolist() and all((t - p) % 2 == 0 for p in picked)
    pos = rt._inputs()["pos"][0, : rt.policy.cfg.n_memory]
    assert torch.equal(pos, pos.round()) and pos[-1] == 0


def test_frames_are_encoded_once_and_only_when_read_as_memory(enerverse_policy: Path) -> None:
    """Observing stores frames; a memory batch encodes the frames it reads (once), and its latents
    equal encoding those frames directly."""
    from enerverse.core.frames import to_model
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy)
    gen = rt.policy.generator
    calls: list[int] = []
    encode = gen.encode
    gen.encode = lambda x: calls.append(x.shape[0]) or encode(x)
    rt.reset("reach")
    observations = [random_observation(rt, seed=t) for t in range(9)]
    for obs in observations:
        rt.observe(obs)
    assert calls == []  # nothing encoded on arrival
    batch = rt._inputs()
    picked = sorted({t for t, _ in rt._memory(rt.history[0])})
    assert calls == [len(picked)]  # one call, each distinct memory frame once
    want = encode(to_model(np.stack([observations[t]["rgb"] for t in picked]))[:, :, None])[:, :, :, 0]
    got = batch["memory"][0].permute(2, 0, 1, 3, 4)  # [m, C, V, h, w]
    times = [t for t, _ in rt._memory(rt.history[0])]
    torch.testing.assert_close(got, want[[picked.index(t) for t in times]], atol=1e-4, rtol=1e-4)
    rt._inputs()
    assert calls == [len(picked)]  # already encoded: no second call
    encoded = [t for t, (item, *_) in rt.history[0] if item.latents is not None]
    assert encoded == picked  # the frames no decision read stay unencoded


def test_a_frame_another_thread_encoded_meanwhile_is_read_not_encoded(enerverse_policy: Path) -> None:
    """Two environments; one memory frame lost its pixels to another thread's encoding between the check
    and the read (the ROS node's diagnostics timer imagines while the control tick decides): its
    latents are used as they are, and nothing fails."""
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy)
    rt.reset(["reach", "reach"])
    for t in range(3):
        rt.observe(random_observation(rt, B=2, seed=t))
    C, V, _, h, w = rt._inputs()["memory"].shape[1:]
    rt.reset(["reach", "reach"])
    for t in range(3):
        rt.observe(random_observation(rt, B=2, seed=t))
    first = rt.history[0][0][1][0]  # env 0, time 0: a memory frame of every decision
    first.latents, first.rgb = torch.full((C, V, h, w), 7.0), None
    second = rt.history[0][1][1][0]
    rt.encoder._encode_pending([first, second])  # ``first`` was still pending when the caller checked
    assert (first.latents == 7.0).all() and second.latents is not None and second.rgb is None
    memory = rt._inputs()["memory"]  # [B, C, V, m, h, w]
    assert (memory[0, :, :, 0] == 7.0).all() and not (memory[1, :, :, 0] == 7.0).all()
