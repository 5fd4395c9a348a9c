"""Stage 1 of ``ev-train-policy``: video adaptation of the generator on the task's episodes, and the
policy stage's reuse of the latents it encoded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from policies.data import PolicyData

if TYPE_CHECKING:
    from policies.train import TrainPolicyConfig


def adapt_generator(cfg: TrainPolicyConfig, run_dir: Path) -> str:
    """Continue training ``cfg.generator`` on the run's stores; returns the adapted checkpoint folder."""
    from enerverse.io import load_generator
    from enerverse.train import TrainGeneratorConfig
    from enerverse.train import train as train_generator

    base = load_generator(cfg.generator)
    paths = sorted({str(p) for _, p in cfg.task_stores})
    gcfg = TrainGeneratorConfig(
        task=cfg.task,
        store=str(cfg.store_path),
        stores=paths if cfg.tasks else [],
        preset=base.cfg.preset,
        generator=base.cfg,
        out=str(run_dir / "adapt"),
        seed=cfg.seed,
        device=cfg.device,
        holdout=0.0,
        train=cfg.adapt,
        sample_every=0,
        init_from=cfg.generator,
        episodes=cfg.adapt_episodes,
    )
    summary = train_generator(gcfg, run_dir / "adapt")
    return summary["checkpoint"]


def reuse_adaptation_latents(data: PolicyData, run_dir: Path, gen) -> None:
    """Let the encoder read the latents the video adaptation encoded (its codec is the one ``gen``
    carries unless the adaptation trained it) instead of encoding those frames again."""
    from enerverse.latent_cache import LatentCache

    reuse = LatentCache.existing(run_dir / "adapt" / "latents", gen.codec)
    if reuse is not None:
        data.cache["latent_cache"] = reuse
