"""Frame stride: how hard copy-last-frame is to beat, and how far a chunk sees, at k = 1, 2, 4.

    python bench/frame_stride.py --stores data/heldout/reach data/heldout/pick_place ... [--starts 4]

The generator's frames are every k-th recorded frame (``generator.frame_stride``). For each store and
k, from several start frames per episode, the copy-last-frame baseline (repeat frame c) is scored
against the true frames c + k, ..., c + 8k (chunk 1) and c + 9k, ..., c + 16k (chunk 2): whole-frame
PSNR, object-pixel PSNR and moved-object PSNR (object pixels whose colour changed: where the arm
moves things) where the store has segmentation masks. Lower copy-last PSNR means the
future differs more from the present, so there is more for a model to predict. Also reported: the
time one chunk spans (8 k / fps), in seconds and in control steps, against the policy's 8-action
chunk. Prints a table, writes JSON under outputs/bench/frame_stride/ and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

from enerverse.core.frames import to_model  # noqa: E402
from enerverse.core.store import EpisodeStore  # noqa: E402
from enerverse.metrics import masked_psnr, moved_object_mask, psnr  # noqa: E402

CHUNK = 8


def copy_last_scores(store: EpisodeStore, k: int, starts: int) -> dict:
    """Mean copy-last PSNR (whole frame, objects) per chunk [2] over episodes and starts."""
    frame: dict[int, list[float]] = {1: [], 2: []}
    obj: dict[int, list[float]] = {1: [], 2: []}
    moved: dict[int, list[float]] = {1: [], 2: []}
    for e in store.indices():
        ep = store.episode(e)
        T = ep.length
        for c in np.linspace(0, max(0, T - 1 - k), starts).round().astype(int):
            for chunk in (1, 2):
                raw = c + k * np.arange((chunk - 1) * CHUNK + 1, chunk * CHUNK + 1)
                idx = raw[raw <= T - 1]
                if not len(idx):
                    continue
                real = to_model(ep.load("rgb", idx)).flatten(0, 1)  # [F*V, 3, H, W]
                last = to_model(ep.load("rgb", int(c)))  # [V, 3, H, W]
                last = last.repeat(len(idx), 1, 1, 1)
                frame[chunk].append(float(psnr(last, real).mean()))
                if ep.has("seg"):
                    masks = torch.from_numpy(ep.load("seg", idx)).flatten(0, 1)
                    now = torch.from_numpy(ep.load("seg", int(c))).repeat(len(idx), 1, 1)
                    obj[chunk].append(float(masked_psnr(last, real, masks > 0).nanmean()))
                    moved_mask = moved_object_mask(masks, now, real, last)
                    moved[chunk].append(float(masked_psnr(last, real, moved_mask).nanmean()))
    row = {f"copy_last_psnr_chunk{c}": float(np.mean(v)) if v else None for c, v in frame.items()}
    row.update({f"copy_last_object_psnr_chunk{c}": _nanmean(v) for c, v in obj.items()})
    row.update({f"copy_last_moved_psnr_chunk{c}": _nanmean(v) for c, v in moved.items()})
    return row


def _nanmean(values: list[float]) -> float | None:
    vals = [v for v in values if np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _pair(a: float | None, b: float | None) -> str:
    return f"{a if a is not None else float('nan'):.1f}/{b if b is not None else float('nan'):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stores", nargs="+", required=True)
    ap.add_argument("--strides", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--starts", type=int, default=4, help="start frames per episode")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for path in args.stores:
        store = EpisodeStore.open(path)
        ep0 = store.episode(store.indices()[0])
        fps, task = float(ep0.attrs["fps"]), ep0.attrs["task"]
        mean_len = float(np.mean([store.episode(e).length for e in store.indices()]))
        for k in args.strides:
            row = {
                "task": task,
                "stride": k,
                "chunk_seconds": CHUNK * k / fps,
                "chunk_control_steps": CHUNK * k,
            }
            row["generator_frames_per_episode"] = mean_len / k
            row.update(copy_last_scores(store, k, args.starts))
            rows.append(row)
    head = f"{'task':<13}{'k':>2}{'chunk s':>8}{'frames/ep':>10}{'copy-last c1/c2':>17}"
    print(f"{head}{'objects':>12}{'moved':>12}", file=sys.stderr)
    for r in rows:
        c = [r[f"copy_last_{m}psnr_chunk{i}"] for m in ("", "object_", "moved_") for i in (1, 2)]
        print(
            f"{r['task']:<13}{r['stride']:>2}{r['chunk_seconds']:>8.2f}{r['generator_frames_per_episode']:>10.1f}"
            f"{_pair(c[0], c[1]):>17}{_pair(c[2], c[3]):>12}{_pair(c[4], c[5]):>12}",
            file=sys.stderr,
        )
    mean = {
        k: float(np.mean([r["copy_last_psnr_chunk1"] for r in rows if r["stride"] == k]))
        for k in args.strides
    }
    path = save_results("frame_stride", {"meta": run_metadata(vars(args)), "rows": rows}, args.out)
    print_summary({"copy_last_psnr_chunk1_by_stride": mean, "results": str(path)})


if __name__ == "__main__":
    main()
