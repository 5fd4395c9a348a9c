"""EnerVerse-A and the baseline: head, feature cache, checkpoints, runtime, training, sim success."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import nan_store, random_observation, run_module, run_torchrun, train_tiny_policy

from policies.config import HeadConfig, get_policy_preset
from policies.head import ActionHead

REPO = Path(__file__).resolve().parents[1]


def _summary(r: subprocess.CompletedProcess) -> dict:
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_head_shapes_and_sampling() -> None:
    cfg = HeadConfig(dim=32, depth=2, heads=4, horizon=8, action_dim=7, train_timesteps=50, sample_steps=4)
    head = ActionHead(cfg)
    cond = torch.randn(3, 5, 32)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, -2:] = True
    x0 = head(torch.randn(3, 8, 7), torch.tensor([0, 10, 49]), cond, pad)
    assert x0.shape == (3, 8, 7)
    loss = head.loss(torch.rand(3, 8, 7) * 2 - 1, cond, pad)
    assert loss.ndim == 0 and torch.isfinite(loss)
    g = torch.Generator().manual_seed(0)
    a = head.sample(cond, pad, generator=g)
    assert a.shape == (3, 8, 7) and a.abs().max() <= 1
    with pytest.raises(ValueError, match=r"expected action chunks \[B, 8, 7\]"):
        head(torch.randn(3, 4, 7), torch.zeros(3, dtype=torch.long), cond, pad)


def test_cached_cross_attention_equals_multihead_attention() -> None:
    """The head's cross-attention on cached keys/values computes what nn.MultiheadAttention does with
    the same weights (so checkpoints keep their meaning), padding included."""
    cfg = HeadConfig(dim=32, depth=2, heads=4, horizon=8, action_dim=7, train_timesteps=50, sample_steps=4)
    torch.manual_seed(0)
    head = ActionHead(cfg).eval()
    for p in head.parameters():  # the adaLN gates start at zero: give every path a say
        torch.nn.init.normal_(p, std=0.2)
    blk = head.blocks[0]
    h, cond = torch.randn(3, 8, 32), torch.randn(3, 5, 32)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, -2:] = True
    ref = blk.cross_attn(h, cond, cond, key_padding_mask=pad, need_weights=False)[0]
    torch.testing.assert_close(blk._cross(h, blk.cross_kv(cond), pad), ref)
    x, t = torch.randn(3, 8, 7), torch.tensor([0, 10, 49])
    torch.testing.assert_close(head(x, t, cond, pad, head.cross_kv(cond)), head(x, t, cond, pad))
    unpadded = head(x, t, cond, torch.zeros_like(pad))
    assert not torch.allclose(head(x, t, cond, pad), unpadded)  # the padding mask matters


def test_random_shift_translates_each_image_with_edge_padding() -> None:
    from policies.layers import random_shift

    torch.manual_seed(0)
    x = torch.arange(40 * 2 * 6 * 6, dtype=torch.float32).reshape(40, 2, 6, 6)
    y = random_shift(x, 2)
    assert y.shape == x.shape
    seen = set()
    for n in range(40):  # each output is a 6x6 crop of its own edge-padded input, offset <= 2 px
        src = torch.nn.functional.pad(x[n : n + 1], (2, 2, 2, 2), mode="replicate")[0]
        hits = [(i, j) for i in range(5) for j in range(5) if torch.equal(src[:, i : i + 6, j : j + 6], y[n])]
        assert hits, f"image {n} is not a shifted crop of its input"
        seen.add(hits[0])
    assert len(seen) > 5  # offsets are drawn per image
    assert torch.equal(random_shift(x, 0), x)


def test_feature_translation_moves_each_map_by_a_bounded_real_offset() -> None:
    from policies.layers import random_translate

    torch.manual_seed(0)
    h = w = 8
    ramp_x = torch.arange(w, dtype=torch.float32).expand(h, w)  # value = column
    x = torch.stack([ramp_x, ramp_x.T], 0)[None].repeat(64, 1, 1, 1)  # [64, 2, 8, 8]: x ramp, y ramp
    y = random_translate(x, 0.5)
    inner = (slice(None), slice(2, -2), slice(2, -2))  # away from the edge-padded border
    dx = (x[:, 0] - y[:, 0])[inner]  # content moved right by dx: the value at column j came from j - dx
    dy = (x[:, 1] - y[:, 1])[inner]
    for d in (dx, dy):
        per_map = d.flatten(1)
        torch.testing.assert_close(per_map, per_map[:, :1].expand_as(per_map))  # one offset per map
        assert per_map.abs().max() <= 0.5 + 1e-5 and per_map[:, 0].std() > 0.1  # bounded, drawn per map
        assert (per_map[:, 0] - per_map[:, 0].round()).abs().max() > 0.05  # fractional, not whole cells
    torch.testing.assert_close(random_translate(x, 0.0), x)


@pytest.fixture(scope="module")
def workdir(policy_workdir: Path) -> Path:
    return policy_workdir


def _train(workdir: Path, out: str, *extra: str) -> dict:
    return train_tiny_policy(workdir, out, *extra)


@pytest.fixture(scope="module")
def enerverse_policy(tiny_enerverse_policy: Path) -> Path:
    return tiny_enerverse_policy


@pytest.mark.integration
def test_a_policy_of_another_camera_rig_is_refused_by_ev_eval(enerverse_policy: Path, tmp_path: Path) -> None:
    """A checkpoint records its data's camera rig; one from before (rig v1) is refused, not misread."""
    import shutil

    from sim.cameras import RIG_VERSION

    config = json.loads((enerverse_policy / "config.json").read_text())
    assert config["meta"]["rig_version"] == RIG_VERSION
    legacy = tmp_path / "legacy"
    shutil.copytree(enerverse_policy, legacy)
    del config["meta"]["rig_version"]  # written before the setting existed
    (legacy / "config.json").write_text(json.dumps(config))
    r = run_module(tmp_path, "sim.evaluate", "task=reach", f"policy={legacy}", "episodes=1", check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "camera rig v2" in r.stderr and "trained on rig v1" in r.stderr
    assert "Traceback" not in r.stderr


def test_edge_padding_repeats_the_last_demonstrated_action() -> None:
    from policies.data import edge_padded

    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(edge_padded(a, 1, 2), a[1:3])
    np.testing.assert_array_equal(edge_padded(a, 2, 4), a[[2, 3, 3, 3]])
    with pytest.raises(IndexError, match="outside the 4 actions"):
        edge_padded(a, 4, 2)


def test_terminal_frame_is_not_a_decision_point(workdir: Path) -> None:
    """The recorder's last frame (synthetic hold action) never becomes a training target: decision
    points stop one frame early and chunks repeat the last demonstrated action."""
    from enerverse.core.store import EpisodeStore
    from policies.data import PolicyData

    store = EpisodeStore.open(workdir / "store")
    eps = list(store.indices())
    data = PolicyData(store, eps, None, 32, 2, 8)
    lengths = [len(a) for a in data.action]
    assert len(data) == sum(n - 1 for n in lengths)
    assert all(c < lengths[k] - 1 for k, c in data.items)
    last = max(range(len(data)), key=lambda i: data.items[i][1] if data.items[i][0] == 0 else -1)
    k, c = data.items[last]
    chunk = data.item(last)["actions"].numpy()
    demonstrated = data.action[k][c]
    assert np.abs(demonstrated[:3]).max() > 0  # the expert was still moving on its last step
    np.testing.assert_array_equal(chunk, np.repeat(demonstrated[None], 8, axis=0))


def test_training_data_with_nan_actions_or_states_is_refused_naming_the_episode(
    workdir: Path, tmp_path: Path
) -> None:
    """A store with NaN (edited, or written by other tools) is one clear error naming the episode and
    frame before any training, not NaN normalisation statistics."""
    from enerverse.core.store import EpisodeStore, StoreFormatError
    from policies.data import PolicyData

    for key in ("action", "state"):
        store = EpisodeStore.open(nan_store(workdir / "store", tmp_path / key, key, episode=1, frame=3))
        e = store.indices()[1]
        expected = rf"episode {e}: {key} has NaN or inf values in 1 of \d+ frames \(first: frame 3\)"
        with pytest.raises(StoreFormatError, match=expected + f"; expected finite {key} values"):
            PolicyData(store, store.indices(), None, 32, 2, 8)


_obs = random_observation


def test_generator_runs_once_per_chunk_not_per_denoising_step(enerverse_policy: Path) -> None:
    from policies.runtime import PolicyRuntime

    rt = PolicyRuntime(enerverse_policy, steps=5)
    calls = {"denoiser": 0, "head": 0}
    den, head = rt.policy.generator.denoiser, rt.policy.head
    den_fwd, head_fwd = den.feature_maps, head.forward
    den.feature_maps = lambda *a, **k: (
        calls.__setitem__("denoiser", calls["denoiser"] + 1),
        den_fwd(*a, **k),
    )[1]
    head.forward = lambda *a, **k: (calls.__setitem__("head", calls["head"] + 1), head_fwd(*a, **k))[1]
    rt.reset("reach the red sphere")
    chunk = rt.act(_obs(rt))
    assert chunk.shape == (1, rt.horizon, 7)
    assert calls == {"denoiser": 1, "head": 5}


def test_checkpoint_round_trip_reproduces_actions(enerverse_policy: Path, tmp_path: Path) -> None:
    from policies.io import load_policy, save_policy
    from policies.runtime import PolicyRuntime

    a = PolicyRuntime(enerverse_policy, seed=3)
    save_policy(a.policy, tmp_path / "copy")
    b = PolicyRuntime(load_policy(tmp_path / "copy"), seed=3)
    for rt in (a, b):
        rt.reset("reach the red sphere")
    for t in range(3):
        o = _obs(a, seed=t)
        np.testing.assert_allclose(a.act(o), b.act(o), rtol=1e-5, atol=1e-5)
    # the float16 export (for shipping) loads back as float32 weights within half precision
    from policies.io import export

    export(enerverse_policy, tmp_path / "half")
    c = load_policy(tmp_path / "half")
    assert next(c.parameters()).dtype == torch.float32
    size = lambda d: sum(f.stat().st_size for f in Path(d).iterdir())  # noqa: E731
    assert size(tmp_path / "half") < 0.6 * size(tmp_path / "copy")
    (tmp_path / "half" / "notes.md").write_text("hand-written card notes\n")
    export(enerverse_policy, tmp_path / "half")  # re-shipping replaces the folder but keeps the notes
    assert (tmp_path / "half" / "notes.md").read_text() == "hand-written card notes\n"


def test_init_from_warm_starts_encoder_and_head_only(enerverse_policy: Path, workdir: Path) -> None:
    import copy

    from policies.io import init_policy_from, load_policy
    from policies.model import DiffusionPolicy

    src = load_policy(enerverse_policy)
    fresh = DiffusionPolicy(copy.deepcopy(src.cfg), src.meta, src.generator)
    fresh.state_std.fill_(7.0)  # this run's statistics must survive the warm start
    names = init_policy_from(fresh, enerverse_policy)
    assert names and not any(n.startswith("generator.") for n in names)
    assert any(n.startswith("head.") for n in names) and any(n.startswith("encoder.") for n in names)
    theirs, mine = src.state_dict(), fresh.state_dict()
    assert all(torch.equal(theirs[n], mine[n]) for n in names)
    assert torch.all(fresh.state_std == 7.0)

    other = copy.deepcopy(src.cfg)
    other.head.dim, other.head.heads = 32, 4
    with pytest.raises(ValueError, match="trained with other policy settings"):
        init_policy_from(DiffusionPolicy(other, src.meta, src.generator), enerverse_policy)

    # through ev-train-policy: the run starts from the checkpoint and records where it came from
    s = _train(
        workdir,
        "pol_ft",
        f"generator={workdir / 'gen' / 'checkpoint'}",
        f"init_from={enerverse_policy}",
        "train.steps=2",
    )
    assert s["steps"] == 2
    cfg = json.loads((Path(s["checkpoint"]) / "config.json").read_text())
    assert cfg["train"]["init_from"] == str(enerverse_policy)


def test_train_policy_needs_a_generator_for_enerverse(workdir: Path) -> None:
    r = run_module(workdir, "policies.train", "task=reach", "preset=tiny", "store=store", check=False)
    assert r.returncode == 2 and "generator=" in r.stderr and "encoder.kind=cnn" in r.stderr
    r = run_module(workdir, "policies.train", "task=reach", "preset=huge", check=False)
    assert r.returncode == 2 and "unknown policy preset" in r.stderr


def test_unknown_keys_and_presets_are_clear_errors() -> None:
    from enerverse.core.config import ConfigError
    from policies.config import get_policy_preset as gp

    with pytest.raises(ConfigError, match="did you mean 'small'"):
        gp("smal")
    cfg = get_policy_preset("tiny")
    cfg.encoder.pool = "max"
    with pytest.raises(ConfigError, match="encoder.pool"):
        cfg.validate()


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["cnn", "enerverse"])
def test_tiny_policy_overfits_demos_and_succeeds_on_their_seeds(workdir: Path, kind: str) -> None:
    extra = (
        ["policy.encoder.kind=cnn", "text_encoder=hashing", "resolution=32"]
        if kind == "cnn"
        else [f"generator={workdir / 'gen' / 'checkpoint'}"]
    )
    s = _train(
        workdir,
        f"overfit_{kind}",
        *extra,
        "train.steps=250",
        "train.lr=1e-3",
        "train.ema_decay=0",
        "train.warmup_steps=10",
    )
    assert s["final_loss"] < 0.05, s
    # the collection seeds: ev-collect's episode i used episode_seed(0, i)
    ev = _summary(
        run_module(
            workdir,
            "sim.evaluate",
            "task=reach",
            f"policy={s['checkpoint']}",
            "episodes=4",
            "num_envs=4",
            "seed=0",
            "videos=1",
            f"out=ev_{kind}",
        )
    )
    assert ev["success_rate"] >= 0.75, ev
    res = json.loads((workdir / f"ev_{kind}" / "results.json").read_text())
    assert res["tasks"][0]["latency"]["chunks"] > 0


@pytest.mark.integration
def test_train_policy_runs_under_torchrun_with_two_cpu_processes(workdir: Path) -> None:
    args = [
        "-m",
        "policies.train",
        "task=reach",
        "preset=tiny",
        "store=store",
        "policy.encoder.kind=cnn",
        "text_encoder=hashing",
        "resolution=32",
        "train.steps=3",
        "batch_size=4",
        "out=ddp",
    ]
    r = run_torchrun(args, workdir, 29531)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # rank 0 only prints
    assert summary["steps"] == 3 and (workdir / "ddp" / "checkpoint" / "model.safetensors").exists()


@pytest.mark.integration
def test_one_language_conditioned_policy_trains_and_evaluates_on_several_tasks(workdir: Path, capsys) -> None:
    run_module(
        workdir, "sim.collect", "task=push", "episodes=2", "resolution=32", "views=[main,anchor_left]",
        "out=store_push", "video_episodes=0",
    )  # fmt: skip
    s = _train(
        workdir, "multitask", "tasks=[reach,push]", f"stores=[{workdir / 'store'},{workdir / 'store_push'}]",
        "episodes=2", "policy.encoder.kind=cnn", "text_encoder=hashing", "resolution=32", "train.steps=2",
    )  # fmt: skip
    assert s["task"] == ["reach", "push"] and s["episodes"] == 4
    meta = json.loads((Path(s["checkpoint"]) / "config.json").read_text())["meta"]
    assert meta["tasks"] == ["reach", "push"] and meta["task"] is None
    ev = run_module(
        workdir, "sim.evaluate", f"policy={s['checkpoint']}", "tasks=[reach,push]", "episodes=1",
        "num_envs=1", "resolution=32", "views=[main,anchor_left]", "videos=0", "out=ev_multitask",
    )  # fmt: skip
    assert set(_summary(ev)["per_task"]) == {"reach", "push"}
    assert "warning" not in ev.stderr
    from sim.evaluate import make_policy

    make_policy(s["checkpoint"], "stack")  # a task it never saw: evaluated, with a warning
    assert "was trained on reach, push, not on stack" in capsys.readouterr().err
    from enerverse.core.config import ConfigError
    from policies.train import TrainPolicyConfig

    cfg = TrainPolicyConfig(tasks=["reach", "push"], stores=["a", "b", "c"])
    cfg.policy.encoder.kind = "cnn"
    with pytest.raises(ConfigError, match="3 stores for 2 tasks"):
        cfg.validate()


@pytest.mark.integration
def test_demo_rolls_out_a_checkpoint_and_writes_the_report(enerverse_policy: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--checkpoint",
         str(enerverse_policy), "--episodes", "2", "--num-envs", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "EV_NO_PROGRESS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    summary = _summary(r)
    assert summary["episodes"] == 2 and 0 <= summary["success_rate"] <= 1
    text = (out / "report.md").read_text()
    assert "| reach |" in text and "95% CI" in text and "success.png" in text and ".mp4" in text
    missing = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--checkpoint", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0 and "make train" in missing.stderr and "Traceback" not in missing.stderr
