"""One rasteriser contract, three implementations (docs/data_engine.md).

:func:`rasterize` follows ``gsplat.rasterization``. Gaussians (means [N, 3], wxyz quats [N, 4],
activated scales [N, 3] and opacities [N], colours [N, D] or per camera [C, N, D]) seen by C
cameras (``viewmats`` [C, 4, 4] world->camera, ``Ks`` [C, 3, 3]) give ``(render [C, H, W, D'],
alpha [C, H, W, 1], meta)``. D' is D for ``"RGB"``; D + 1 for ``"RGB+D"`` (accumulated depth) and
``"RGB+ED"`` (expected depth: accumulated depth / alpha); 1 for ``"D"`` and ``"ED"``.

Compositing is front to back in depth order. A Gaussian adds nothing where its alpha is below
1/255, and a pixel stops once its transmittance would fall below 1e-4 (gsplat's rules), so the
backends agree.

Backends:
- ``"torch"``: the project's own differentiable tile rasteriser (CPU or any device). Gaussians are
  binned into 16x16-pixel tiles by their 3-sigma footprint, depth-sorted per tile and composited for
  all tiles at once as a padded [tiles, pixels, K] batch; autograd gives the gradients.
- ``"gsplat"``: ``gsplat.rasterization`` on CUDA, imported only when used (it has no CPU path).
- ``"reference"``: every Gaussian against every pixel, no tiles: slow and simple, the test oracle.

``"auto"`` picks gsplat when the tensors are on CUDA and gsplat imports, else ``"torch"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from data_engine.projection import Projected, gaussian_alpha, pixel_centres, project

MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "torch", "gsplat", "reference")
MIN_ALPHA = 1.0 / 255.0
MIN_TRANSMITTANCE = 1e-4
MAX_ALPHA = 0.99


def _weights(alpha: Tensor) -> Tensor:
    """Front-to-back compositing weights alpha_i T_i [..., K] of ``alpha`` [..., K] in depth order
    (T_i: the transmittance in front of i, a cumulative sum in log space: cumprod's backward is slow)."""
    alpha = torch.where(alpha < MIN_ALPHA, torch.zeros_like(alpha), alpha)
    with torch.no_grad():  # stop before the transmittance drops below 1e-4
        keep = torch.cumsum(torch.log1p(-alpha), -1) > math.log(MIN_TRANSMITTANCE)
    alpha = alpha * keep
    log_in_front = torch.cumsum(F.pad(torch.log1p(-alpha[..., :-1]), (1, 0)), -1)
    return alpha * torch.exp(log_in_front)


def _finish(acc: Tensor, acc_alpha: Tensor, mode: str, backgrounds: Tensor | None) -> tuple[Tensor, Tensor]:
    """Sums ``acc`` [C, H, W, D + 1] (colours, then depth) and alpha [C, H, W] -> (render, alpha) of
    ``mode``; the background fills the transmitted rest of the colour channels."""
    color, depth = acc[..., :-1], acc[..., -1:]
    alpha = acc_alpha[..., None]
    if backgrounds is not None:
        color = color + (1.0 - alpha) * backgrounds[:, None, None, :]
    if mode.endswith("ED"):
        depth = depth / alpha.clamp_min(1e-10)
    if mode.startswith("RGB+"):
        return torch.cat([color, depth], dim=-1), alpha
    return (color if mode == "RGB" else depth), alpha


def _reference(proj: Projected, opacities: Tensor, colors: Tensor, W: int, H: int) -> tuple[Tensor, Tensor]:
    """Every Gaussian at every pixel: sums [C, H, W, D + 1] and alpha [C, H, W]."""
    accs, alphas = [], []
    px = pixel_centres(W, H, colors.dtype).to(colors.device).reshape(-1, 1, 2)  # [P, 1, 2]
    for c in range(proj.depths.shape[0]):
        on = (proj.radii[c] > 0).nonzero()[:, 0]
        on = on[torch.argsort(proj.depths[c, on])]
        a = gaussian_alpha(opacities[on], proj.conics[c, on], px - proj.means2d[c, on])  # [P, K]
        col = colors[c] if colors.ndim == 3 else colors
        vals = torch.cat([col[on], proj.depths[c, on, None]], dim=-1)  # [K, D + 1]
        w = _weights(a)
        accs.append((w @ vals).reshape(H, W, -1))
        alphas.append(w.sum(-1).reshape(H, W))
    return torch.stack(accs), torch.stack(alphas)


@torch.no_grad()
def bin_tiles(proj: Projected, width: int, height: int, tile: int = 16) -> tuple[Tensor, Tensor]:
    """Assign projected Gaussians to tiles: ``(tiles [T'], index [T', K])`` for the T' non-empty tiles
    (ids c * TY * TX + ty * TX + tx), ``index`` the flat (camera * N + gaussian) ids of each tile in
    depth order, padded with -1."""
    C, N = proj.depths.shape
    TX, TY = -(-width // tile), -(-height // tile)
    r = proj.radii
    u, v = proj.means2d[..., 0], proj.means2d[..., 1]
    x0 = ((u - r) / tile).floor().clamp(0, TX - 1).long()
    x1 = ((u + r) / tile).floor().clamp(0, TX - 1).long()
    y0 = ((v - r) / tile).floor().clamp(0, TY - 1).long()
    y1 = ((v + r) / tile).floor().clamp(0, TY - 1).long()
    w = x1 - x0 + 1
    count = torch.where(r > 0, w * (y1 - y0 + 1), torch.zeros_like(w)).reshape(-1)  # [C * N]
    flat = torch.repeat_interleave(torch.arange(C * N, device=r.device), count)
    j = torch.arange(len(flat), device=r.device) - torch.repeat_interleave(
        torch.cumsum(count, 0) - count, count
    )
    wf = w.reshape(-1)[flat]
    tx, ty = x0.reshape(-1)[flat] + j % wf, y0.reshape(-1)[flat] + j // wf
    tile_id = (flat // N) * (TX * TY) + ty * TX + tx
    order = torch.argsort(proj.depths.reshape(-1)[flat], stable=True)  # depth first, then tile (stable)
    order = order[torch.argsort(tile_id[order], stable=True)]
    tile_id, flat = tile_id[order], flat[order]
    tiles, per_tile = torch.unique_consecutive(tile_id, return_counts=True)
    K = int(per_tile.max()) if len(per_tile) else 0
    row = torch.repeat_interleave(torch.arange(len(tiles), device=r.device), per_tile)
    col = torch.arange(len(flat), device=r.device) - torch.repeat_interleave(
        torch.cumsum(per_tile, 0) - per_tile, per_tile
    )
    index = torch.full((len(tiles), K), -1, dtype=torch.long, device=r.device)
    index[row, col] = flat
    return tiles, index


def _tile_sums(packed: Tensor, feats: Tensor, origin: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Sums [T', P, D + 1] and alpha [T', P] of T' tiles: ``packed`` [C * N, 7 + D] the per-camera
    Gaussian attributes (means2d 2, conic 3, opacity 1, depth 1, colour D), ``feats`` [P, 6] the
    tiles' pixel-centre monomials, ``origin`` [T', 2] the tiles' corners, ``index`` [T', K] their
    depth-ordered Gaussian ids (-1: padding)."""
    g = packed[index.clamp_min(0)]  # [T', K, 7 + D]: one gather (one scatter-add backward)
    mx, my = (g[..., 0] - origin[:, :1]), (g[..., 1] - origin[:, 1:])  # tile-local means [T', K]
    a, b, c = g[..., 2], g[..., 3], g[..., 4]
    # the exponent -0.5 (a dx^2 + 2 b dx dy + c dy^2) as a polynomial in the pixel (u, v): one bmm
    coeffs = torch.stack(
        [-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx,
         -0.5 * (a * mx * mx + c * my * my) - b * mx * my],
        dim=1,
    )  # fmt: skip  # [T', 6, K]
    power = torch.matmul(feats, coeffs).clamp_max(0.0)  # [T', P, K]
    op = g[..., 5] * (index >= 0)
    w = _weights((op[:, None] * torch.exp(power)).clamp_max(MAX_ALPHA))  # [T', P, K]
    vals = torch.cat([g[..., 7:], g[..., 6:7]], dim=-1)  # colour, depth [T', K, D + 1]
    return torch.bmm(w, vals), w.sum(-1)


def _tiled(
    proj: Projected, opacities: Tensor, colors: Tensor, W: int, H: int, tile: int = 16, group: int = 8
) -> tuple[Tensor, Tensor]:
    """The tile rasteriser: sums [C, H, W, D + 1] and alpha [C, H, W]. Tiles are composited ``group``
    at a time in order of their Gaussian count, each group padded only to its own largest count."""
    C = proj.depths.shape[0]
    D = colors.shape[-1]
    TX, TY = -(-W // tile), -(-H // tile)
    tiles, index = bin_tiles(proj, W, H, tile)
    acc = colors.new_zeros(C * TY * TX, tile * tile, D + 1)
    acc_alpha = colors.new_zeros(C * TY * TX, tile * tile)
    packed = torch.cat(
        [proj.means2d.reshape(-1, 2), proj.conics.reshape(-1, 3), opacities.repeat(C)[:, None],
         proj.depths.reshape(-1, 1), colors.reshape(-1, D) if colors.ndim == 3 else colors.repeat(C, 1)],
        dim=-1,
    )  # fmt: skip
    u, v = pixel_centres(tile, tile, colors.dtype).to(colors.device).reshape(-1, 2).unbind(-1)
    feats = torch.stack([u * u, v * v, u * v, u, v, torch.ones_like(u)], dim=-1)  # [P, 6]
    t_xy = tiles % (TX * TY)
    origin = torch.stack([(t_xy % TX) * tile, (t_xy // TX) * tile], dim=-1).to(colors.dtype)  # [T', 2]
    counts = (index >= 0).sum(1)
    order = torch.argsort(counts, descending=True)
    parts = [
        _tile_sums(packed, feats, origin[rows], index[rows, : int(counts[rows[0]])])
        for rows in order.split(group)
        if len(rows)
    ]
    if parts:
        acc = acc.index_put((tiles[order],), torch.cat([p[0] for p in parts]))
        acc_alpha = acc_alpha.index_put((tiles[order],), torch.cat([p[1] for p in parts]))
    acc = acc.reshape(C, TY, TX, tile, tile, D + 1).permute(0, 1, 3, 2, 4, 5)
    acc_alpha = acc_alpha.reshape(C, TY, TX, tile, tile).permute(0, 1, 3, 2, 4)
    acc, acc_alpha = acc.reshape(C, TY * tile, TX * tile, D + 1), acc_alpha.reshape(C, TY * tile, TX * tile)
    return acc[:, :H, :W], acc_alpha[:, :H, :W]


def _gsplat_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:  # gsplat missing or its CUDA build failing: the torch backend serves
        return False
    return True


def _check(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor,
           Ks: Tensor, mode: str, backend: str) -> None:  # fmt: skip
    N = means.shape[0]
    if means.shape != (N, 3) or quats.shape != (N, 4) or scales.shape != (N, 3) or opacities.shape != (N,):
        raise ValueError(
            f"expected means [N, 3], quats [N, 4], scales [N, 3], opacities [N]; got {tuple(means.shape)}, "
            f"{tuple(quats.shape)}, {tuple(scales.shape)}, {tuple(opacities.shape)}"
        )
    C = viewmats.shape[0]
    if not (colors.ndim == 2 and colors.shape[0] == N) and not (
        colors.ndim == 3 and colors.shape[:2] == (C, N)
    ):
        raise ValueError(f"expected colours [N={N}, D] or [C={C}, N, D], got {tuple(colors.shape)}")
    if viewmats.shape != (C, 4, 4) or Ks.shape != (C, 3, 3):
        raise ValueError(
            f"expected viewmats [C, 4, 4] and Ks [C, 3, 3], got {tuple(viewmats.shape)}, {tuple(Ks.shape)}"
        )
    if mode not in MODES:
        raise ValueError(f"render_mode must be one of {', '.join(MODES)}, got {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    backend: str = "auto",
    tile_size: int = 16,
) -> tuple[Tensor, Tensor, dict]:
    """Render Gaussians into C cameras (see module docstring); ``meta`` holds ``means2d`` [C, N, 2],
    ``depths`` [C, N], ``radii`` [C, N] and the backend used."""
    _check(means, quats, scales, opacities, colors, viewmats, Ks, render_mode, backend)
    if backend == "auto":
        backend = "gsplat" if _gsplat_available(means.device) else "torch"
    if backend == "gsplat":
        from data_engine.gsplat_backend import rasterize_gsplat

        return rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
            eps2d, backgrounds, render_mode, tile_size,
        )  # fmt: skip
    proj = project(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
    if backend == "reference":
        acc, alpha = _reference(proj, opacities, colors, width, height)
    else:
        acc, alpha = _tiled(proj, opacities, colors, width, height, tile_size)
    render, alpha = _finish(acc, alpha, render_mode, backgrounds)
    meta = {"means2d": proj.means2d, "depths": proj.depths, "radii": proj.radii, "backend": backend}
    return render, alpha, meta
