"""The training order shared by every trainer: seeded per-epoch permutations, split across torchrun
ranks, resumable from a position ({"epoch", "index"}) stored in the checkpoint.

Import this module only where torch is available."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch


def distributed_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment (single process: 0, 0, 1)."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))


def init_distributed(device: str) -> bool:
    """Initialise the process group when launched by torchrun; returns True when distributed."""
    import torch.distributed as dist

    _, _, world = distributed_info()
    if world <= 1 or dist.is_initialized():
        return world > 1
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return True


def batch_order(n_items: int, batch_size: int, seed: int, start: dict) -> Iterator[tuple[list, dict]]:
    """The training order from position ``start`` ({"epoch", "index"}), forever: yields (items, the
    position after this batch), items being ``batch_size`` pairs (item index, epoch).

    Each epoch is a seeded permutation of ``n_items``; under DDP each rank takes every ``world``-th
    item of it; incomplete last batches are dropped."""
    rank, _, world = distributed_info()
    if n_items < batch_size * world:
        from enerverse.core.config import ConfigError

        raise ConfigError(
            f"{n_items} training items cannot fill one batch of {batch_size} x {world} ranks: expected at "
            f"least {batch_size * world} (lower batch_size or add episodes)"
        )
    epoch, index = int(start["epoch"]), int(start["index"])
    while True:
        order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        order = order[rank::world]
        n_batches = len(order) // batch_size
        while index < n_batches:
            items = [(i, epoch) for i in order[index * batch_size : (index + 1) * batch_size]]
            index += 1
            yield items, {"epoch": epoch, "index": index}
        epoch, index = epoch + 1, 0


def epoch_batches(
    n_items: int, batch_size: int, seed: int, data_state: dict, get_batch: Callable[[list[int], int], Any]
) -> Iterator[Any]:
    """Batches in the order of :func:`batch_order`, built in this process, resumable from ``data_state``.

    ``data_state`` ("epoch", "index") is advanced before each yield, so a checkpoint written after a
    step resumes at the next batch. ``get_batch(item_indices, epoch)`` builds a batch.
    """
    for items, pos in batch_order(n_items, batch_size, seed, data_state):
        data_state.update(pos)
        yield get_batch([i for i, _ in items], items[0][1])
