"""EnerVerse-G: shapes per mode, camera conditioning, learning, determinism, EoS, exact resume, DDP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from enerverse.core.batch_order import epoch_batches
from enerverse.core.camera import intrinsics_from_fovy, look_at, ray_maps, rotate_about_z
from enerverse.core.config import ConfigError
from enerverse.core.trainer import Trainer, TrainSettings
from enerverse.generator import EnerVerseGenerator
from enerverse.presets import get_preset

REPO = Path(__file__).resolve().parents[1]


def _cams(V: int, T: int) -> np.ndarray:
    main = look_at([1.3, 0.0, 0.75], [0.42, 0.0, 0.08])
    return np.stack([np.stack([rotate_about_z(main, 30.0 * v, [0.5, 0.0, 0.0])] * T) for v in range(V)])


def _batch(g: EnerVerseGenerator, B: int = 2, seed: int = 0) -> dict:
    cfg = g.cfg
    V, R, m, M = cfg.num_views, cfg.resolution, cfg.memory.n_memory, cfg.memory.chunk
    T = m + M
    gen = torch.Generator().manual_seed(seed)
    K = np.stack([intrinsics_from_fovy(50.0, R, R)] * V)
    rays = torch.from_numpy(ray_maps(K, _cams(V, T), R, g.latent_size))
    pos = torch.tensor([list(range(-m + 1, 1)) + list(range(1, M + 1))] * B, dtype=torch.float32)
    return {
        "frames": torch.rand(B, V, T, 3, R, R, generator=gen) * 2 - 1,
        "rays": rays[None].expand(B, *rays.shape).clone(),
        "pos": pos,
        "instruction": ["put the red cube on the plate", "push the cube"][:B],
        "K": K,
    }


@pytest.fixture(scope="module")
def tiny() -> EnerVerseGenerator:
    torch.manual_seed(0)
    return EnerVerseGenerator(get_preset("tiny")).eval()


def test_shapes_of_every_mode(tiny: EnerVerseGenerator) -> None:
    b = _batch(tiny)
    cfg = tiny.cfg
    V, m, M, C, h = (
        cfg.num_views,
        cfg.memory.n_memory,
        cfg.memory.chunk,
        cfg.codec.latent_channels,
        tiny.latent_size,
    )
    z = tiny.encode(b["frames"])
    assert z.shape == (2, C, V, m + M, h, h)
    assert tiny.decode(z).shape == b["frames"].shape
    loss, _ = tiny.training_loss(b)
    assert loss.ndim == 0 and torch.isfinite(loss)
    chunk = tiny.sample_chunk(z[:, :, :, :m], b["rays"], b["pos"], b["instruction"], steps=2, seed=0)
    assert chunk.shape == (2, C, V, M, h, h)
    feats = tiny.extract_features(z[:, :, :, :m], b["rays"], b["pos"], b["instruction"], seed=0)
    assert feats.shape == (2, V, m + M, tiny.denoiser.feature_dim(), h // 2, h // 2)
    # the features-only forward (no up path) gives the full forward's middle-block features
    x = torch.randn(2, C, V, m + M, h, h)
    t = torch.randint(0, 1000, (2, m + M))
    tok, mask = tiny.text_tokens(b["instruction"])
    full = tiny.denoiser(x, b["rays"], t, b["pos"], tok, mask, return_features=True)[1]
    torch.testing.assert_close(tiny.denoiser(x, b["rays"], t, b["pos"], tok, mask, features_only=True), full)
    # "first": the first down level's output at latent resolution, the same as in the full forward
    seen: list[torch.Tensor] = []
    hook = tiny.denoiser.down[0].register_forward_hook(lambda mod, i, out: seen.append(out))
    tiny.denoiser(x, b["rays"], t, b["pos"], tok, mask)
    hook.remove()
    first = tiny.denoiser(x, b["rays"], t, b["pos"], tok, mask, features_only=True, feature_block="first")
    assert first.shape == (2, V, m + M, tiny.denoiser.feature_dim("first"), h, h)
    torch.testing.assert_close(first, seen[0].reshape(first.shape))
    with pytest.raises(ValueError, match="feature_block must be one of"):
        tiny.denoiser(x, b["rays"], t, b["pos"], tok, mask, features_only=True, feature_block="last")
    res = tiny.generate(b["frames"][0, :, :3], b["K"], _cams(V, 1)[:, 0], "push", max_chunks=2, steps=2)
    assert res.frames.shape[:2] == (V, res.latents.shape[2]) and res.chunks in (1, 2)


def test_sparse_view_mode_keeps_observed_views(tiny: EnerVerseGenerator) -> None:
    b = _batch(tiny, B=1)
    m = tiny.cfg.memory.n_memory
    z = tiny.encode(b["frames"])
    observed = z[:, :, :, m:].clone()
    observed[:, :, 1] = float("nan")  # view 1 is missing, view 0 observed
    out = tiny.sample_chunk(
        z[:, :, :, :m], b["rays"], b["pos"], b["instruction"], steps=2, seed=1, observed=observed
    )
    torch.testing.assert_close(out[:, :, 0], z[:, :, 0, m:])
    assert torch.isfinite(out).all() and not torch.allclose(out[:, :, 1], z[:, :, 1, m:])


def test_ray_map_conditions_the_output() -> None:
    torch.manual_seed(0)
    g = EnerVerseGenerator(get_preset("tiny"))
    for p in g.denoiser.conv_out.parameters():  # zero-initialised output: give it weights to see inputs
        torch.nn.init.normal_(p, std=0.1)
    b = _batch(g, B=1)
    m = g.cfg.memory.n_memory
    z = g.encode(b["frames"])
    t = torch.full((1, m + g.cfg.memory.chunk), 500)
    tok, mask = g.text_tokens(b["instruction"])
    v1 = g.denoiser(z, b["rays"], t, b["pos"], tok, mask)
    rays2 = b["rays"].clone()
    rays2[:, 3:] = -rays2[:, 3:]  # other viewing directions
    v2 = g.denoiser(z, rays2, t, b["pos"], tok, mask)
    assert (v1 - v2).abs().mean() > 1e-3


def test_sampling_is_deterministic_with_a_seed(tiny: EnerVerseGenerator) -> None:
    b = _batch(tiny, B=1)
    m = tiny.cfg.memory.n_memory
    mem = tiny.encode(b["frames"])[:, :, :, :m]
    a = tiny.sample_chunk(mem, b["rays"], b["pos"], b["instruction"], steps=3, seed=7)
    c = tiny.sample_chunk(mem, b["rays"], b["pos"], b["instruction"], steps=3, seed=7)
    d = tiny.sample_chunk(mem, b["rays"], b["pos"], b["instruction"], steps=3, seed=8)
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, d)


def test_loss_falls_on_a_tiny_overfit_set() -> None:
    torch.manual_seed(0)
    g = EnerVerseGenerator(get_preset("tiny"))
    g.codec.requires_grad_(False)
    b = _batch(g, B=2)
    opt = torch.optim.AdamW(g.denoiser.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        gen.manual_seed(0)  # the same noise and timesteps each step: a fixed regression target
        loss, _ = g.training_loss(b, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_sparse_view_training_gives_some_views_clean_and_scores_only_the_others() -> None:
    from enerverse.diffusion import sparse_view_mask

    gen = torch.Generator().manual_seed(0)
    assert not sparse_view_mask(64, 3, 0.0, gen).any()
    known = sparse_view_mask(400, 3, 1.0, gen)
    counts = known.sum(dim=1)
    assert counts.min() >= 1 and counts.max() <= 2  # a proper, non-empty subset in every sample
    assert known.float().mean(dim=0).min() > 0.35  # every view is given about as often
    share = sparse_view_mask(2000, 3, 0.25, gen).any(dim=1).float().mean()
    assert 0.2 < share < 0.3

    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg.diffusion.sparse_view_prob = 1.0
    g = EnerVerseGenerator(cfg)
    seen: dict = {}

    def spy(x, rays, t, pos, tok, mask):
        seen.update(x=x, t=t)
        return torch.zeros_like(x)  # v = 0: the loss is the mean squared target of the scored views

    g.denoiser.forward = spy
    b = _batch(g, B=2)
    loss, _ = g.training_loss(b, generator=torch.Generator().manual_seed(1))
    z0 = g.encode(b["frames"])
    given = (seen["t"] == 0).all(dim=2)  # [B, V]: views at t = 0 on every frame
    assert given.any(dim=1).all() and not given.all(dim=1).any()
    for i in range(2):
        for v in range(cfg.num_views):
            if given[i, v]:  # a given view enters exactly clean
                torch.testing.assert_close(seen["x"][i, :, v], z0[i, :, v])
    # the same noise and timesteps, every view scored: the loss differs (the given views are left out)
    cfg.diffusion.sparse_view_prob = 0.0
    full, _ = g.training_loss(b, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and not torch.isclose(loss, full)


def test_motion_weight_emphasises_what_changes_and_keeps_static_positions_at_one() -> None:
    from enerverse.diffusion import motion_weight

    z0 = torch.zeros(2, 4, 3, 6, 5, 5)  # [B, C, V, T, h, w], memory 2 then 4 chunk frames
    z0[0, :, 1, 3:, 2, 2] = 2.0  # sample 0: one position changes in view 1
    assert torch.equal(motion_weight(z0, 2, 0.0), torch.ones(2, 1, 3, 4, 5, 5))
    w = motion_weight(z0, 2, 4.0)
    assert w.shape == (2, 1, 3, 4, 5, 5)
    assert w[0, 0, 1, 1, 2, 2] == 5.0 and w[0, 0, 1, 0, 2, 2] == 1.0  # the change weighs 1 + 4
    assert (w[0] == 1.0).sum() == w[0].numel() - 3 and (w[1] == 1.0).all()  # a static sample: ones

    # in the loss: with v = 0 the loss is the weighted mean of the squared target, so a weight on the
    # moving positions changes it, and 0 gives back the plain loss
    torch.manual_seed(0)
    g = EnerVerseGenerator(get_preset("tiny"))
    g.denoiser.forward = lambda x, *a: torch.zeros_like(x)
    b = _batch(g, B=2)
    plain, _ = g.training_loss(b, generator=torch.Generator().manual_seed(1))
    g.cfg.diffusion.motion_weight = 8.0
    weighted, _ = g.training_loss(b, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(weighted) and not torch.isclose(plain, weighted)


def test_eos_stops_generation_where_the_eos_frame_appears(tiny: EnerVerseGenerator, monkeypatch) -> None:
    cfg = tiny.cfg
    V, M, C, h = cfg.num_views, cfg.memory.chunk, cfg.codec.latent_channels, tiny.latent_size
    eos = tiny.eos_latent()
    away = eos + 3.0
    calls = {"n": 0}

    def fake_chunk(memory, rays, pos, instructions, steps=None, seed=None, observed=None, guidance=None):
        calls["n"] += 1
        z = away[:, None, None].expand(C, V, M, h, h).clone()
        if calls["n"] == 3:
            z[:, :, 2:] = eos[:, None, None]  # EoS appears at frame 2 of the third chunk
        return z[None]

    monkeypatch.setattr(tiny, "sample_chunk", fake_chunk)
    b = _batch(tiny, B=1)
    res = tiny.generate(b["frames"][0, :, :2], b["K"], _cams(V, 1)[:, 0], "x", max_chunks=10)
    assert calls["n"] == 3 and res.chunks == 3
    assert res.eos_frame == 2 * M + 2 and res.frames.shape[1] == 2 * M + 2


def test_inference_memory_is_the_samplers_rule_on_the_history() -> None:
    """The generator's memory at inference is :func:`memory_indices` with the newest frame as ``c``."""
    from enerverse.core.store.sampler import memory_indices

    assert memory_indices(1, 4, "sparse")[0].tolist() == [0, 0, 0, 1]
    idx = memory_indices(99, 4, "sparse")[0].tolist()
    assert len(idx) == 4 and idx[-1] == 99 and idx[0] == 0 and idx == sorted(idx)
    assert memory_indices(99, 4, "consecutive")[0].tolist() == [96, 97, 98, 99]
    assert memory_indices(1, 4, "consecutive")[0].tolist() == [0, 0, 0, 1]


def test_an_unknown_memory_mode_is_refused(tiny: EnerVerseGenerator) -> None:
    b, V = _batch(tiny, B=1), tiny.cfg.num_views
    with pytest.raises(ValueError, match="'sparse' or 'consecutive'"):
        tiny.generate(b["frames"][0, :, :2], b["K"], _cams(V, 1)[:, 0], "x", memory_mode="latest")


def test_bad_inputs_get_clear_errors(tiny: EnerVerseGenerator) -> None:
    b = _batch(tiny, B=1)
    with pytest.raises(ValueError, match="expected frames"):
        tiny.check_frames(b["frames"][:, :1])  # one view instead of two
    with pytest.raises(ValueError, match="ray map must have shape"):
        tiny.denoiser(
            tiny.encode(b["frames"]),
            b["rays"][:, :, :, :2],
            torch.zeros(1, 6),
            b["pos"],
            *tiny.text_tokens(["x"]),
        )
    with pytest.raises(ConfigError, match="unknown generator preset"):
        get_preset("tinny")
    cfg = get_preset("tiny")
    cfg.resolution = 36
    with pytest.raises(ConfigError, match="divisible"):
        EnerVerseGenerator(cfg)


def _trainer(run_dir: Path, steps: int, schedule: str = "constant") -> tuple[Trainer, EnerVerseGenerator]:
    torch.manual_seed(0)
    g = EnerVerseGenerator(get_preset("tiny"))
    s = TrainSettings(
        steps=steps, lr=1e-3, warmup_steps=2, schedule=schedule, ckpt_every=2, log_every=100, ema_decay=0.9
    )
    tr = Trainer(g, s, run_dir, {"test": 1}, "cpu", params=list(g.denoiser.parameters()), name="generator")
    return tr, g


def _batches(g: EnerVerseGenerator):
    items = [_batch(g, B=1, seed=i) for i in range(6)]

    def get(idx: list[int], epoch: int) -> dict:
        return {
            "frames": torch.cat([items[i]["frames"] for i in idx]),
            "rays": torch.cat([items[i]["rays"] for i in idx]),
            "pos": torch.cat([items[i]["pos"] for i in idx]),
            "instruction": [items[i]["instruction"][0] for i in idx],
        }

    return lambda st: epoch_batches(len(items), 2, 0, st, get)


def test_resume_gives_the_same_next_steps_as_an_uninterrupted_run(tmp_path: Path) -> None:
    full, g_full = _trainer(tmp_path / "full", 4)
    losses_full = full.fit(_batches(g_full))
    first, g1 = _trainer(tmp_path / "split", 2)
    first.fit(_batches(g1))
    second, g2 = _trainer(tmp_path / "split", 4)
    assert second.resume() and second.step == 2
    losses_rest = second.fit(_batches(g2))
    np.testing.assert_allclose(losses_rest, losses_full[2:], rtol=1e-5)
    for (k, a), b in zip(g_full.state_dict().items(), g2.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_stop_ends_fit_with_a_checkpoint_and_keeps_the_schedule(tmp_path: Path) -> None:
    full, g_full = _trainer(tmp_path / "full", 6, "cosine")
    losses_full = full.fit(_batches(g_full))
    first, g1 = _trainer(tmp_path / "split", 6, "cosine")
    first.fit(_batches(g1), lambda tr: tr.stop() if tr.step == 3 else None)  # 3: between checkpoints
    assert first.step == 3 and first.s.steps == 6  # the settings (schedule, recorded config) keep 6
    assert (tmp_path / "split" / "step_00000003").is_dir()
    second, g2 = _trainer(tmp_path / "split", 6, "cosine")
    assert second.resume() and second.step == 3
    np.testing.assert_allclose(second.fit(_batches(g2)), losses_full[3:], rtol=1e-5)
    for (k, a), b in zip(g_full.state_dict().items(), g2.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_config_differences_name_nested_paths_and_accept_settings_added_later() -> None:
    from enerverse.core.config import config_differences, describe_differences

    stored = {"policy": {"encoder": {"shift": 4}, "n_memory": 2}, "task": "reach"}  # before feature_shift
    now = {"policy": {"encoder": {"shift": 4, "feature_shift": 0.0}, "n_memory": 2}, "task": "reach"}
    defaults = {"policy": {"encoder": {"shift": 0, "feature_shift": 0.0}, "n_memory": 4}}
    assert config_differences(stored, now, defaults) == []  # the new setting keeps its default
    assert config_differences(stored, now) == ["policy.encoder.feature_shift"]  # no defaults given
    now["policy"]["encoder"]["feature_shift"], now["task"] = 4.0, "pick_place"
    assert config_differences(stored, now, defaults) == ["policy.encoder.feature_shift", "task"]
    assert describe_differences(stored, now, defaults) == (
        "policy.encoder.feature_shift: 0.0 -> 4.0; task: 'reach' -> 'pick_place'"
    )


def test_resume_refuses_a_checkpoint_from_another_config(tmp_path: Path) -> None:
    tr, g = _trainer(tmp_path, 2)
    tr.fit(_batches(g))
    other = Trainer(g, tr.s, tmp_path, {"test": 2}, "cpu", name="generator")
    with pytest.raises(ValueError, match="another config"):
        other.resume()


@pytest.mark.integration
def test_ddp_with_two_cpu_processes_runs_a_step(tmp_path: Path) -> None:
    script = tmp_path / "ddp_step.py"
    script.write_text(
        "import torch, sys\n"
        "sys.path.insert(0, {!r})\n"
        "from tests.test_generator import _trainer, _batches\n"
        "from pathlib import Path\n"
        "tr, g = _trainer(Path({!r}), 1)\n"
        "assert tr.distributed and tr.world == 2\n"
        "tr.fit(_batches(g))\n"
        "w = next(g.denoiser.parameters()).detach().clone()\n"
        "torch.distributed.all_reduce(w)\n"
        "assert torch.allclose(w / 2, next(g.denoiser.parameters()))  # replicas stay in sync\n"
        "print('rank', tr.rank, 'ok')\n".format(str(REPO), str(tmp_path / "run"))
    )
    from conftest import run_torchrun  # here, not at the top: the ranks import this module

    r = run_torchrun([str(script)], tmp_path, 29517)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("ok") == 2
