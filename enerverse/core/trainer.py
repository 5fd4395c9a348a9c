"""A small, exact-resume training loop shared by the generator and the policy.

- AdamW with linear warm-up then constant (or cosine) learning rate, gradient-norm clipping, a
  warm-up EMA (diffusers' EMAModel schedule).
- Checkpoints every ``ckpt_every`` steps as ``<run_dir>/step_XXXXXXXX/`` (config.json +
  model.safetensors (EMA weights under ``ema.``) + train_state.pt), resumed exactly: model, EMA,
  optimizer, scheduler, step, RNG states and the data position.
- A non-finite loss stops training with the step and batch that caused it; the last good checkpoint
  stays the newest one.
- Data-parallel under ``torchrun`` (``WORLD_SIZE`` > 1): DDP with gloo on CPU, nccl on CUDA; only rank 0
  writes. bf16 autocast on CUDA.
- tqdm progress and TensorBoard scalars.

Import this module only where torch is available (``enerverse.core`` itself stays torch-free).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from enerverse.core.batch_order import distributed_info, init_distributed
from enerverse.core.checkpoint import (
    capture_rng_state,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from enerverse.core.config import ConfigError, describe_differences
from enerverse.core.outputs import to_jsonable
from enerverse.core.progress import progress
from enerverse.core.signals import stop_on_signals


def to_device(batch: Any, device: str) -> Any:
    """Move the tensors of a batch (a tensor, or dict/list of them) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class LossModule(nn.Module):
    """``LossModule(model, "loss")(batch)`` calls ``model.loss(batch)``: a forward for the Trainer/DDP."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict]:
        return getattr(self.model, self.method)(batch)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the step and the batch."""


SCHEDULES = ("constant", "cosine")


@dataclass
class TrainSettings:
    """Optimisation settings of one training stage."""

    steps: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10
    schedule: str = "constant"
    """constant | cosine (after warm-up)"""
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    """the EMA's final decay; 0 disables EMA. The EMA warms up (diffusers EMAModel): the decay at step
    n is min(ema_decay, 1 - (1 + n)^-ema_power), so a short run's EMA follows the trained weights
    instead of keeping mostly the initial ones"""
    ema_power: float = 2 / 3
    """warm-up speed: 2/3 reaches a decay of 0.99 after about 1k steps and 0.999 after about 31k"""
    ckpt_every: int = 100
    log_every: int = 10
    keep_checkpoints: int = 2

    def check(self, name: str) -> None:
        """Refuse, before any data is loaded, a value this stage cannot run with; ``name`` is the
        settings' key prefix (``train``, ``codec``, ``adapt``) the message names."""
        from enerverse.core.config import ConfigError

        for key in ("steps", "lr", "grad_clip", "ckpt_every", "log_every", "keep_checkpoints"):
            value = getattr(self, key)
            if not value > 0:
                raise ConfigError(f"{name}.{key} must be positive, got {value}")
        for key in ("weight_decay", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}.{key} must be >= 0, got {getattr(self, key)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{name}.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{name}.ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}")
        if not self.ema_power > 0:
            raise ConfigError(f"{name}.ema_power must be positive, got {self.ema_power}")


class Trainer:
    """Trains ``model(batch) -> (loss, metrics)`` over an iterator factory with exact resume.

    The loss must come from ``model``'s forward so that DDP can synchronise gradients; wrap a method
    with :class:`LossModule` when a model's forward does something else.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings,
        run_dir: str | Path,
        config: dict,
        device: str = "cpu",
        params: list[nn.Parameter] | list[dict] | None = None,
        name: str = "train",
        defaults: dict | None = None,
        stop_at: int | None = None,
    ) -> None:
        """``params``: parameters or AdamW parameter groups (a group's ``lr`` follows the same schedule);
        default: every trainable parameter of ``model``. ``defaults``: ``config`` at default settings;
        a checkpoint written before a setting existed resumes when the run uses that setting's default
        (see :func:`enerverse.core.config.config_differences`).
        ``stop_at``: end :meth:`fit` at this step, with a checkpoint, while the learning-rate schedule
        (and the recorded config) still spans ``settings.steps``; resuming continues toward it."""
        self.s, self.device, self.name = settings, device, name
        self.stop_at = settings.steps if stop_at is None else stop_at  # fit() ends here; see stop()
        self.config = json.loads(json.dumps(to_jsonable(config)))  # as it reads back from config.json
        self.defaults = json.loads(json.dumps(to_jsonable(defaults or {})))
        self.run_dir = Path(run_dir)
        self.rank, self.local_rank, self.world = distributed_info()
        self.distributed = init_distributed(device)
        self.model = model.to(device)
        params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if settings.ema_decay > 0 else None
        self._ema_rule = self._make_ema_rule() if self.ema is not None else None
        self.ddp = None
        if self.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.local_rank] if device.startswith("cuda") else None
            )
        self.step = 0
        self.seconds = 0.0  # time spent in fit()'s loop, summed over resumes (time budgets read it)
        self.data_state: dict = {"epoch": 0, "index": 0}
        self.stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a signal ended fit()
        self._tb = None

    def _make_ema_rule(self):
        """diffusers' EMAModel updating ``self.ema``'s parameters in place (its shadow parameters are
        the EMA module's own), so the EMA is saved and resumed with the module."""
        from diffusers.training_utils import EMAModel

        rule = EMAModel(
            self.ema.parameters(),
            decay=self.s.ema_decay,
            use_ema_warmup=True,
            power=self.s.ema_power,
            foreach=True,
        )
        rule.shadow_params = list(self.ema.parameters())  # alias: step() writes into the module
        return rule

    def _lr_factor(self, step: int) -> float:
        if step < self.s.warmup_steps:
            return (step + 1) / self.s.warmup_steps
        if self.s.schedule == "cosine":
            frac = (step - self.s.warmup_steps) / max(1, self.s.steps - self.s.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        return 1.0

    # --- checkpoints ------------------------------------------------------------------------------
    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        sd = dict(self.model.state_dict())
        if self.ema is not None:
            sd.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        return sd

    def save(self) -> Path | None:
        """Write a checkpoint for the current step (rank 0 only) and prune old ones."""
        if self.rank != 0:
            return None
        path = checkpoint_dir(self.run_dir, self.step)
        state = {
            "step": self.step,
            "seconds": self.seconds,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": capture_rng_state(),
            "data": dict(self.data_state),
            "stage": self.name,
        }
        save_checkpoint(path, self.config, self.state_dict_for_save(), state)
        old = sorted(p for p in self.run_dir.glob("step_*") if p.is_dir() and p != path)
        for p in old[: max(0, len(old) - self.s.keep_checkpoints + 1)]:
            shutil.rmtree(p, ignore_errors=True)
        return path

    def stop(self) -> None:
        """End :meth:`fit` after the current step (called from ``on_step``), with a checkpoint. The
        settings (and so the learning-rate schedule and the recorded config) keep ``steps``."""
        self.stop_at = min(self.stop_at, self.step)

    def resume(self) -> bool:
        """Load the newest checkpoint of ``run_dir`` if there is one; True when resumed."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        ck = load_checkpoint(path, map_location=self.device)
        ts = ck.train_state or {}
        if ts.get("stage") not in (None, self.name):
            return False  # a checkpoint of another stage: start this one fresh
        diff = describe_differences(ck.config, self.config, self.defaults)
        if diff:
            raise ConfigError(
                f"checkpoint {path} was written with another config ({diff}); "
                "use a new run directory or the same settings"
            )
        model_sd = {k: v for k, v in ck.state_dict.items() if not k.startswith("ema.")}
        self.model.load_state_dict(model_sd)
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in ck.state_dict.items() if k.startswith("ema.")})
            self._ema_rule.optimization_step = int(ts["step"])  # the warm-up continues where it was
        self.opt.load_state_dict(ts["optimizer"])
        self.sched.load_state_dict(ts["scheduler"])
        restore_rng_state(ts["rng"])
        self.step = int(ts["step"])
        self.seconds = float(ts.get("seconds", 0.0))  # checkpoints before 2026-11-30 lack it
        self.data_state = dict(ts["data"])
        return True

    # --- loop -------------------------------------------------------------------------------------
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        self._ema_rule.step(self.model.parameters())  # decay from the warm-up schedule, then ema_decay
        with torch.no_grad():
            for e, b in zip(self.ema.buffers(), self.model.buffers()):
                e.copy_(b)

    def log(self, metrics: dict) -> None:
        """TensorBoard scalars (rank 0)."""
        if self.rank != 0:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        for k, v in metrics.items():
            self._tb.add_scalar(f"{self.name}/{k}", v, self.step)

    def fit(
        self, batches: Callable[[dict], Iterator[Any]], on_step: Callable[[Trainer], None] | None = None
    ) -> list[float]:
        """Train until ``settings.steps`` (or :attr:`stop_at`). ``batches(data_state)`` yields batches from
        the stored position and must advance ``data_state`` ("epoch", "index") as it goes, so resume
        continues exactly."""
        losses: list[float] = []
        bar = progress(
            total=self.s.steps,
            initial=self.step,
            desc=self.name,
            unit="step",
            disable=True if self.rank != 0 else None,
        )
        with stop_on_signals(self):
            self._loop(batches, on_step, losses, bar)
        bar.close()
        if self._tb is not None:
            self._tb.flush()
        return losses

    def _should_stop(self) -> bool:
        """A signal or an early stop (time budget) on this rank; under DDP on any rank, so that every
        rank ends at the same step instead of one waiting forever in the next all-reduce."""
        if not self.distributed:
            return self.stopped_by is not None
        import torch.distributed as dist

        flags = torch.tensor(
            [float(self.stopped_by is not None), float(self.step >= self.stop_at)], device=self.device
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if flags[0] > 0 and self.stopped_by is None:
            self.stopped_by = "SIGTERM"  # another rank got the signal: end as it does
        return bool(flags.max() > 0)

    def _loop(self, batches, on_step, losses: list[float], bar) -> None:
        it = batches(self.data_state)
        try:
            self._steps(it, on_step, losses, bar)
        finally:  # an error too: loader workers stop now, not at exit (where they would hang the join)
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _steps(self, it: Iterator[Any], on_step, losses: list[float], bar) -> None:
        net = self.ddp or self.model
        self.model.train()
        tick = time.perf_counter()
        while self.step < min(self.s.steps, self.stop_at):
            batch = to_device(next(it), self.device)
            autocast = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if self.device.startswith("cuda")
                else torch.autocast("cpu", enabled=False)
            )
            with autocast:
                loss, metrics = net(batch)
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite loss {value} at step {self.step + 1} (batch at data position "
                    f"{self.data_state}); the last good checkpoint is {latest_checkpoint(self.run_dir)}"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip)
            self.opt.step()
            self.sched.step()
            self._update_ema()
            self.step += 1
            now = time.perf_counter()
            self.seconds, tick = self.seconds + now - tick, now
            losses.append(value)
            bar.update(1)
            if self.step % self.s.log_every == 0 or self.step == self.s.steps:
                bar.set_postfix(loss=f"{value:.4f}")
                self.log(
                    {
                        **metrics,
                        "loss": value,
                        "grad_norm": float(gnorm),
                        "lr": self.sched.get_last_lr()[0],
                    }
                )
            if on_step is not None:
                on_step(self)  # may stop(): the checkpoint below then covers this step
            if self._should_stop():
                self.stop()  # SIGTERM/SIGINT arrived during this step (on any rank): save it and end
            if self.step % self.s.ckpt_every == 0 or self.step >= min(self.s.steps, self.stop_at):
                self.save()
