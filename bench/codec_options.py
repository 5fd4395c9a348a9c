"""Codec options: downsampling factor, latent channels and loss, measured on held-out frames.

    python bench/codec_options.py --train data/pretrain/reach ... --heldout data/heldout/reach ... \
        [--steps 400] [--variants f8c4 f8c8 f8c16 f8c8w4 f16c32]

Each variant (``f<factor>c<latent channels>[w<object weight>]``, base width ``--width``) trains the
project's conv autoencoder for the same number of steps on the same frames (8 frames x all views per
batch, from every training store), then reconstructs held-out frames (``--frames`` per held-out
store, spread over its episodes). Reported: whole-frame PSNR/SSIM, object-pixel PSNR/SSIM (from the
stores' segmentation masks), the latent grid the denoiser would work on, parameters and seconds per
step. Targets (the pretrained-generator issue): PSNR >= 30 dB and object PSNR >= 24 dB. Writes JSON
under outputs/bench/codec_options/ and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

from enerverse.codec import ConvAutoencoder  # noqa: E402
from enerverse.core.config import ConfigError  # noqa: E402
from enerverse.core.errors import user_errors  # noqa: E402
from enerverse.core.frames import to_model  # noqa: E402
from enerverse.core.store import EpisodeStore  # noqa: E402
from enerverse.core.trainer import LossModule, Trainer, TrainSettings  # noqa: E402
from enerverse.metrics import masked_psnr, masked_ssim, psnr, ssim  # noqa: E402
from enerverse.train_data import Source, calibration_images, frame_batches  # noqa: E402


def parse_variant(name: str) -> dict:
    m = re.fullmatch(r"f(\d+)c(\d+)(?:w([\d.]+))?", name)
    if not m:
        raise ConfigError(f"variant {name!r} is not f<factor>c<channels>[w<object weight>], e.g. f8c8w4")
    return {"factor": int(m[1]), "latent_channels": int(m[2]), "object_weight": float(m[3] or 0.0)}


def heldout_frames(paths: list[str], per_store: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, H, W] in [-1, 1] and object masks [N, H, W] spread over each store's episodes."""
    imgs, masks = [], []
    for p in paths:
        store = EpisodeStore.open(p)
        eps = store.indices()
        for k in range(per_store):
            ep = store.episode(eps[k % len(eps)])
            t = (
                int(round((k // len(eps) + 0.5) / max(1, per_store // len(eps)) * (ep.length - 1)))
                % ep.length
            )
            imgs.append(ep.load("rgb", t))
            masks.append(ep.load("seg", t) > 0)
    x = to_model(np.concatenate(imgs))
    return x, torch.from_numpy(np.concatenate(masks))


@torch.no_grad()
def score(codec: ConvAutoencoder, x: torch.Tensor, m: torch.Tensor) -> dict:
    rec = torch.cat([codec(x[i : i + 32]) for i in range(0, len(x), 32)])
    return {
        "psnr": float(psnr(rec, x).mean()),
        "ssim": float(ssim(rec, x).mean()),
        "object_psnr": float(masked_psnr(rec, x, m).nanmean()),
        "object_ssim": float(masked_ssim(rec, x, m).nanmean()),
    }


def run_variant(name: str, args, sources: list[Source], x: torch.Tensor, m: torch.Tensor) -> dict:
    v = parse_variant(name)
    torch.manual_seed(0)
    codec = ConvAutoencoder(channels=args.width, **v)
    R, per = x.shape[-1], args.frames_per_batch
    s = TrainSettings(steps=args.steps, lr=args.lr, warmup_steps=0, ema_decay=0.0, ckpt_every=10**9,
                      weight_decay=1e-4)  # fmt: skip
    with tempfile.TemporaryDirectory() as run_dir:  # the one loop, as the codec stage uses
        trainer = Trainer(LossModule(codec, "loss"), s, Path(run_dir), {}, name=f"codec {name}")
        t0 = time.perf_counter()
        losses = trainer.fit(lambda st: frame_batches(sources, R, per, 0, st))
    codec.eval().calibrate(calibration_images(sources, R, per, 0, 2))
    row = {"variant": name, **v, "width": args.width, "steps": args.steps}
    row["seconds_per_step"] = (time.perf_counter() - t0) / args.steps
    row["params_M"] = sum(p.numel() for p in codec.parameters()) / 1e6
    row["latent_grid"] = x.shape[-1] // v["factor"]
    row["final_loss"] = float(np.mean(losses[-20:]))
    row.update(score(codec, x, m))
    print(
        f"{name:<10} latent {row['latent_grid']}x{row['latent_grid']}x{v['latent_channels']:<3} "
        f"PSNR {row['psnr']:.2f}  object PSNR {row['object_psnr']:.2f}  SSIM {row['ssim']:.3f}  "
        f"object SSIM {row['object_ssim']:.3f}  {row['seconds_per_step']:.2f} s/step",
        file=sys.stderr,
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", nargs="+", required=True, help="training stores (with seg masks)")
    ap.add_argument("--heldout", nargs="+", required=True, help="held-out stores (with seg masks)")
    ap.add_argument("--variants", nargs="+", default=["f8c4", "f8c8", "f8c16", "f8c8w4", "f16c32"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--frames-per-batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=40, help="held-out frames per held-out store")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sources = []
    for p in args.train:
        store = EpisodeStore.open(p)
        sources.append(Source(store, store.indices(), []))
    x, m = heldout_frames(args.heldout, args.frames)
    rows = [run_variant(v, args, sources, x, m) for v in args.variants]
    path = save_results("codec_options", {"meta": run_metadata(vars(args)), "rows": rows}, args.out)
    best = max(rows, key=lambda r: (r["psnr"] >= 30) + (r["object_psnr"] >= 24) + r["object_psnr"] / 100)
    print_summary({"best": best["variant"], "psnr": best["psnr"], "object_psnr": best["object_psnr"],
                   "results": str(path)})  # fmt: skip


if __name__ == "__main__":
    with user_errors():
        main()
