"""Nearest neighbours by chunked brute force (torch.cdist), bounded in memory: one home for the data
engine's k-NN (initial Gaussian scales, support-plane colours)."""

from __future__ import annotations

import torch
from torch import Tensor


def knn(query: Tensor, ref: Tensor, k: int = 1, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Distances [Q, k'] and indices [Q, k'] of each ``query`` point's ``k`` nearest ``ref`` points
    (both [*, D]; k' = min(k, len(ref))), nearest first."""
    k = min(k, len(ref))
    dist, idx = [], []
    for s in range(0, len(query), chunk):
        d, i = torch.cdist(query[s : s + chunk], ref).topk(k, largest=False)  # [n, k], sorted
        dist.append(d)
        idx.append(i)
    if not dist:
        return query.new_zeros((0, k)), torch.zeros((0, k), dtype=torch.long)
    return torch.cat(dist), torch.cat(idx)
