"""The shipped pretrained generator: it loads, generates a chunk, and its codec did not get worse."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "generator_pretrained"
WITH_QUALITY = sorted(p.parent for p in (REPO / "checkpoints").glob("generator_*/quality.json"))
pytestmark = pytest.mark.integration
needs_generator = pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="no shipped generator")


@pytest.fixture(scope="module")
def model():
    from enerverse.io import load_generator

    return load_generator(SHIPPED)


@needs_generator
def test_shipped_generator_is_small_float16_and_of_the_current_rig(model) -> None:
    from sim.cameras import DEFAULT_RESOLUTION, RIG_VERSION

    config = json.loads((SHIPPED / "config.json").read_text())
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size <= 40 * 2**20 and config["weights_dtype"] == "float16"
    assert model.data_meta["rig_version"] == RIG_VERSION and model.cfg.resolution == DEFAULT_RESOLUTION
    assert (SHIPPED / "README.md").is_file()


@pytest.mark.skipif(not WITH_QUALITY, reason="no shipped codec")
@pytest.mark.parametrize("folder", WITH_QUALITY, ids=lambda p: p.name)
def test_shipped_codec_keeps_its_recorded_quality(folder: Path) -> None:
    """CI fails when the shipped codec's weights got worse than the model card says."""
    sys.path.insert(0, str(REPO / "scripts"))
    from generator_card import codec_quality

    from enerverse.io import load_codec
    from sim.cameras import DEFAULT_RESOLUTION, RIG_VERSION

    codec, cfg = load_codec(folder)
    assert codec.data_meta["rig_version"] == RIG_VERSION and cfg.resolution == DEFAULT_RESOLUTION
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 40 * 2**20
    recorded = json.loads((folder / "quality.json").read_text())
    now = codec_quality(codec, cfg.resolution)
    assert now["codec_psnr"] >= recorded["codec_psnr"] - 0.2, (now, recorded)
    assert now["codec_object_psnr"] >= recorded["codec_object_psnr"] - 0.2, (now, recorded)


@needs_generator
def test_shipped_generator_generates_one_chunk_from_the_simulator(model) -> None:
    from sim.env import EnerVerseEnv

    env = EnerVerseEnv("pick_place", width=model.cfg.resolution, height=model.cfg.resolution)
    try:
        obs, info = env.reset(seed=1000)
        frames = [obs["rgb"]]
        for _ in range(2 * model.cfg.frame_stride):
            obs, *_ = env.step(np.array([0.0, 0.0, -0.02, 0, 0, 0, 1.0], np.float32))
            frames.append(obs["rgb"])
    finally:
        env.close()
    ctx = torch.from_numpy(np.stack(frames[:: model.cfg.frame_stride])).permute(1, 0, 4, 2, 3).float()
    ctx = ctx / 127.5 - 1.0  # [V, T, 3, R, R] on the generator's frame grid
    res = model.generate(
        ctx, obs["K"], obs["T_cam_world"], info["instruction"], max_chunks=1, steps=2, seed=0
    )
    M, V, R = model.cfg.memory.chunk, model.cfg.num_views, model.cfg.resolution
    assert res.frames.shape == (V, M, 3, R, R)
    assert torch.isfinite(res.frames).all() and res.frames.abs().max() <= 1.0
