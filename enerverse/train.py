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

import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from enerverse.core.batch_order import distributed_info
from enerverse.core.config import ConfigError, config_to_dict, describe_differences, parse_cli_with_preset
from enerverse.core.device import pick_device
from enerverse.core.plots import line_plot
from enerverse.core.run import run_training_main
from enerverse.core.seeding import seed_everything
from enerverse.core.store import recorded_rig_version, store_rig_version
from enerverse.core.trainer import LossModule, Trainer, TrainSettings
from enerverse.io import save_codec, save_generator
from enerverse.presets import TRAINING_ONLY, GeneratorConfig, get_preset
from enerverse.samples import write_sample_grid
from enerverse.train_data import Source, calibration_images, frame_batches, generator_batches, open_sources


@dataclass
class TrainGeneratorConfig:
    """Settings of ``ev-train-generator``."""

    task: str = "pick_place"
    """task whose demonstrations are used (store defaults to data/<task>)"""
    store: str | None = None
    """episode store folder (default: data/<task>)"""
    stores: list[str] = field(default_factory=list)
    """several episode stores, every episode of each (multi-task pretraining); replaces store and task"""
    workers: int = 2
    """DataLoader worker processes reading the latent cache in the generator stage (0: this process)"""
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
    episodes: int | None = None
    """train on at most this many episodes per store (the first of its training split; encoding the
    latent cache costs time per episode); None: all"""
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
    """start from every weight of a generator checkpoint (same generator settings): video adaptation of
    a pretrained generator to this store; its codec is kept as it is unless codec_finetune"""
    codec_finetune: bool = False
    """with init_from: first fine-tune the checkpoint's codec on this store for codec.steps steps and
    recalibrate it, then adapt the denoiser (a codec trained on other scenes may not reconstruct these:
    the run warns when it reconstructs them below 25 dB)"""
    codec_decoder_only: bool = False
    """with init_from or codec_from: fine-tune only the codec's decoder for codec.steps steps (the
    encoder and its latent scale stay as they are, so the latents, every denoiser trained on them and
    every latent cache stay valid: a sharper decoder for a finished generator; see export --codec)"""
    codec_only: bool = False
    """end after the codec stage (its finished codec is ``<out>/codec/final``, for ``codec_from=``)"""
    max_minutes: float | None = None
    """stop the generator stage (with a checkpoint) once the run's training time reaches this many
    minutes: the codec stage's and the generator stage's loop time, each counted over resumes (a run
    stopped at 30 of 45 minutes and resumed trains 15 more; encoding the latent cache is not counted)"""

    def validate(self) -> None:
        self.codec.check("codec")
        self.train.check("train")
        if self.sample_every < 0:
            raise ConfigError(f"sample_every must be >= 0 (0: only at the end), got {self.sample_every}")
        if self.batch_size <= 0 or self.codec_batch_size <= 0:
            raise ConfigError("batch sizes must be positive")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.episodes is not None and self.episodes <= 0:
            raise ConfigError(f"episodes must be a positive count or null (all), got {self.episodes}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.codec_finetune and not self.init_from:
            raise ConfigError("codec_finetune=true fine-tunes the codec of init_from=<generator checkpoint>")
        if self.init_from and self.codec_from:
            raise ConfigError(
                "init_from=<generator> already brings its codec; codec_from=<codec> starts a new denoiser "
                "on a codec: set one of them"
            )
        if self.codec_decoder_only and not (self.init_from or self.codec_from):
            raise ConfigError(
                "codec_decoder_only=true fine-tunes the decoder of a trained codec: set codec_from=<codec "
                "checkpoint> or init_from=<generator checkpoint>"
            )
        if self.codec_decoder_only and self.codec_finetune:
            raise ConfigError(
                "codec_finetune=true trains the whole codec, codec_decoder_only=true its decoder: pick one"
            )
        if (self.codec_finetune or self.codec_decoder_only) and self.generator.codec.kind != "conv":
            raise ConfigError(
                "codec_finetune / codec_decoder_only need a trainable codec (generator.codec.kind=conv), got "
                f"{self.generator.codec.kind!r}"
            )

    @property
    def store_path(self) -> Path:
        return Path(self.store) if self.store else Path("data") / self.task

    @property
    def store_paths(self) -> list[Path]:
        """Every training store (``stores``, or the one store of ``task``)."""
        return [Path(p) for p in self.stores] if self.stores else [self.store_path]

    @property
    def task_filter(self) -> str | None:
        """The task whose episodes are used (None: all episodes of every store)."""
        return None if self.stores else self.task


def parse_args(argv: list[str] | None) -> TrainGeneratorConfig:
    """Parse overrides; ``preset=<name>`` picks the defaults that ``generator.*`` overrides refine."""
    return parse_cli_with_preset(TrainGeneratorConfig, argv, "ev-train-generator", "generator", get_preset)


def data_meta(sources: list[Source]) -> dict:
    """What a checkpoint records of its training data: camera rig and recording rate."""
    store = sources[0].store
    fps = float(store.episode(sources[0].train[0]).attrs["fps"])
    return {"rig_version": store_rig_version(store), "data_fps": fps}


def data_identity(sources: list[Source]) -> dict:
    """Per store, a hash of its training episodes: a store that grew (resumed collection) changes its
    split, and a run resumed on it would silently train on other data."""
    import hashlib

    return {str(s.store.path): hashlib.sha1(str(s.train).encode()).hexdigest()[:12] for s in sources}


def run_identity(cfg: TrainGeneratorConfig) -> dict:
    """What a resumed run must share with the original (step counts and time budgets may change)."""
    return {
        "generator": config_to_dict(cfg.generator),
        "task": cfg.task,
        "store": str(cfg.store_path),
        "stores": [str(p) for p in cfg.store_paths] if cfg.stores else [],
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "codec_batch_size": cfg.codec_batch_size,
        "holdout": cfg.holdout,
        "codec_from": cfg.codec_from,
        "init_from": cfg.init_from,
        "codec_finetune": cfg.codec_finetune,
        "codec_decoder_only": cfg.codec_decoder_only,
    }


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


def train(cfg: TrainGeneratorConfig, run_dir: Path) -> dict:
    """Both stages; returns the summary dict."""
    from enerverse.generator import EnerVerseGenerator

    device = pick_device(cfg.device)
    seed_everything(cfg.seed + distributed_info()[0])
    sources = open_sources(
        cfg.store_paths, cfg.task_filter, cfg.holdout, cfg.seed, cfg.generator.resolution, cfg.episodes
    )
    gen = EnerVerseGenerator(cfg.generator).to(device)
    identity = {**run_identity(cfg), "data": data_identity(sources)}
    # a checkpoint written before a setting existed resumes when the run keeps the setting's old value
    defaults = {
        "generator": {**config_to_dict(get_preset(cfg.preset)), "frame_stride": 1},
        "stores": [],
        "data": identity["data"],
        "codec_finetune": False,
        "codec_decoder_only": False,
    }
    t_start = time.perf_counter()
    summary: dict = {
        "task": cfg.task
        if not cfg.stores
        else sorted({s.store.episode(s.train[0]).attrs["task"] for s in sources}),
        "preset": cfg.preset,
        "train_episodes": sum(len(s.train) for s in sources),
        "heldout_episodes": sum(len(s.held) for s in sources),
        "run_dir": str(run_dir),
        "denoiser_params": gen.denoiser.num_parameters(),
        "codec_params": sum(p.numel() for p in gen.codec.parameters()),
    }
    print(
        f"[ev-train-generator] denoiser {summary['denoiser_params'] / 1e6:.2f} M params, codec "
        f"{summary['codec_params'] / 1e6:.2f} M, {summary['train_episodes']} train / "
        f"{summary['heldout_episodes']} held-out episodes in {len(sources)} store(s)",
        file=sys.stderr,
    )
    if prepare_codec(gen, cfg, sources, run_dir, identity, defaults, summary):
        return summary
    if cfg.codec_only:
        summary["codec"] = str(run_dir / "codec" / "final")
        return summary
    params = list(gen.denoiser.parameters())
    gt = Trainer(gen, cfg.train, run_dir / "generator", identity, device, params, "generator", defaults)
    gt.resume()  # before the latents: a resumed run encodes with the codec it trained with
    batches, held = generator_batches(
        sources, gen, cfg.generator, run_dir / "latents", cfg.batch_size, cfg.seed, cfg.workers
    )
    budget = None if cfg.max_minutes is None else 60 * (cfg.max_minutes - summary.get("codec_minutes", 0.0))

    def on_step(tr: Trainer) -> None:
        if cfg.sample_every and tr.step % cfg.sample_every == 0 and tr.rank == 0:
            write_sample_grid(tr.ema or gen, held, run_dir / "samples" / f"step_{tr.step:08d}", seed=cfg.seed)
        if budget is not None and tr.seconds > budget:
            tr.stop()  # checkpoint and end here; resuming continues toward train.steps

    if budget is not None and gt.seconds >= budget:
        gt.stop()  # the time budget is spent: a rerun trains no further step
        if gt.step == 0:
            print(
                f"[ev-train-generator] warning: the codec stage used all of max_minutes={cfg.max_minutes};"
                " the denoiser trains no step (raise max_minutes or lower codec.steps)",
                file=sys.stderr,
            )

    losses = gt.fit(batches, on_step)
    if gt.stopped_by:
        summary["stopped_by"] = gt.stopped_by
    if gt.rank == 0:
        summary.update(finish_run(gt.ema or gen, cfg, sources, run_dir, gt, held, losses))
    summary.update(
        {
            "steps": gt.step,
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "minutes": (time.perf_counter() - t_start) / 60,
            "checkpoint": str(run_dir / "checkpoint"),
        }
    )
    return summary


def finish_run(
    final, cfg, sources: list[Source], run_dir: Path, gt: Trainer, held, losses: list[float]
) -> dict:
    """Rank 0 after the generator stage: the final (EMA) checkpoint with its data's camera rig and
    recording rate, a sample grid (not when a signal asks to end soon) and the loss plot."""
    out: dict = {}
    extra = {"train": config_to_dict(cfg), "step": gt.step, **data_meta(sources)}
    save_generator(final, cfg.generator, run_dir / "checkpoint", extra=extra)
    if not gt.stopped_by:
        out["sample"] = str(write_sample_grid(final, held, run_dir / "samples" / "final", seed=cfg.seed))
    if losses:  # this invocation's steps (a resumed run plots from where it resumed)
        out["loss_plot"] = str(line_plot({"v-loss": losses}, run_dir / "loss.png", title="generator loss"))
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-train-generator``."""
    run_training_main(parse_args(argv), "train_generator", train)


if __name__ == "__main__":
    main()
