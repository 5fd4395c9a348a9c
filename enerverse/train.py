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

from enerverse.codec_stage import data_meta, prepare_codec
from enerverse.core.batch_order import distributed_info
from enerverse.core.config import ConfigError, config_to_dict, parse_cli_with_preset
from enerverse.core.device import pick_device
from enerverse.core.plots import line_plot
from enerverse.core.run import run_training_main
from enerverse.core.seeding import seed_everything
from enerverse.core.trainer import Trainer, TrainSettings
from enerverse.io import save_generator
from enerverse.presets import GeneratorConfig, get_preset
from enerverse.samples import write_sample_grid
from enerverse.train_data import Source, generator_batches, open_sources


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
