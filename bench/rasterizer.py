"""Rasteriser speed: forward and forward+backward of the CPU tile backend (and gsplat on CUDA).

    python bench/rasterizer.py                      # 64² and 128², 1k and 5k Gaussians, 4 views
    python bench/rasterizer.py --sizes 64 --gaussians 1000 --repeats 10

The scene: Gaussians spread over a 1 m tabletop-sized box (scales 0.5-2 cm, the size the data engine
fits), seen by 4 cameras 1.3 m away that frame it. Reports the median milliseconds per call and, as
the baseline measured in the same run, the dense reference (every Gaussian at every pixel) where it
fits in memory, so ``speedup`` is the tiling's gain. JSON under outputs/bench/rasterizer/.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

from data_engine.raster import rasterize  # noqa: E402
from enerverse.core.camera import intrinsics_from_fovy, look_at  # noqa: E402


def bench_scene(n: int, size: int, views: int = 4, device: str = "cpu", seed: int = 0) -> dict:
    """Gaussian parameters (requires_grad) and cameras of the benchmark scene."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.tensor([0.5, 0.0, 0.1])
    scene = {
        "means": centre + (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.8, 0.8, 0.2]),
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.rand(n, 3, generator=g) * 0.015 + 0.005,
        "opacities": torch.rand(n, generator=g) * 0.8 + 0.1,
        "colors": torch.rand(n, 3, generator=g),
    }
    eyes = [centre.numpy() + 1.3 * torch.tensor([math.cos(a), math.sin(a), 0.6]).numpy()
            for a in torch.linspace(0, 2 * math.pi, views + 1)[:-1].tolist()]  # fmt: skip
    vm = torch.stack([torch.from_numpy(look_at(e, centre.numpy())).float() for e in eyes])
    K = torch.from_numpy(intrinsics_from_fovy(50.0, size, size)).float().expand(views, 3, 3)
    out = {k: v.to(device).requires_grad_(True) for k, v in scene.items()}
    return {**out, "viewmats": vm.to(device), "Ks": K.to(device).contiguous()}


def time_call(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    fn()
    ts = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(1000 * (time.perf_counter() - t))
    return statistics.median(ts)


def measure(n: int, size: int, backend: str, repeats: int, device: str = "cpu") -> dict:
    s = bench_scene(n, size, device=device)

    def forward():
        with torch.no_grad():
            rasterize(**s, width=size, height=size, render_mode="RGB+ED", backend=backend)

    def forward_backward():
        out, alpha, _ = rasterize(**s, width=size, height=size, render_mode="RGB+ED", backend=backend)
        (out.sum() + alpha.sum()).backward()

    return {"forward_ms": round(time_call(forward, repeats), 2),
            "forward_backward_ms": round(time_call(forward_backward, repeats), 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--gaussians", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = []
    for size in a.sizes:
        for n in a.gaussians:
            row = {"size": size, "gaussians": n, "views": 4, "torch": measure(n, size, "torch", a.repeats)}
            if n * size * size * 4 <= 2e7:  # the dense reference where it fits
                row["reference"] = measure(n, size, "reference", max(1, a.repeats // 2))
                row["speedup_fwd_bwd"] = round(
                    row["reference"]["forward_backward_ms"] / row["torch"]["forward_backward_ms"], 2
                )
            if torch.cuda.is_available():
                try:
                    row["gsplat_cuda"] = measure(n, size, "gsplat", a.repeats, "cuda")
                except Exception as e:  # gsplat missing or failing: say so in the results
                    row["gsplat_cuda"] = {"error": str(e)[:200]}
            rows.append(row)
            print(row, flush=True)
    results = {**run_metadata(vars(a)), "threads": torch.get_num_threads(), "rows": rows}
    path = save_results("rasterizer", results, a.out)
    print_summary({"results": str(path), "rows": len(rows)})


if __name__ == "__main__":
    main()
