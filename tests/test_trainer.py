"""The shared Trainer: warm-up EMA and its exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from enerverse.core.batch_order import epoch_batches
from enerverse.core.trainer import Trainer, TrainSettings


class Toward(nn.Module):
    """Loss ||w - target||² for a batch of targets [B, 4]: w walks from 0 toward the target."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return (self.w - batch).pow(2).sum(dim=1).mean(), {}


def _fit(run_dir: Path, steps: int, stop_at: int | None = None) -> Trainer:
    torch.manual_seed(0)
    s = TrainSettings(steps=steps, lr=0.05, warmup_steps=1, ema_decay=0.999, ckpt_every=1000, log_every=1000)
    tr = Trainer(Toward(), s, run_dir, {"toy": 1}, "cpu", name="toy", stop_at=stop_at)
    tr.resume()
    targets = torch.ones(8, 4)
    tr.fit(lambda st: epoch_batches(8, 2, 0, st, lambda idx, epoch: targets[idx]))
    return tr


def test_ema_warms_up_so_a_short_run_keeps_the_trained_weights(tmp_path: Path) -> None:
    one = _fit(tmp_path / "one", 1)
    torch.testing.assert_close(one.ema.w, one.model.w)  # step 1: decay 0, the EMA is the weights
    tr = _fit(tmp_path / "short", 150)
    w, ema = tr.model.w.detach(), tr.ema.w.detach()
    assert (w > 0.99).all()  # trained to the target
    # a constant 0.999 decay would keep 0.999^150 = 86% of the initial zeros (EMA about 0.13);
    # the warm-up decay 1 - (1 + n)^(-2/3) tracks the recent weights
    assert (ema > 0.85).all(), ema
    assert tr._ema_rule.cur_decay_value < 0.97


def test_stopped_and_resumed_run_has_the_same_ema(tmp_path: Path) -> None:
    full = _fit(tmp_path / "full", 40)
    _fit(tmp_path / "split", 40, stop_at=17)
    resumed = _fit(tmp_path / "split", 40)
    assert resumed.step == 40
    torch.testing.assert_close(resumed.ema.w, full.ema.w)
    torch.testing.assert_close(resumed.model.w, full.model.w)


def test_training_time_adds_up_over_resumes_so_time_budgets_span_them(tmp_path: Path) -> None:
    first = _fit(tmp_path / "run", 40, stop_at=17)
    assert first.seconds > 0
    resumed = Trainer(
        Toward(), TrainSettings(steps=40, ckpt_every=1000), tmp_path / "run", {"toy": 1}, name="toy"
    )
    assert resumed.resume()
    assert resumed.seconds == pytest.approx(first.seconds)  # restored, not restarted at zero
    more = _fit(tmp_path / "run", 40)
    assert more.step == 40 and more.seconds > first.seconds


def test_sigterm_ends_fit_with_a_checkpoint_that_resumes_exactly(tmp_path: Path) -> None:
    import os
    import signal

    full = _fit(tmp_path / "full", 40)
    torch.manual_seed(0)
    s = TrainSettings(steps=40, lr=0.05, warmup_steps=1, ema_decay=0.999, ckpt_every=1000, log_every=1000)
    tr = Trainer(Toward(), s, tmp_path / "split", {"toy": 1}, "cpu", name="toy")
    before = signal.getsignal(signal.SIGTERM)
    targets = torch.ones(8, 4)
    batches = lambda st: epoch_batches(8, 2, 0, st, lambda idx, epoch: targets[idx])  # noqa: E731
    tr.fit(batches, lambda t: os.kill(os.getpid(), signal.SIGTERM) if t.step == 17 else None)
    assert tr.stopped_by == "SIGTERM" and tr.step == 17  # the step in flight finished, then it stopped
    assert (tmp_path / "split" / "step_00000017").is_dir()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is gone after fit
    resumed = _fit(tmp_path / "split", 40)
    torch.testing.assert_close(resumed.model.w, full.model.w)
    torch.testing.assert_close(resumed.ema.w, full.ema.w)


class NoisyToward(Toward):
    """Like Toward, with noise drawn from torch's global RNG in every step (as diffusion training)."""

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
        noisy = batch + 0.3 * torch.randn_like(batch)
        return (self.w - noisy).pow(2).sum(dim=1).mean(), {}


class Targets(torch.utils.data.Dataset):
    """Item (i, epoch) -> a target [4] that depends on both."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        i, epoch = key
        return torch.full((4,), float(i) / 10 + epoch)


def _fit_loader(run_dir: Path, workers: int, stop_at: int | None = None) -> Trainer:
    from enerverse.core.loader import loader_batches

    torch.manual_seed(0)
    s = TrainSettings(steps=24, lr=0.05, warmup_steps=1, ema_decay=0.99, ckpt_every=1000, log_every=1000)
    tr = Trainer(NoisyToward(), s, run_dir, {"toy": 2}, "cpu", name="toy", stop_at=stop_at)
    tr.resume()
    tr.fit(lambda st: loader_batches(Targets(), 3, 0, st, torch.stack, workers))
    return tr


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_through_the_dataloader_is_exact(tmp_path: Path, workers: int) -> None:
    full = _fit_loader(tmp_path / "full", workers)
    _fit_loader(tmp_path / "split", workers, stop_at=10)  # 3 batches per epoch: stops mid-epoch
    resumed = _fit_loader(tmp_path / "split", workers)
    assert resumed.step == 24
    torch.testing.assert_close(resumed.model.w, full.model.w)
    torch.testing.assert_close(resumed.ema.w, full.ema.w)


class FailsAtStep3(Toward):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("broken batch")
        return super().forward(batch)


def test_an_error_in_training_stops_the_loader_workers_at_once(tmp_path: Path) -> None:
    """Workers ignore SIGTERM (the main process checkpoints first), so a loader left open until exit
    would hang the interpreter's join of its children: the error must shut them down itself."""
    import multiprocessing

    from enerverse.core.loader import loader_batches

    s = TrainSettings(steps=10, lr=0.05, warmup_steps=1, ckpt_every=1000, log_every=1000)
    tr = Trainer(FailsAtStep3(), s, tmp_path, {"toy": 1}, "cpu", name="toy")
    with pytest.raises(RuntimeError, match="broken batch") as failure:
        tr.fit(lambda st: loader_batches(Targets(), 2, 0, st, torch.stack, workers=2))
    assert failure.traceback  # the traceback (and the frames it holds) is still alive here
    assert multiprocessing.active_children() == []
