"""Codec inference speed: the memory order the CPU path uses (channels-last) against the default one.

    python bench/codec_speed.py [--frames 48] [--repeats 6] [--generator checkpoints/generator_pretrained]

The codec encodes every frame EnerVerse-A reads (feature caching, latent caches, the runtime's memory
frames) and decodes every imagined frame, so its CPU speed is part of `make train` and `ev-eval`.
Without autograd on the CPU, ``ConvAutoencoder`` runs in channels-last order; the baseline here calls
the same encoder and decoder modules on default-order tensors. ``frames`` images of the generator's
resolution (one view each), random pixels (speed does not depend on content). Variants are timed in
turn, one call each per round, so both see the same load. Reported: median seconds per call, frames
per second, the ratio to the default order, and the largest difference between the two outputs.
JSON under outputs/bench/codec_speed/.
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

from enerverse.io import load_generator  # noqa: E402


def timed(fn, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    y = fn(x)
    return time.perf_counter() - t0, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generator", default="checkpoints/generator_pretrained")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    gen = load_generator(args.generator)
    codec, R = gen.codec.eval(), gen.cfg.resolution
    torch.manual_seed(0)
    x = torch.rand(args.frames, 3, R, R) * 2 - 1  # [N, 3, R, R]
    with torch.no_grad():
        z = codec.encode_raw(x)
        variants = {
            "encode_default": (codec.encoder, x),
            "encode_channels_last": (codec.encode_raw, x),
            "decode_default": (codec.decoder, z),
            "decode_channels_last": (codec.decode_raw, z),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        outputs: dict[str, torch.Tensor] = {}
        for fn, inp in variants.values():
            timed(fn, inp)  # warm-up
        for _ in range(args.repeats):
            for name, (fn, inp) in variants.items():
                dt, outputs[name] = timed(fn, inp)
                times[name].append(dt)
    rows = {}
    for name, ts in times.items():
        s, base = float(np.median(ts)), float(np.median(times[name.split("_")[0] + "_default"]))
        rows[name] = {"s_per_call": s, "frames_per_s": args.frames / s, "ratio_to_default": s / base}
        print(f"{name:>22}  {s:6.3f} s  {args.frames / s:6.1f} frames/s  x{s / base:4.2f}", file=sys.stderr)
    diff = {
        k: float((outputs[f"{k}_default"] - outputs[f"{k}_channels_last"]).abs().max())
        for k in ("encode", "decode")
    }
    meta = run_metadata({**vars(args), "resolution": R})
    path = save_results("codec_speed", {"meta": meta, "rows": rows, "max_abs_diff": diff}, args.out)
    print_summary({**{k: round(v["ratio_to_default"], 3) for k, v in rows.items()}, "results": str(path)})


if __name__ == "__main__":
    main()
