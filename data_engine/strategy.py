"""Densify and prune Gaussians during fitting (the CPU equivalent of gsplat's ``DefaultStrategy``).

Every ``every`` steps between ``start`` and ``stop``:
- Gaussians whose image-space position gradient (averaged over the renders that saw them, in pixels)
  exceeds ``grad_threshold`` are grown: *cloned* when small (largest scale below ``dense_fraction`` of
  the scene extent), *split* in two when large (children drawn from the Gaussian, scales / 1.6);
- Gaussians with opacity below ``min_opacity``, or larger than ``max_fraction`` of the scene, go.

The optimiser's Adam moments follow the surgery (kept rows keep theirs, new rows start at zero), so
fitting continues smoothly instead of restarting its optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from data_engine.gaussians import Gaussians
from data_engine.projection import quat_to_rotmat

GAUSSIAN_PARAMS = ("means", "quats", "log_scales", "logit_opacities", "sh")


@dataclass
class DensifySettings:
    start: int = 100
    stop: int = 10_000
    every: int = 100
    grad_threshold: float = 0.002
    """mean image-space gradient norm of a Gaussian's centre (per normalised image coordinate, x the
    number of cameras in the loss, as gsplat scales it) above which it is grown"""
    dense_fraction: float = 0.01
    min_opacity: float = 0.005
    max_fraction: float = 0.1
    max_gaussians: int = 50_000


class GradientStats:
    """Running mean of each Gaussian's image-space centre gradient over the renders that saw it."""

    def __init__(self, n: int) -> None:
        self.reset(n)

    def reset(self, n: int) -> None:
        self.total = torch.zeros(n)
        self.count = torch.zeros(n)

    def add(self, means2d: Tensor, radii: Tensor, width: int, height: int) -> None:
        """``means2d`` [C, N, 2] with ``.grad`` after backward; ``radii`` [C, N] (0: not seen)."""
        if means2d.grad is None:
            return
        C = means2d.shape[0]  # the loss averages the cameras: undo it (gsplat's scaling)
        g = means2d.grad.detach() * torch.tensor([width / 2.0, height / 2.0]) * C  # per normalised coordinate
        seen = radii > 0
        self.total += (g.norm(dim=-1) * seen).sum(0)
        self.count += seen.sum(0)

    def mean(self) -> Tensor:
        return self.total / self.count.clamp_min(1)


def _replace_rows(g: Gaussians, opt: torch.optim.Optimizer, keep: Tensor, new: dict[str, Tensor]) -> None:
    """Keep rows ``keep`` (bool [N]) of every Gaussian parameter, append ``new`` rows, and carry the
    optimiser state along (zero moments for the new rows)."""
    for name in GAUSSIAN_PARAMS:
        old: nn.Parameter = getattr(g, name)
        data = torch.cat([old.data[keep], new[name].to(old.dtype)])
        param = nn.Parameter(data)
        for group in opt.param_groups:
            for i, p in enumerate(group["params"]):
                if p is old:
                    group["params"][i] = param
                    state = opt.state.pop(old, None)
                    if state:
                        for k in ("exp_avg", "exp_avg_sq"):
                            if k in state:
                                pad = torch.zeros_like(new[name], dtype=state[k].dtype)
                                state[k] = torch.cat([state[k][keep], pad])
                        opt.state[param] = state
        setattr(g, name, param)


@torch.no_grad()
def densify_and_prune(
    g: Gaussians, opt: torch.optim.Optimizer, stats: GradientStats, cfg: DensifySettings, extent: float
) -> dict[str, int]:
    """One densify-and-prune pass (see module docstring); returns the counts of each operation."""
    n = len(g)
    grad = stats.mean()
    scales = g.log_scales.exp()
    big = scales.max(dim=1).values > cfg.dense_fraction * extent
    grow = (grad > cfg.grad_threshold) & (stats.count > 0)
    room = max(0, cfg.max_gaussians - n)
    clone, split = grow & ~big, grow & big
    if int(clone.sum() + 2 * split.sum()) > room:  # over budget: grow the strongest gradients first
        limit = torch.zeros(n, dtype=torch.bool)
        limit[torch.argsort(grad, descending=True)[: room // 2]] = True
        clone, split = clone & limit, split & limit
    new = {k: [getattr(g, k).data[clone]] for k in GAUSSIAN_PARAMS}
    if split.any():
        idx = split.nonzero()[:, 0].repeat(2)
        R = quat_to_rotmat(g.quats.data[idx])
        offset = (R @ (torch.randn(len(idx), 3) * scales[idx])[..., None])[..., 0]
        child = {k: getattr(g, k).data[idx] for k in GAUSSIAN_PARAMS}
        child["means"] = child["means"] + offset
        child["log_scales"] = child["log_scales"] - torch.log(torch.tensor(1.6))
        for k in GAUSSIAN_PARAMS:
            new[k].append(child[k])
    opacity = torch.sigmoid(g.logit_opacities.data)
    keep = ~split & (opacity >= cfg.min_opacity) & (scales.max(dim=1).values <= cfg.max_fraction * extent)
    _replace_rows(g, opt, keep, {k: torch.cat(v) for k, v in new.items()})
    stats.reset(len(g))
    return {
        "cloned": int(clone.sum()),
        "split": int(split.sum()),
        "pruned": int((~keep & ~split).sum()),
        "n": len(g),
    }
