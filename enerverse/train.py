"""``ev-train-generator``: train EnerVerse-G on an episode store (codec stage, then generator stage).

    ev-collect task=pick_place episodes=200 out=data/pick_place          # demonstrations first
    ev-train-generator task=pick_place preset=small max_minutes=45        # store defaults to data/<task>
    ev-train-generator out=outputs/train_generator/<run>                  # resume a run exactly
    torchrun --nproc_per_node 2 -m enerverse.train task=pick_place preset=tiny   # DDP (gloo on CPU)

Stage 1 trains the conv autoencoder on single frames (skipped for a pretrained diffusers codec) and
calibrates its latent scale; stage 2 trains the denoiser with the codec frozen. Both stages write
exact-resume checkpoints under ``<out>/<stage>/step_*``; ``<out>/checkpoint`` holds the final EMA
generator for ``ev-eval-generator``. Sample grids (real vs generated, every view) go to ``<out>/samples``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from enerverse.core.config import ConfigError, config_to_dict, parse_cli_with_preset
from enerverse.core.device import pick_device
from enerverse.core.plots import line_plot
from enerverse.core.seeding import seed_everything
from enerverse.core.store import EpisodeStore, check_rig_version, recorded_rig_version, store_rig_version
from enerverse.core.trainer import (
    LossModule,
    Trainer,
    TrainSettings,
    distributed_info,
    epoch_batches,
    run_training_main,
)
from enerverse.data import GeneratorWindows, collate, encode_episodes
from enerverse.io import save_generator, split_episodes
from enerverse.presets import GeneratorConfig, get_preset
from enerverse.samples import write_sample_grid


@dataclass
class TrainGeneratorConfig:
    """Settings of ``ev-train-generator``."""

    task: str = "pick_place"
    """task whose demonstrations are used (store defaults to data/<task>)"""
    store: str | None = None
    """episode store folder (default: data/<task>)"""
    preset: str = "tiny"
    """model size: tiny | small | base | paper"""
    generator: GeneratorConfig = field(default_factory=lambda: get_preset("tiny"))
    out: str | None = None
    """run folder (default outputs/train_generator/<timestamp>); an existing run is resumed"""
    seed: int = 0
    device: str = "auto"
    batch_size: int = 4
    codec_batch_size: int = 32
    holdout: float = 0.1
    """fraction of episodes held out for evaluation (never trained on)"""
    codec: TrainSettings = field(
        default_factory=lambda: TrainSettings(
            steps=300, lr=1e-3, warmup_steps=20, ema_decay=0.0, ckpt_every=100
        )
    )
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(
            steps=1000, lr=2e-4, warmup_steps=50, grad_clip=0.5, ckpt_every=100
        )
    )
    sample_every: int = 500
    """write a real-vs-generated sample grid every N generator steps (0: only at the end)"""
    codec_from: str | None = None
    """reuse the codec of a generator checkpoint folder (same codec settings) and skip the codec stage"""
    init_from: str | None = None
    """start from every weight of a generator checkpoint (same generator settings) and skip the codec
    stage: video adaptation of a pretrained generator to this store"""
    max_minutes: float | None = None
    """stop the generator stage (with a checkpoint) once this much wall time has passed since the start
    of the run (codec stage included)"""

    def validate(self) -> None:
        if self.batch_size <= 0 or self.codec_batch_size <= 0:
            raise ConfigError("batch sizes must be positive")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")

    @property
    def store_path(self) -> Path:
        return Path(self.store) if self.store else Path("data") / self.task


def parse_args(argv: list[str] | None) -> TrainGeneratorConfig:
    """Parse overrides; ``preset=<name>`` picks the defaults that ``generator.*`` overrides refine."""
    return parse_cli_with_preset(TrainGeneratorConfig, argv, "ev-train-generator", "generator", get_preset)


def open_store(cfg: TrainGeneratorConfig) -> EpisodeStore:
    """The training store, or a clear error that says how to create it."""
    path = cfg.store_path
    if not path.exists():
        raise ConfigError(
            f"no episode store at {path}; create one with: ev-collect task={cfg.task} "
            f"episodes=200 out={path} resolution={cfg.generator.resolution}"
        )
    return EpisodeStore.open(path)


def frame_batches(store: EpisodeStore, episodes: list[int], cfg: TrainGeneratorConfig, data_state: dict):
    """Single frames for the codec stage (all views), resumable: images [N, 3, R, R] in [-1, 1], or,
    when every episode recorded segmentation, {"images", "masks" [N, R, R] bool (object pixels)}."""
    import cv2

    index = [(e, t) for e in episodes for t in range(store.episode(e).length)]
    R = cfg.generator.resolution
    with_masks = all(store.episode(e).has("seg") for e in episodes)

    def resized(img, interpolation):
        return img if img.shape[0] == R else cv2.resize(img, (R, R), interpolation=interpolation)

    def get(items: list[int], epoch: int):
        imgs, masks = [], []
        for i in items:
            e, t = index[i]
            ep = store.episode(e)
            imgs += [resized(img, cv2.INTER_AREA) for img in ep.load("rgb", t)]  # [V, H, W, 3]
            if with_masks:
                masks += [resized(m, cv2.INTER_NEAREST) > 0 for m in ep.load("seg", t)]  # [V, H, W]
        images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return {"images": images, "masks": torch.from_numpy(np.stack(masks))} if with_masks else images

    per_frame = max(1, cfg.codec_batch_size // cfg.generator.num_views)
    return epoch_batches(len(index), per_frame, cfg.seed, data_state, get)


def images_of(batch: torch.Tensor | dict) -> torch.Tensor:
    """The images [N, 3, R, R] of a codec batch (with or without masks)."""
    return batch["images"] if isinstance(batch, dict) else batch


def run_identity(cfg: TrainGeneratorConfig) -> dict:
    """What a resumed run must share with the original (step counts and time budgets may change)."""
    return {
        "generator": config_to_dict(cfg.generator),
        "task": cfg.task,
        "store": str(cfg.store_path),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "codec_batch_size": cfg.codec_batch_size,
        "holdout": cfg.holdout,
        "codec_from": cfg.codec_from,
        "init_from": cfg.init_from,
    }


def load_codec_from(gen, folder: str, gcfg: GeneratorConfig, store_rig: int | None) -> None:
    """Copy the codec weights (including its calibrated scale) of a generator checkpoint into ``gen``."""
    from enerverse.core.checkpoint import load_checkpoint

    ck = load_checkpoint(folder)
    check_rig_version(recorded_rig_version(ck.config), store_rig, f"codec_from={folder}", "the store")
    theirs = ck.config.get("generator", {}).get("codec")
    ours = config_to_dict(gcfg.codec)
    if theirs != ours:
        raise ConfigError(f"codec_from={folder} has codec settings {theirs}, this run uses {ours}")
    prefix = "codec."
    gen.codec.load_state_dict({k[len(prefix) :]: v for k, v in ck.state_dict.items() if k.startswith(prefix)})


def load_generator_weights(gen, folder: str, gcfg: GeneratorConfig, store_rig: int | None) -> None:
    """Copy every weight of a generator checkpoint with the same settings into ``gen``."""
    from enerverse.core.checkpoint import load_checkpoint

    ck = load_checkpoint(folder)
    check_rig_version(recorded_rig_version(ck.config), store_rig, f"init_from={folder}", "the store")
    theirs, ours = ck.config.get("generator"), config_to_dict(gcfg)
    if theirs != ours:
        diff = sorted(k for k in set(theirs or {}) | set(ours) if (theirs or {}).get(k) != ours.get(k))
        raise ConfigError(f"init_from={folder} has other generator settings (differing: {diff})")
    gen.load_state_dict(ck.state_dict)


def train(cfg: TrainGeneratorConfig, run_dir: Path) -> dict:
    """Both stages; returns the summary dict."""
    from enerverse.generator import EnerVerseGenerator

    device = pick_device(cfg.device)
    seed_everything(cfg.seed + distributed_info()[0])
    store = open_store(cfg)
    train_eps, held_eps = split_episodes(store, cfg.holdout, cfg.seed, task=cfg.task)
    gen = EnerVerseGenerator(cfg.generator).to(device)
    full_cfg = config_to_dict(cfg)
    identity = run_identity(cfg)
    defaults = {"generator": config_to_dict(get_preset(cfg.preset))}  # for settings added later
    t_start = time.perf_counter()
    summary: dict = {
        "task": cfg.task,
        "preset": cfg.preset,
        "train_episodes": len(train_eps),
        "heldout_episodes": len(held_eps),
        "run_dir": str(run_dir),
        "denoiser_params": gen.denoiser.num_parameters(),
        "codec_params": sum(p.numel() for p in gen.codec.parameters()),
    }
    print(
        f"[ev-train-generator] denoiser {summary['denoiser_params'] / 1e6:.2f} M params, codec "
        f"{summary['codec_params'] / 1e6:.2f} M, {len(train_eps)} train / {len(held_eps)} held-out episodes",
        file=sys.stderr,
    )

    if cfg.init_from:  # --- stage 1 skipped: adapt a trained generator
        load_generator_weights(gen, cfg.init_from, cfg.generator, store_rig_version(store))
        summary["init_from"] = cfg.init_from
    elif cfg.codec_from:  # --- stage 1 skipped: reuse a trained (calibrated) codec
        load_codec_from(gen, cfg.codec_from, cfg.generator, store_rig_version(store))
        summary["codec_from"] = cfg.codec_from
    elif cfg.generator.codec.kind == "conv" and cfg.codec.steps > 0:  # --- stage 1: codec
        ct = Trainer(
            LossModule(gen.codec, "loss"),
            cfg.codec,
            run_dir / "codec",
            identity,
            device,
            name="codec",
            defaults=defaults,
        )
        ct.resume()
        if ct.step < cfg.codec.steps:
            losses = ct.fit(lambda st: frame_batches(store, train_eps, cfg, st))
            summary["codec_final_loss"] = float(np.mean(losses[-10:])) if losses else None
        calib = frame_batches(store, train_eps, cfg, {"epoch": 10_000, "index": 0})
        gen.codec.calibrate(images_of(next(calib)).to(device) for _ in range(4))
    gen.codec.requires_grad_(False).eval()

    # --- stage 2: generator
    data = GeneratorWindows(store, cfg.generator, train=True, seed=cfg.seed, episodes=train_eps)
    data.use_latents(encode_episodes(gen, store, data.episodes()), gen.eos_latent())
    held = GeneratorWindows(store, cfg.generator, train=False, seed=cfg.seed, episodes=held_eps or train_eps)

    def get(items: list[int], epoch: int) -> dict:
        data.set_epoch(epoch)
        return collate([data[i] for i in items])

    deadline = None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes

    def on_step(tr: Trainer) -> None:
        if cfg.sample_every and tr.step % cfg.sample_every == 0 and tr.rank == 0:
            write_sample_grid(tr.ema or gen, held, run_dir / "samples" / f"step_{tr.step:08d}", seed=cfg.seed)
        if deadline is not None and time.perf_counter() > deadline:
            tr.stop()  # checkpoint and end here; resuming continues toward train.steps

    gt = Trainer(
        gen,
        cfg.train,
        run_dir / "generator",
        identity,
        device,
        params=list(gen.denoiser.parameters()),
        name="generator",
        defaults=defaults,
    )
    gt.resume()
    losses = gt.fit(lambda st: epoch_batches(len(data), cfg.batch_size, cfg.seed, st, get), on_step)
    final = gt.ema or gen
    if gt.rank == 0:
        save_generator(
            final,
            cfg.generator,
            run_dir / "checkpoint",
            extra={"train": full_cfg, "step": gt.step, "rig_version": store_rig_version(store)},
        )
        summary["sample"] = str(write_sample_grid(final, held, run_dir / "samples" / "final", seed=cfg.seed))
        if losses:  # this invocation's steps (a resumed run plots from where it resumed)
            summary["loss_plot"] = str(
                line_plot({"v-loss": losses}, run_dir / "loss.png", title="generator loss")
            )
    summary.update(
        {
            "steps": gt.step,
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "minutes": (time.perf_counter() - t_start) / 60,
            "checkpoint": str(run_dir / "checkpoint"),
        }
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-train-generator``."""
    run_training_main(parse_args(argv), "train_generator", train)


if __name__ == "__main__":
    main()
