"""Latent codecs (enerverse.codec): shapes, overfit, calibration, state_dict, errors, diffusers adapter."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from enerverse.codec import (
    ConvAutoencoder,
    DiffusersKLCodec,
    LatentCodec,
    build_codec,
    psnr,
)
from enerverse.core.config import ConfigError


def coloured_squares(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n images [n, 3, size, size] in [-1, 1]: a flat background with two coloured squares each."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1).expand(n, 3, size, size).clone()
    for i in range(n):
        for _ in range(2):
            side = int(torch.randint(6, 14, (1,), generator=g))
            r, c = torch.randint(0, size - side, (2,), generator=g).tolist()
            x[i, :, r : r + side, c : c + side] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return x


@pytest.mark.parametrize("factor", [4, 8, 16])
def test_conv_autoencoder_shapes(factor: int) -> None:
    codec = ConvAutoencoder(channels=4, latent_channels=3, factor=factor)
    assert isinstance(codec, LatentCodec) and codec.factor == factor
    x = torch.rand(2, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        y = codec.decode(z)
    assert z.shape == (2, 3, 32 // factor, 64 // factor)
    assert y.shape == x.shape
    assert y.min() >= -1.0 and y.max() <= 1.0


def test_inference_in_channels_last_order_matches_training_order() -> None:
    """Without autograd the conv codec runs channels-last (faster on the CPU); it must give the same
    latents and images as the default order it trains in, returned contiguous."""
    codec = ConvAutoencoder(channels=8, latent_channels=4, factor=4)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    orders: list[bool] = []
    for net in (codec.encoder, codec.decoder):
        net.register_forward_pre_hook(
            lambda _, a: orders.append(a[0].is_contiguous(memory_format=torch.channels_last))
        )
    with torch.enable_grad():
        z_ref, y_ref = codec.encode(x), codec.decode(codec.encode(x))
    with torch.no_grad():
        z, y = codec.encode(x), codec.decode(codec.encode(x))
    assert z.is_contiguous() and y.is_contiguous()
    assert orders == [False, False, False, True, True, True]  # with autograd: default; without: channels-last
    torch.testing.assert_close(z, z_ref.detach(), atol=5e-4, rtol=1e-3)  # other conv algorithms: ~1e-4
    torch.testing.assert_close(y, y_ref.detach(), atol=5e-4, rtol=1e-3)


def test_default_is_f8_with_4_channels() -> None:
    codec = build_codec("conv", channels=4)
    with torch.no_grad():
        z = codec.encode(torch.zeros(1, 3, 64, 64))
    assert z.shape == (1, 4, 8, 8)


@pytest.fixture
def one_thread():
    """Tiny convs run as fast on one thread, and leave the other core to parallel work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fit_codec(codec, x, steps: int, lr: float, run_dir: Path) -> list[float]:
    """The project's one training loop (the Trainer, as ev-train-generator's codec stage uses it)."""
    import itertools

    from enerverse.core.trainer import LossModule, Trainer, TrainSettings

    s = TrainSettings(steps=steps, lr=lr, warmup_steps=0, ema_decay=0.0, ckpt_every=10_000, weight_decay=1e-4)
    trainer = Trainer(LossModule(codec, "loss"), s, run_dir, {}, name="codec")
    losses = trainer.fit(lambda state: itertools.repeat(x))
    codec.eval()
    return losses


def test_tiny_autoencoder_overfits_coloured_squares(one_thread: None, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = coloured_squares()
    codec = ConvAutoencoder(channels=8, latent_channels=4, factor=4)
    with torch.no_grad():
        before = psnr(codec.decode(codec.encode(x)), x).mean().item()
    start = time.perf_counter()
    losses = fit_codec(codec, x, steps=150, lr=5e-3, run_dir=tmp_path)
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        after = psnr(codec.decode(codec.encode(x)), x).mean().item()
    assert len(losses) == 150
    assert losses[0] / min(losses[-10:]) > 4.0, (losses[0], losses[-10:])
    assert after > 18.0 and after > before + 6.0, (before, after)
    assert not codec.training
    print(
        f"overfit: loss {losses[0]:.3f} -> {losses[-1]:.3f}, psnr {before:.1f} -> {after:.1f} dB, "
        f"{elapsed:.1f}s"
    )


def test_calibrate_gives_unit_std_and_keeps_reconstruction() -> None:
    torch.manual_seed(0)
    codec = ConvAutoencoder(channels=4, factor=4)
    x = coloured_squares(n=4)
    with torch.no_grad():
        codec.encoder[-1].weight.mul_(7.0)  # make the raw latents far from unit std
        recon_before = codec.decode(codec.encode(x))
    scale = codec.calibrate([x[:2], x[2:]])
    with torch.no_grad():
        z = codec.encode(x)
        recon_after = codec.decode(z)
    assert scale == pytest.approx(codec.scale.item())
    assert z.std().item() == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(recon_after, recon_before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least one batch"):
        codec.calibrate([])


def test_state_dict_round_trip_includes_scale() -> None:
    torch.manual_seed(0)
    a = ConvAutoencoder(channels=4, factor=4)
    a.calibrate([coloured_squares(n=2)])
    sd = a.state_dict()
    assert "scale" in sd and sd["scale"].item() != 1.0
    b = ConvAutoencoder(channels=4, factor=4)
    b.load_state_dict(sd)
    assert b.scale.item() == a.scale.item()
    x = coloured_squares(n=2, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(b.encode(x), a.encode(x))


def test_bad_inputs_raise_clear_errors() -> None:
    codec = ConvAutoencoder(channels=4, factor=8)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        codec.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="divisible by the codec factor 8"):
        codec.encode(torch.zeros(1, 3, 36, 32))
    with pytest.raises(ValueError, match=r"\[N, 4, h, w\]"):
        codec.decode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="power of 2"):
        ConvAutoencoder(factor=6)
    with pytest.raises(ValueError, match="conv, diffusers_kl"):
        build_codec("vqgan")
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_psnr_values() -> None:
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[1] += 0.2  # mse 0.04 -> 10 log10(4 / 0.04) = 20 dB
    p = psnr(x, y)
    assert p.shape == (2,)
    assert p[1].item() == pytest.approx(20.0, abs=1e-4) and p[0].item() > 90


def test_codec_training_rejects_a_non_finite_loss(tmp_path: Path) -> None:
    from enerverse.core.trainer import NonFiniteLossError

    codec = ConvAutoencoder(channels=4, factor=4)
    with pytest.raises(NonFiniteLossError):
        fit_codec(codec, torch.full((1, 3, 8, 8), float("nan")), steps=2, lr=1e-3, run_dir=tmp_path)


def _save_tiny_kl(folder: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        layers_per_block=1,
    )
    vae.save_pretrained(folder)


def test_diffusers_kl_adapter_round_trip_and_frozen(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    _save_tiny_kl(tmp_path / "vae")
    codec = build_codec("diffusers_kl", path=tmp_path / "vae")
    assert isinstance(codec, DiffusersKLCodec)
    assert codec.factor == 2 and codec.latent_channels == 4
    assert codec.scaling_factor == pytest.approx(0.18215)
    x = coloured_squares(n=2)
    with torch.no_grad():
        z = codec.encode(x)
        y = codec.decode(z)
        mean = codec.vae.encode(x).latent_dist.mean
    assert z.shape == (2, 4, 16, 16) and z.dtype == torch.float32
    torch.testing.assert_close(z, mean * codec.scaling_factor)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    # frozen: no trainable parameters, stays in eval mode, cannot be trained
    assert not any(p.requires_grad for p in codec.parameters())
    codec.train()
    assert not codec.vae.training
    assert not hasattr(codec, "loss")  # nothing to train: the Trainer has no loss to call
    # sampling from the posterior differs from the mean but has the same shape
    sampled = DiffusersKLCodec(tmp_path / "vae", sample=True)
    with torch.no_grad():
        zs = sampled.encode(x, generator=torch.Generator().manual_seed(0))
    assert zs.shape == z.shape and not torch.equal(zs, z)


def test_diffusers_kl_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="nowhere"):  # a setting (codec.path): one line, exit 2
        DiffusersKLCodec(missing)


def test_object_weight_emphasises_colourful_pixels() -> None:
    from enerverse.codec import pixel_weights

    x = torch.zeros(1, 3, 8, 8)  # mid-grey image ...
    x[0, 0, 2, 2], x[0, 1, 2, 2] = 1.0, -1.0  # ... with one saturated (magenta-ish) pixel
    torch.testing.assert_close(pixel_weights(x, 0.0), torch.ones(1, 1, 8, 8))
    w = pixel_weights(x, 30.0)
    assert torch.isclose(w.mean(), torch.tensor(1.0)) and w[0, 0, 2, 2] > 10 * w[0, 0, 0, 0]
    codec = ConvAutoencoder(channels=8, latent_channels=4, factor=4, object_weight=30.0)
    with torch.no_grad():
        err = (codec.decode_raw(codec.encode_raw(x)) - x).abs()
        expected = (w * err).mean()
    assert abs(codec.loss(x)[1]["l1"] - float(expected)) < 1e-5  # the loss uses exactly these weights


def test_masks_weight_object_pixels_and_report_their_psnr() -> None:
    from enerverse.codec import pixel_weights

    x = torch.zeros(2, 3, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True  # a 2x2 object in each image
    w = pixel_weights(x, 9.0, masks)
    assert torch.isclose(w.mean(), torch.tensor(1.0))
    torch.testing.assert_close(w[0, 0, 2, 2] / w[0, 0, 0, 0], torch.tensor(10.0))
    codec = ConvAutoencoder(channels=8, latent_channels=4, factor=4, object_weight=9.0)
    _, stats = codec.loss({"images": x, "masks": masks})
    assert "object_psnr" in stats and math.isfinite(stats["object_psnr"])


def test_object_metrics_score_only_the_masked_square() -> None:
    """A synthetic frame with a known 4x4 square: errors outside the mask do not count, inside they do."""
    from enerverse.metrics import masked_psnr, masked_ssim, psnr

    real = torch.zeros(1, 3, 16, 16)
    real[:, :, 6:10, 6:10] = 0.8  # the object
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, 6:10, 6:10] = True
    pred = real.clone()
    pred[:, :, :3] = -0.5  # background damaged, object intact
    assert masked_psnr(pred, real, mask).item() > 90 and psnr(pred, real).item() < 20
    assert masked_ssim(pred, real, mask).item() > 0.9  # the 7x7 window reaches 1-2 px past the rows hit
    erased = real.clone()
    erased[:, :, 6:10, 6:10] = 0.0  # the codec's failure: the object blurred into the table
    expected = 10 * math.log10(4.0 / 0.8**2)  # every object pixel off by 0.8 in every channel
    assert abs(masked_psnr(erased, real, mask).item() - expected) < 1e-4
    assert masked_ssim(erased, real, mask).item() < 0.5
    assert torch.isnan(masked_psnr(real, real, torch.zeros_like(mask))).all()  # no object: NaN, not inf
    with pytest.raises(ValueError, match="mask must be"):
        masked_psnr(real, real, mask[0])


def test_moved_object_mask_keeps_only_objects_that_changed() -> None:
    from enerverse.metrics import moved_object_mask

    now = torch.zeros(1, 3, 8, 8)
    now[:, :, 1:3, 1:3] = 0.8  # a cube at the top left ...
    now[:, :, 5:7, 5:7] = -0.8  # ... and a plate that stays
    future = now.clone()
    future[:, :, 1:3, 1:3] = 0.0
    future[:, :, 1:3, 3:5] = 0.8  # the cube moved right by 2 px
    seg_now = torch.zeros(1, 8, 8, dtype=torch.uint8)
    seg_now[:, 1:3, 1:3], seg_now[:, 5:7, 5:7] = 1, 2
    seg_future = torch.zeros_like(seg_now)
    seg_future[:, 1:3, 3:5], seg_future[:, 5:7, 5:7] = 1, 2
    m = moved_object_mask(seg_future, seg_now, future, now)
    expected = torch.zeros(1, 8, 8, dtype=torch.bool)
    expected[:, 1:3, 1:5] = True  # where the cube was and where it is; not the static plate
    torch.testing.assert_close(m, expected)
