"""Generator evaluation: metrics, multi-view consistency, train -> evaluate end to end (tiny preset)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from enerverse.metrics import depth_warp_error, psnr, ssim

REPO = Path(__file__).resolve().parents[1]


def test_ssim_and_psnr_behave() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert (ssim(x, noisy) < 0.9).all() and (psnr(x, noisy) < psnr(x, (x + 0.05).clamp(-1, 1))).all()
    with pytest.raises(ValueError, match="equal shapes"):
        ssim(x, x[:, :, :16])


@pytest.fixture(scope="module")
def two_view_scene() -> dict:
    import sim  # noqa: F401  (GL defaults)
    from sim.env import EnerVerseEnv

    env = EnerVerseEnv("pick_place", views=["main", "anchor_left"], width=48, height=48, depth=True)
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    frames = torch.from_numpy(obs["rgb"]).permute(0, 3, 1, 2).float()[:, None] / 127.5 - 1  # [V,1,3,H,W]
    depth = torch.from_numpy(obs["depth"])[None]  # [1, V, H, W]
    return {"frames": frames, "depth": depth, "K": obs["K"], "T": obs["T_cam_world"]}


@pytest.mark.integration
def test_depth_warp_error_is_low_for_consistent_views(two_view_scene: dict) -> None:
    s = two_view_scene
    real = depth_warp_error(s["frames"], s["depth"], s["K"], s["T"])
    swapped = s["frames"].flip(-1)  # view content no longer matches the geometry
    wrong = depth_warp_error(swapped, s["depth"], s["K"], s["T"])
    assert np.isfinite(real) and real < 0.15
    assert wrong > 1.5 * real


@pytest.mark.integration
def test_train_then_evaluate_end_to_end(tmp_path: Path) -> None:
    def run(*args: str) -> dict:
        env = {**os.environ, "EV_NO_PROGRESS": "1"}
        r = subprocess.run(
            [sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
        )
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    store = tmp_path / "store"
    run(
        "sim.collect",
        "task=reach",
        "episodes=3",
        "resolution=32",
        "views=[main,anchor_left]",
        "depth=true",
        f"out={store}",
        "video_episodes=0",
    )
    train_args = [
        "enerverse.train",
        "task=reach",
        "preset=tiny",
        f"store={store}",
        "codec.steps=4",
        "train.steps=3",
        "sample_every=0",
        "out=run",
    ]
    summary = run(*train_args)
    assert summary["steps"] == 3 and (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()
    ev = run(
        "enerverse.evaluate",
        "checkpoint=run/checkpoint",
        f"store={store}",
        "episodes=1",
        "chunks=2",
        "steps=2",
        "starts_per_episode=1",
        "out=ev",
    )
    for key in ("psnr", "baseline_psnr", "ssim", "consistency", "psnr_per_chunk"):
        assert key in ev
    assert len(ev["psnr_per_chunk"]) == 2 and ev["consistency"] is not None
    assert len(ev["consecutive_memory_psnr_per_chunk"]) == 2  # the same model with consecutive memory
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["model"]["per_chunk"][0]["chunk"] == 1 and "psnr_per_view" in res["model"]["per_chunk"][0]
    # resuming the finished run does nothing more and keeps the step count
    again = run(*train_args)
    assert again["steps"] == 3


def test_eval_generator_requires_checkpoint_and_store(tmp_path: Path, monkeypatch, capsys) -> None:
    from enerverse import evaluate

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["episodes=1"])
    assert exc.value.code == 2 and "checkpoint=" in capsys.readouterr().err


def test_latent_cache_matches_encoding_frames_and_marks_eos(tmp_path: Path) -> None:
    from enerverse.core.store import EpisodeStore
    from enerverse.data import GeneratorWindows, collate, encode_episodes
    from enerverse.generator import EnerVerseGenerator
    from enerverse.presets import get_preset

    rng = np.random.default_rng(0)
    store = EpisodeStore.create(tmp_path / "s")
    K = np.stack([[[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]] * 2).astype(np.float32)
    T = np.broadcast_to(np.eye(4, dtype=np.float32), (2, 4, 4)).copy()
    T[:, 2, 3] = 1.0
    with store.write_episode(
        0,
        task="reach",
        instruction="reach the red sphere",
        seed=0,
        view_names=["main", "anchor_left"],
        view_kinds=["real", "anchor"],
        fps=20.0,
        K=K,
    ) as w:
        for _ in range(7):
            w.add_frame(
                rgb=rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
                state=np.zeros(3, np.float32),
                action=np.zeros(7, np.float32),
                T_cam_world=T,
            )
    torch.manual_seed(0)
    g = EnerVerseGenerator(get_preset("tiny")).eval()
    images = GeneratorWindows(store, g.cfg, train=False)
    cached = GeneratorWindows(store, g.cfg, train=False)
    cached.use_latents(encode_episodes(g, store, [0]), g.eos_latent())
    last = len(images) - 1  # the window nearest the end: its chunk runs past the episode
    a, b = collate([images[last]]), collate([cached[last]])
    with torch.no_grad():
        z = g.encode(a["frames"])
    torch.testing.assert_close(b["latents"], z, atol=2e-2, rtol=2e-2)  # float16 cache
    torch.testing.assert_close(b["rays"], a["rays"])
    assert torch.allclose(z[0, :, :, -1], g.eos_latent()[:, None], atol=1e-3)  # EoS frame past the end
    # (1e-3: the CPU inference path runs channels-last, whose convs differ from one batch size to
    # another by ~1e-4; the cache stores float16 anyway)
