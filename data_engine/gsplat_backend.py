"""The CUDA backend of :func:`data_engine.raster.rasterize`: ``gsplat.rasterization``.

gsplat has no CPU kernels, so it is imported here only, when a caller asks for CUDA rendering. Its
outputs follow the same contract as the torch backend (the parity test, tests/test_raster.py, marked
``gpu``, checks them against each other).
"""

from __future__ import annotations

from torch import Tensor


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    backgrounds: Tensor | None,
    render_mode: str,
    tile_size: int,
) -> tuple[Tensor, Tensor, dict]:
    """``gsplat.rasterization`` with the project's argument order; (render, alpha, meta)."""
    if means.device.type != "cuda":
        raise ValueError("the gsplat backend needs CUDA tensors (gsplat has no CPU path); use backend=torch")
    try:
        from gsplat import rasterization
    except ImportError as e:
        raise ValueError(f"backend=gsplat: gsplat does not import here ({e}); use backend=torch") from None
    render, alpha, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, backgrounds=backgrounds,
        render_mode=render_mode, tile_size=tile_size, packed=False,
    )  # fmt: skip
    return (
        render,
        alpha,
        {
            "means2d": meta["means2d"],
            "depths": meta["depths"],
            "radii": meta["radii"],
            "backend": "gsplat",
        },
    )
