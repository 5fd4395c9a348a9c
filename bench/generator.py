"""Generator speed: training steps/s and chunk generation latency per preset.

    python bench/generator.py [--presets tiny,small] [--batch 2] [--steps 5]

For each preset: denoiser parameters, training steps/s (batch of memory + chunk windows, all views,
random frames at the preset resolution) and the latency of generating one chunk (M frames x V views,
10 DDIM steps) after a warm-up call. ``base`` runs only where CUDA is available (bf16 autocast).
The baseline, measured in the same run, is one denoiser forward pass: latency / (steps x forward)
shows the sampler's overhead. Writes JSON under outputs/bench/generator/ and prints one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

from enerverse.core.camera import (  # noqa: E402
    intrinsics_from_fovy,
    look_at,
    ray_maps,  # noqa: E402
    rotate_about_z,
)
from enerverse.generator import EnerVerseGenerator  # noqa: E402
from enerverse.presets import get_preset  # noqa: E402


def make_batch(g: EnerVerseGenerator, B: int) -> dict:
    cfg = g.cfg
    V, R, m, M = cfg.num_views, cfg.resolution, cfg.memory.n_memory, cfg.memory.chunk
    main = look_at([1.3, 0.0, 0.75], [0.42, 0.0, 0.08])
    cams = np.stack([np.stack([rotate_about_z(main, 30.0 * v, [0.5, 0.0, 0.0])] * (m + M)) for v in range(V)])
    K = np.stack([intrinsics_from_fovy(50.0, R, R)] * V)
    rays = torch.from_numpy(ray_maps(K, cams, R, g.latent_size))
    return {
        "frames": torch.rand(B, V, m + M, 3, R, R) * 2 - 1,
        "rays": rays[None].expand(B, *rays.shape).clone(),
        "pos": torch.tensor([list(range(-m + 1, 1)) + list(range(1, M + 1))] * B, dtype=torch.float32),
        "instruction": ["put the red cube on the blue plate"] * B,
    }


def bench_preset(name: str, device: str, batch: int, steps: int) -> dict:
    cfg = get_preset(name)
    if cfg.codec.kind != "conv":
        cfg.codec.kind, cfg.codec.channels = "conv", 64  # no pretrained KL folder here: same latent shape
    g = EnerVerseGenerator(cfg).to(device)
    b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in make_batch(g, batch).items()}
    opt = torch.optim.AdamW(g.denoiser.parameters(), lr=1e-4)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def train_step() -> None:
        with amp:
            loss, _ = g.training_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    train_sps = steps / (time.perf_counter() - t0)
    g.eval()
    m = cfg.memory.n_memory
    with torch.no_grad(), amp:
        mem = g.encode(b["frames"][:1])[:, :, :, :m]
        args = (mem, b["rays"][:1], b["pos"][:1], b["instruction"][:1])
        g.sample_chunk(*args, steps=10, seed=0)
        sync()
        t0 = time.perf_counter()
        g.sample_chunk(*args, steps=10, seed=0)
        sync()
        latency = time.perf_counter() - t0
        x = torch.cat([mem, torch.randn_like(g.encode(b["frames"][:1])[:, :, :, m:])], dim=3)
        tok, mask = g.text_tokens(b["instruction"][:1])
        t = torch.full((1, x.shape[3]), 500, device=device)
        g.denoiser(x, b["rays"][:1], t, b["pos"][:1], tok, mask)
        sync()
        t0 = time.perf_counter()
        g.denoiser(x, b["rays"][:1], t, b["pos"][:1], tok, mask)
        sync()
        fwd = time.perf_counter() - t0
    return {
        "preset": name,
        "device": device,
        "resolution": cfg.resolution,
        "views": cfg.num_views,
        "chunk": cfg.memory.chunk,
        "memory": m,
        "denoiser_params_M": g.denoiser.num_parameters() / 1e6,
        "batch": batch,
        "train_steps_per_s": train_sps,
        "chunk_latency_s_10_ddim": latency,
        "forward_s": fwd,
        "sampler_overhead_ratio": latency / (10 * fwd),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = [bench_preset(p, "cpu", args.batch, args.steps) for p in args.presets.split(",")]
    if torch.cuda.is_available():
        rows += [bench_preset(p, "cuda", args.batch, args.steps) for p in ("small", "base")]
    print(
        f"{'preset':>7} {'device':>6} {'params M':>9} {'train step/s':>13} {'chunk s (10 DDIM)':>18}",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"{r['preset']:>7} {r['device']:>6} {r['denoiser_params_M']:>9.2f} "
            f"{r['train_steps_per_s']:>13.2f} {r['chunk_latency_s_10_ddim']:>18.3f}",
            file=sys.stderr,
        )
    path = save_results("generator", {"meta": run_metadata(vars(args)), "rows": rows}, args.out)
    print_summary(
        {
            r["preset"] + "_" + r["device"]: {
                "train_steps_per_s": r["train_steps_per_s"],
                "chunk_latency_s": r["chunk_latency_s_10_ddim"],
            }
            for r in rows
        }
        | {"results": str(path)}
    )


if __name__ == "__main__":
    main()
