"""``ev-train-policy``: train EnerVerse-A (or the image baseline) on an episode store.

    ev-train-policy task=pick_place preset=small generator=<generator run>/checkpoint
    ev-train-policy task=pick_place preset=small policy.encoder.kind=cnn          # the baseline
    ev-train-policy ... adapt.steps=300          # video adaptation of the generator on this store first
    ev-train-policy ... finetune.mode=lora       # stage 2: the policy loss into the generator (LoRA)
    ev-train-policy ... finetune.mode=full finetune.video_weight=1   # one-stage co-training
    ev-train-policy ... init_from=<policy checkpoint>        # fine-tune a trained policy
    torchrun --nproc_per_node 2 -m policies.train task=reach preset=tiny generator=... out=runs/p

Stages: (1, optional) video adaptation - the generator keeps training on this task's episodes
(``enerverse.train`` with ``init_from``); (2) the policy loss, with the generator frozen (its features
are computed once per decision point and cached) or trained through the policy loss
(``finetune.mode`` partial / lora / full: a features-only generator forward and backward every step;
see :mod:`policies.finetune`). Exact-resume checkpoints, EMA, TensorBoard, progress
bars; ``<out>/checkpoint`` is the folder ``ev-eval policy=...`` and the ROS node load.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from enerverse.core.batch_order import distributed_info, epoch_batches
from enerverse.core.config import ConfigError, config_to_dict, parse_cli_with_preset
from enerverse.core.device import pick_device
from enerverse.core.plots import line_plot
from enerverse.core.run import run_training_main
from enerverse.core.seeding import seed_everything
from enerverse.core.store import EpisodeStore, check_rig_version, recorded_rig_version, store_rig_version
from enerverse.core.trainer import Trainer, TrainSettings
from policies.adapt import adapt_generator, reuse_adaptation_latents
from policies.config import PolicyConfig, get_policy_preset
from policies.data import PolicyData
from policies.encoder_api import DataSpec, encoder_class
from policies.finetune import FinetuneSettings, merge_lora, prepare_generator, trainable_summary
from policies.io import init_policy_from, save_policy
from policies.model import DiffusionPolicy


@dataclass
class TrainPolicyConfig:
    """Settings of ``ev-train-policy``."""

    task: str = "pick_place"
    """task whose demonstrations are used (store defaults to data/<task>)"""
    store: str | None = None
    """episode store folder (default: data/<task>)"""
    tasks: list[str] | None = None
    """several tasks in one language-conditioned policy (replaces ``task``); their stores are ``stores``
    (one per task, or one holding them all), by default data/<task> each"""
    stores: list[str] | None = None
    """episode stores of ``tasks``"""
    preset: str = "tiny"
    """policy size: tiny | small | base"""
    policy: PolicyConfig = field(default_factory=lambda: get_policy_preset("tiny"))
    generator: str | None = None
    """EnerVerse-G checkpoint folder (needed for policy.encoder.kind=enerverse)"""
    init_from: str | None = None
    """policy checkpoint folder whose encoder and head weights start this run (fine-tuning on new data
    or a longer schedule; same preset and policy.* settings; the generator and statistics are this
    run's own)"""
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    """stage 2: how the policy loss trains the generator (mode off | partial | lora | full; see
    policies/finetune.py)"""
    adapt: TrainSettings = field(
        default_factory=lambda: TrainSettings(
            steps=0, lr=1e-4, warmup_steps=20, grad_clip=0.5, ema_decay=0.99
        )
    )
    """video adaptation of the generator on this store before the policy stage (steps=0: skip)"""
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(
            steps=2000, lr=3e-4, warmup_steps=100, ema_decay=0.995, ckpt_every=500, schedule="cosine"
        )
    )
    batch_size: int = 64
    episodes: int | None = None
    """use at most this many episodes per task (the first ones); None: all"""
    adapt_episodes: int | None = None
    """video adaptation reads at most this many of the store's episodes (its cost is mostly encoding
    them); None: all"""
    decision_stride: int = 1
    """train on every n-th frame as a decision point (the frozen-generator feature cache costs one
    generator forward per decision point)"""
    resolution: int = 64
    """image size of the baseline (EnerVerse-A uses its generator's)"""
    text_encoder: str = "minilm"
    """instruction encoder of the baseline (EnerVerse-A uses its generator's): minilm | hashing | hf"""
    text_model_path: str | None = None
    out: str | None = None
    """run folder (default outputs/train_policy/<timestamp>); an existing run is resumed"""
    seed: int = 0
    device: str = "auto"
    max_minutes: float | None = None
    """stop the policy stage (with a checkpoint) after this much training time, counted over resumes (a
    run stopped at 50 of 120 minutes and resumed trains 70 more)"""
    stop_at_step: int | None = None
    """stop the policy stage (with a checkpoint) at this step while the learning-rate schedule still
    spans train.steps: runs of different speed compared at equal steps; resuming continues"""

    def validate(self) -> None:
        self.policy.validate()
        self.finetune.validate()
        self.train.check("train")
        if self.adapt.steps < 0:
            raise ConfigError(f"adapt.steps must be >= 0 (0: no video adaptation), got {self.adapt.steps}")
        if self.adapt.steps:
            self.adapt.check("adapt")
        if self.adapt_episodes is not None and self.adapt_episodes <= 0:
            raise ConfigError(f"adapt_episodes must be a positive count or null, got {self.adapt_episodes}")
        if self.batch_size <= 0:
            raise ConfigError("batch_size must be positive")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ConfigError(f"stop_at_step must be a positive step count or null, got {self.stop_at_step}")
        kind = self.policy.encoder.kind
        if encoder_class(kind).needs_generator and not self.generator:
            raise ConfigError(
                f"policy.encoder.kind={kind} needs generator=<EnerVerse-G checkpoint folder> "
                "(train one with ev-train-generator), or use policy.encoder.kind=cnn for the baseline"
            )
        if self.finetune.enabled and not encoder_class(kind).needs_generator:
            raise ConfigError(
                f"finetune.mode={self.finetune.mode} needs an encoder that reads a generator, not {kind}"
            )
        if self.stores is not None and not self.tasks:
            raise ConfigError("stores=[...] go with tasks=[...] (use store=<folder> for one task)")
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            raise ConfigError(f"tasks must be distinct task names, got {self.tasks}")
        if self.tasks and self.stores and len(self.stores) not in (1, len(self.tasks)):
            raise ConfigError(
                f"{len(self.stores)} stores for {len(self.tasks)} tasks: one store per task, or one for all"
            )
        if self.generator and not Path(self.generator).is_dir():
            raise ConfigError(f"generator={self.generator} is not a folder")
        if self.init_from and not (Path(self.init_from) / "config.json").is_file():
            raise ConfigError(
                f"init_from={self.init_from} is not a policy checkpoint folder (no config.json)"
            )

    @property
    def store_path(self) -> Path:
        return Path(self.store) if self.store else Path("data") / self.task

    @property
    def task_stores(self) -> list[tuple[str, Path]]:
        """(task, store folder) for every task trained on."""
        if not self.tasks:
            return [(self.task, self.store_path)]
        stores = self.stores or [str(Path("data") / t) for t in self.tasks]
        return [(t, Path(stores[0] if len(stores) == 1 else stores[i])) for i, t in enumerate(self.tasks)]


def parse_args(argv: list[str] | None) -> TrainPolicyConfig:
    """Parse overrides; ``preset=<name>`` picks the defaults that ``policy.*`` overrides refine."""
    return parse_cli_with_preset(TrainPolicyConfig, argv, "ev-train-policy", "policy", get_policy_preset)


def build_policy(cfg: TrainPolicyConfig, data: PolicyData, gen, device: str):
    """The policy around ``gen`` (frozen unless ``cfg.finetune`` trains part of it) with the data's
    statistics; returns (policy, the generator parameters to train)."""
    if gen is not None:
        res, text = gen.cfg.resolution, (gen.cfg.text_encoder, gen.cfg.text_model_path)
    else:
        res, text = cfg.resolution, (cfg.text_encoder, cfg.text_model_path)
    spec = DataSpec(
        views=data.views,
        resolution=res,
        state_dim=data.state_dim,
        text_encoder=text[0],
        text_model_path=text[1],
        task=None if cfg.tasks else cfg.task,
        tasks=list(cfg.tasks) if cfg.tasks else None,
        privileged_dim=data.privileged_dim,
        rig_version=data.rig_version,
    )
    policy = DiffusionPolicy(cfg.policy, spec, gen)
    policy.set_stats(data.stats())
    gen_params = []
    if policy.generator is not None:
        gen_params = prepare_generator(policy.generator, cfg.finetune, cfg.policy.encoder.block)
    policy.finetune_generator, policy.video_weight = cfg.finetune.enabled, cfg.finetune.video_weight
    return policy.to(device), gen_params


def open_episodes(cfg: TrainPolicyConfig) -> list[tuple[EpisodeStore, list[int]]]:
    """(store, episode indices) per task: the task's episodes of its store, at most ``cfg.episodes``."""
    out = []
    for task, path in cfg.task_stores:
        if not path.exists():
            raise ConfigError(
                f"no episode store at {path}; create one with: ev-collect task={task} episodes=200 out={path}"
            )
        store = EpisodeStore.open(path)
        eps = [e for e in store.indices() if store.episode(e).attrs.get("task") == task]
        if not eps:
            raise ConfigError(f"the store {path} has no episodes of task {task!r}")
        out.append((store, eps[: cfg.episodes] if cfg.episodes else eps))
    return out


def load_reader_generator(cfg: TrainPolicyConfig, folder: str, stores: list[EpisodeStore], device: str):
    """The generator the encoder reads, refused when a store was recorded with another camera rig."""
    from enerverse.io import load_generator

    gen = load_generator(folder, device)
    for store in stores:
        rig = store_rig_version(store)
        check_rig_version(
            recorded_rig_version(gen.data_meta, rig), rig, f"generator={folder}", str(store.path)
        )
    return gen


def train(cfg: TrainPolicyConfig, run_dir: Path) -> dict:
    """Both stages; returns the summary dict."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed + distributed_info()[0])
    sources = open_episodes(cfg)
    t0 = time.perf_counter()
    summary: dict = {
        "task": cfg.tasks or cfg.task,
        "preset": cfg.preset,
        "encoder": cfg.policy.encoder.kind,
        "episodes": sum(len(eps) for _, eps in sources),
        "run_dir": str(run_dir),
    }
    generator_dir = cfg.generator
    reads_generator = encoder_class(cfg.policy.encoder.kind).needs_generator
    if reads_generator and cfg.adapt.steps > 0:
        generator_dir = adapt_generator(cfg, run_dir)
        summary["adapted_generator"] = generator_dir
    summary["adapt_minutes"] = (time.perf_counter() - t0) / 60
    gen = None
    if reads_generator:
        gen = load_reader_generator(cfg, generator_dir, [st for st, _ in sources], device)
    data = PolicyData(
        sources,
        None,
        cfg.policy.views,
        gen.cfg.resolution if gen is not None else cfg.resolution,
        cfg.policy.n_memory,
        cfg.policy.head.horizon,
        cfg.policy.memory_mode,
        cfg.decision_stride,
        privileged=cfg.policy.aux_weight > 0,
        memory_stride=gen.cfg.frame_stride if gen is not None else 1,  # the generator's frame grid
    )
    policy, gen_params = build_policy(cfg, data, gen, device)
    if cfg.init_from:
        n = len(init_policy_from(policy, cfg.init_from))
        print(f"[ev-train-policy] {n} tensors initialised from {cfg.init_from}", file=sys.stderr)
    if reads_generator and cfg.adapt.steps > 0:
        reuse_adaptation_latents(data, run_dir, gen)
    policy.encoder.prepare_data(data, cfg.finetune.enabled, cfg.seed)
    kind = cfg.policy.encoder.kind + (f" (generator {cfg.finetune.mode})" if cfg.finetune.enabled else "")
    summary.update(
        {
            "decision_points": len(data),
            "views": data.views,
            "params_trainable": policy.num_parameters(trainable_only=True),
            **trainable_summary(policy),
            "params_total": policy.num_parameters(),
            "feature_minutes": (time.perf_counter() - t0) / 60 - summary["adapt_minutes"],
        }
    )
    print(
        f"[ev-train-policy] {kind} policy: {summary['params_trainable'] / 1e6:.2f} M trainable of "
        f"{summary['params_total'] / 1e6:.2f} M, {summary['episodes']} episodes, {len(data)} decisions, "
        f"views {data.views}",
        file=sys.stderr,
    )

    summary.update(fit_policy(cfg, policy, gen_params, data, run_dir, device))
    summary["minutes"] = (time.perf_counter() - t0) / 60
    return summary


def run_identity(cfg: TrainPolicyConfig) -> dict:
    """What a resumed run must share with the original (step counts and time budgets may change)."""
    return {
        "policy": config_to_dict(cfg.policy),
        "task": cfg.task,
        "store": str(cfg.store_path),
        "tasks": cfg.tasks,
        "stores": cfg.stores,
        "generator": cfg.generator,
        "finetune": config_to_dict(cfg.finetune),
        "init_from": cfg.init_from,
        "adapt_steps": cfg.adapt.steps,
        "adapt_episodes": cfg.adapt_episodes,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "episodes": cfg.episodes,
        "decision_stride": cfg.decision_stride,
    }


def fit_policy(
    cfg: TrainPolicyConfig, policy, gen_params: list, data: PolicyData, run_dir: Path, device: str
) -> dict:
    """The policy stage (resumable): train, then save ``<run>/checkpoint`` (EMA weights, adapters merged)."""

    def on_step(tr: Trainer) -> None:
        if cfg.max_minutes is not None and tr.seconds > 60 * cfg.max_minutes:
            tr.stop()  # checkpoint and end here; resuming continues toward train.steps

    batch_size = min(cfg.batch_size, len(data))
    if batch_size < cfg.batch_size:
        print(f"[ev-train-policy] only {len(data)} decision points: batch size {batch_size}", file=sys.stderr)
    own = [p for n, p in policy.named_parameters() if p.requires_grad and not n.startswith("generator.")]
    params = [{"params": own}]
    if gen_params:  # the generator learns more slowly than the freshly initialised head
        params.append({"params": gen_params, "lr": cfg.train.lr * cfg.finetune.lr_scale})
    defaults = {  # for settings added later
        "policy": config_to_dict(get_policy_preset(cfg.policy.preset)),
        "finetune": config_to_dict(FinetuneSettings()),
        "tasks": None,
        "stores": None,
        "adapt_episodes": None,
    }
    tr = Trainer(
        policy,
        cfg.train,
        run_dir / "policy",
        run_identity(cfg),
        device,
        params,
        "policy",
        defaults,
        cfg.stop_at_step,
    )
    tr.resume()  # resumed at or past stop_at_step: fit() trains no step
    if cfg.max_minutes is not None and tr.seconds >= 60 * cfg.max_minutes:
        tr.stop()  # the time budget is spent: a rerun trains no further step
    t1 = time.perf_counter()
    losses = tr.fit(
        lambda st: epoch_batches(
            len(data),
            batch_size,
            cfg.seed,
            st,
            lambda it, ep: data.batch(it, policy, cfg.finetune.enabled, cfg.finetune.video_weight > 0),
        ),
        on_step,
    )
    summary: dict = {}
    final = tr.ema or policy
    if tr.rank == 0:
        merge_lora(final)  # adapters folded into the weights: the checkpoint is a plain policy
        save_policy(final, run_dir / "checkpoint", extra={"train": config_to_dict(cfg), "step": tr.step})
        if losses:
            summary["loss_plot"] = str(
                line_plot(
                    {"loss": losses}, run_dir / "loss.png", title=f"{cfg.policy.encoder.kind} policy loss"
                )
            )
    summary["steps"], summary["checkpoint"] = tr.step, str(run_dir / "checkpoint")
    summary["final_loss"] = float(np.mean(losses[-20:])) if losses else None
    summary["policy_minutes"] = (time.perf_counter() - t1) / 60
    return summary | ({"stopped_by": tr.stopped_by} if tr.stopped_by else {})


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-train-policy``."""
    run_training_main(parse_args(argv), "train_policy", train)


if __name__ == "__main__":
    main()
