"""Batches from a ``torch.utils.data.DataLoader`` with worker processes, resumable exactly.

The order is :func:`enerverse.core.trainer.batch_order`, the one of ``epoch_batches`` (a seeded
permutation per epoch, every ``world``-th item per DDP rank, incomplete last batches dropped), so a
run that switches from in-process batches to workers keeps its data order. Items are requested as
``(index, epoch)``, so a dataset can seed per-epoch randomness (sparse-memory draws) without state
shared across workers. The loader prefetches ahead of training; the main process walks the same
deterministic order in lockstep to know where each delivered batch came from, and advances
``data_state`` only when the batch is handed to the trainer, so a checkpoint resumes at the next
batch not yet trained on.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from enerverse.core.batch_order import batch_order


class ResumableBatchSampler(Sampler):
    """Infinite batch sampler over ``n_items`` starting at ``start`` ({"epoch", "index"})."""

    def __init__(self, n_items: int, batch_size: int, seed: int, start: dict) -> None:
        self.n_items, self.batch_size, self.seed, self.start = n_items, batch_size, seed, dict(start)
        next(batch_order(n_items, batch_size, seed, self.start))  # fail here, not in a worker

    def __iter__(self) -> Iterator[list]:
        for items, _ in batch_order(self.n_items, self.batch_size, self.seed, self.start):
            yield items

    def positions(self) -> Iterator[dict]:
        """The position after each batch, in the order :meth:`__iter__` yields them."""
        for _, pos in batch_order(self.n_items, self.batch_size, self.seed, self.start):
            yield pos


def _worker_init(_: int) -> None:
    """Workers leave SIGTERM/SIGINT to the main process, which checkpoints and then shuts them down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loader_batches(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    data_state: dict,
    collate: Callable[[list], Any],
    workers: int = 0,
) -> Iterator[Any]:
    """Batches of ``dataset[(index, epoch)]`` items from a DataLoader with ``workers`` processes
    (0: in this process), advancing ``data_state`` as each batch is handed out."""
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, data_state)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        generator=torch.Generator().manual_seed(seed),  # not the global RNG: resume stays exact
    )
    batches = iter(loader)
    try:
        for batch, pos in zip(batches, sampler.positions()):
            data_state.update(pos)
            yield batch
    finally:  # closed (or collected): stop the workers now; they ignore the SIGTERM exit would send
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
