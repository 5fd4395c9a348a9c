"""The generator run's codec stage: train the conv codec (whole, or its decoder alone), or load it (or a
whole generator) from a checkpoint, and check it reconstructs the run's stores."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from enerverse.core.config import ConfigError, config_to_dict, describe_differences
from enerverse.core.device import pick_device
from enerverse.core.store import recorded_rig_version, store_rig_version
from enerverse.core.trainer import LossModule, Trainer
from enerverse.io import save_codec
from enerverse.presets import TRAINING_ONLY, GeneratorConfig
from enerverse.train_data import Source, calibration_images, frame_batches

if TYPE_CHECKING:
    from enerverse.train import TrainGeneratorConfig


def data_meta(sources: list[Source]) -> dict:
    """What a checkpoint records of its training data: camera rig and recording rate."""
    store = sources[0].store
    fps = float(store.episode(sources[0].train[0]).attrs["fps"])
    return {"rig_version": store_rig_version(store), "data_fps": fps}


def note_other_rig(theirs, ours, who: str) -> None:
    """Starting from weights trained on another camera rig is adaptation, not misreading: say so."""
    if ours is not None and theirs != ours:
        print(
            f"[ev-train-generator] {who} was trained on camera rig {theirs}; adapting it to this store's "
            f"rig {ours}",
            file=sys.stderr,
        )


def weight_setting_differences(stored: dict, current: dict) -> str:
    """describe_differences of two generator config dicts (or parts of them, by group), leaving out
    the TRAINING_ONLY settings: they shape training samples and losses, not what the weights mean."""
    stored, current = copy.deepcopy(stored), copy.deepcopy(current)
    for group, key in TRAINING_ONLY:
        stored.get(group, {}).pop(key, None)
        current.get(group, {}).pop(key, None)
    return describe_differences(stored, current)


def load_codec_from(gen, folder: str, gcfg: GeneratorConfig, store_rig: int | None) -> dict:
    """Copy the codec weights (including its calibrated scale) of a generator or codec checkpoint into
    ``gen``; returns the checkpoint's config."""
    from enerverse.core.checkpoint import load_checkpoint

    ck = load_checkpoint(folder)
    note_other_rig(recorded_rig_version(ck.config), store_rig, f"codec_from={folder}")
    stored = {"codec": (ck.config.get("generator") or {}).get("codec") or {}}
    diff = weight_setting_differences(stored, {"codec": config_to_dict(gcfg.codec)})
    if diff:
        raise ConfigError(f"codec_from={folder} has other codec settings (checkpoint -> this run: {diff})")
    prefix = "codec."
    gen.codec.load_state_dict({k[len(prefix) :]: v for k, v in ck.state_dict.items() if k.startswith(prefix)})
    return ck.config


def load_generator_weights(gen, folder: str, gcfg: GeneratorConfig, store_rig: int | None) -> dict:
    """Copy every weight of a generator checkpoint with the same settings into ``gen``; returns the
    checkpoint's config."""
    from enerverse.core.checkpoint import load_checkpoint

    ck = load_checkpoint(folder)
    note_other_rig(recorded_rig_version(ck.config), store_rig, f"init_from={folder}")
    diff = weight_setting_differences(ck.config.get("generator") or {}, config_to_dict(gcfg))
    if diff:
        raise ConfigError(f"init_from={folder} has other generator settings (checkpoint -> this run: {diff})")
    gen.load_state_dict(ck.state_dict)
    return ck.config


def codec_history(steps: int, source: dict | None) -> dict:
    """The training steps a finished codec records: ``codec_steps`` of the whole codec and, after a
    ``codec_decoder_only`` fine-tune of the checkpoint whose config is ``source``, that codec's steps
    (absent when it does not say) and ``decoder_steps`` (one entry per decoder-only run)."""
    if source is None:
        return {"codec_steps": steps}
    kept = {"codec_steps": source["codec_steps"]} if source.get("codec_steps") is not None else {}
    return {**kept, "decoder_steps": [*source.get("decoder_steps", []), steps]}


def train_codec_stage(
    gen,
    cfg: TrainGeneratorConfig,
    sources: list[Source],
    run_dir: Path,
    identity: dict,
    defaults: dict,
    source: dict | None = None,
) -> Trainer:
    """Stage 1: the conv autoencoder on single frames, then its latent scale (see frame_batches).
    With ``codec_decoder_only`` only the decoder of the loaded codec (``source``: its checkpoint's
    config) trains and the scale is kept: the latents do not change."""
    device = pick_device(cfg.device)
    if cfg.codec_decoder_only:
        gen.codec.encoder.requires_grad_(False)
    codec = LossModule(gen.codec, "loss")
    ct = Trainer(codec, cfg.codec, run_dir / "codec", identity, device, name="codec", defaults=defaults)
    ct.resume()
    per_batch = max(1, cfg.codec_batch_size // cfg.generator.num_views)
    R = cfg.generator.resolution
    if ct.step < cfg.codec.steps:
        ct.losses = ct.fit(lambda st: frame_batches(sources, R, per_batch, cfg.seed, st))
        if ct.stopped_by:
            return ct
    if not cfg.codec_decoder_only:
        gen.codec.calibrate(x.to(device) for x in calibration_images(sources, R, per_batch, cfg.seed, 4))
    if ct.rank == 0:  # the finished codec on its own, for codec_from= (a new denoiser on this codec)
        extra = {**codec_history(ct.step, source if cfg.codec_decoder_only else None), **data_meta(sources)}
        save_codec(gen, cfg.generator, run_dir / "codec" / "final", extra)
    return ct


def prepare_codec(gen, cfg, sources, run_dir, identity, defaults, summary) -> str | None:
    """Stage 1 or its replacement (init_from / codec_from); returns the stopping signal, if any."""
    rig = store_rig_version(sources[0].store)
    source = None  # the config of the checkpoint the weights come from
    if cfg.init_from:  # stage 1 skipped (or a codec fine-tune): adapt a trained generator
        source = load_generator_weights(gen, cfg.init_from, cfg.generator, rig)
        summary["init_from"] = cfg.init_from
    elif cfg.codec_from:  # stage 1 skipped: reuse a trained (calibrated) codec
        source = load_codec_from(gen, cfg.codec_from, cfg.generator, rig)
        summary["codec_from"] = cfg.codec_from
    trains_codec = cfg.codec_finetune or cfg.codec_decoder_only or not (cfg.init_from or cfg.codec_from)
    if cfg.generator.codec.kind == "conv" and trains_codec:
        ct = train_codec_stage(gen, cfg, sources, run_dir, identity, defaults, source)
        summary["codec_minutes"] = ct.seconds / 60  # counts against max_minutes
        losses = getattr(ct, "losses", None)
        if losses:
            summary["codec_final_loss"] = float(np.mean(losses[-10:]))
        if ct.stopped_by:  # the checkpoint is written; the same command resumes the codec stage
            summary.update({"stopped_by": ct.stopped_by, "stage": "codec", "steps": ct.step})
            return ct.stopped_by
    summary["codec_psnr"] = check_codec_fit(gen, cfg, sources, trains_codec)
    gen.codec.requires_grad_(False).eval()
    return None


def check_codec_fit(gen, cfg, sources, trained_here: bool) -> float | None:
    """Mean per-image PSNR (dB) of the codec's reconstruction of a batch of this store's training
    (calibration) frames; a reused codec below 25 dB gets a warning (its latents cannot hold these
    scenes, so neither can the denoiser). None for a codec that is not trained here (not conv)."""
    if cfg.generator.codec.kind != "conv":
        return None
    import torch

    from enerverse.codec import psnr

    per_batch = max(1, cfg.codec_batch_size // cfg.generator.num_views)
    device = next(gen.codec.parameters()).device
    x = next(iter(calibration_images(sources, cfg.generator.resolution, per_batch, cfg.seed, 1))).to(device)
    with torch.no_grad():
        db = float(psnr(gen.codec.decode(gen.codec.encode(x)), x).mean())  # x: [N, 3, R, R] in [-1, 1]
    if db < 25.0 and not trained_here:
        source = cfg.init_from or cfg.codec_from
        hint = "codec_finetune=true fine-tunes it here first" if cfg.init_from else "train a codec on it"
        print(
            f"[ev-train-generator] warning: the codec of {source} reconstructs this store's frames "
            f"at {db:.1f} dB (< 25): it was trained on other scenes; {hint}",
            file=sys.stderr,
            flush=True,
        )
    return db
