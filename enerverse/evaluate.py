"""``ev-eval-generator``: how well EnerVerse-G predicts held-out futures.

    ev-eval-generator checkpoint=outputs/train_generator/<run>/checkpoint store=data/pick_place

For held-out episodes (the training run's split, or all episodes of ``store``) the model starts from
real context frames and rolls out ``chunks`` chunks autoregressively (its own frames become memory).
Reported per chunk index and per view:
- PSNR / SSIM of predicted frames against the real ones, next to the copy-last-frame baseline
  (repeat the last context frame) in the same run; and the same on object pixels only
  (``object_psnr``/``object_ssim``) and on the object pixels that moved (``moved_psnr``: where the
  arm moves things, see :func:`enerverse.metrics.moved_object_mask`) when the store recorded
  segmentation masks (``ev-collect seg=true``; without them a note says so and the whole-frame
  metrics are still reported);
- multi-view consistency: photometric error of warping one view into another through sim depth,
  predicted vs real (lower is better; the real frames give the floor);
- EoS timing: where generation would stop (first frame within ``eos_threshold`` of the EoS latent)
  against the true episode end;
- the same model rolled out with consecutive memory (the latest 4 frames instead of 3 spread over the
  history + the latest): the sparse-memory ablation at inference (``memory_ablation``).
Optionally ``compare=<checkpoint>`` evaluates a second model on the same windows (e.g. consecutive
memory for the sparse-memory ablation). Writes results.json and a video grid; ends with one JSON line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from enerverse.core.config import ConfigError, parse_cli, save_config
from enerverse.core.device import pick_device
from enerverse.core.errors import user_errors
from enerverse.core.outputs import make_output_dir, print_summary, write_json_atomic
from enerverse.core.progress import progress
from enerverse.core.store import EpisodeStore
from enerverse.core.store.sampler import chunk_indices
from enerverse.data import load_frames
from enerverse.io import check_store_matches, load_generator, split_episodes
from enerverse.metrics import depth_warp_error, masked_psnr, masked_ssim, moved_object_mask, psnr, ssim


@dataclass
class EvalGeneratorConfig:
    """Settings of ``ev-eval-generator``."""

    checkpoint: str = ""
    """generator checkpoint folder (<run>/checkpoint)"""
    store: str = ""
    """episode store with the real episodes (depth enables the consistency metric)"""
    compare: str | None = None
    """a second checkpoint evaluated on the same windows (e.g. consecutive-memory ablation)"""
    episodes: int = 8
    """held-out episodes evaluated"""
    starts_per_episode: int = 2
    """context start points per episode (spread over the first half)"""
    chunks: int = 2
    """chunks rolled out per start"""
    steps: int = 10
    """DDIM steps per chunk"""
    memory_ablation: bool = True
    """also roll the same model out with the other memory mode (consecutive for a sparse-memory model)"""
    heldout_only: bool = True
    """use the training run's held-out split (needs train settings in the checkpoint)"""
    seed: int = 0
    device: str = "cpu"
    out: str | None = None

    def validate(self) -> None:
        if not self.checkpoint or not self.store:
            raise ConfigError("checkpoint=<folder> and store=<episode store> are required")
        for k in ("episodes", "starts_per_episode", "chunks", "steps"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k} must be positive, got {getattr(self, k)}")


def pick_episodes(cfg: EvalGeneratorConfig, model, store: EpisodeStore) -> list[int]:
    """Held-out episodes of the training run (or every episode), at most ``cfg.episodes``."""
    train = getattr(model, "train_config", None) or {}
    if cfg.heldout_only and train:
        task = None if train.get("stores") else train.get("task")  # multi-store runs split each store whole
        _, held = split_episodes(store, train.get("holdout", 0.1), train.get("seed", 0), task=task)
        eps = held
    else:
        eps = store.indices()
    if not eps:
        raise ConfigError(f"no episodes to evaluate in {store.path}")
    return eps[: cfg.episodes]


@torch.no_grad()
def rollout(
    model,
    store: EpisodeStore,
    e: int,
    start: int,
    chunks: int,
    steps: int,
    seed: int,
    memory_mode: str | None = None,
) -> dict:
    """Predict ``chunks`` chunks after frame ``start`` of episode ``e``; returns real/pred/baseline.

    Context and future frames lie on the generator's grid: every ``frame_stride``-th recorded frame
    up to ``start`` and after it."""
    cfg = model.cfg
    M, R, k = cfg.memory.chunk, cfg.resolution, cfg.frame_stride
    T = store.episode(e).length
    ctx_idx = np.arange(start % k, start + 1, k)
    fut_idx, in_episode = chunk_indices(start, chunks * M, k, T)  # past the end: the last grid frame
    frames, K = load_frames(store, e, np.concatenate([ctx_idx, fut_idx]), R)  # [V, Tc+F, 3, R, R]
    cams = store.episode(e).load("T_cam_world", int(start))  # [V, 4, 4] (static rig: reused for the future)
    instruction = str(store.episode(e).attrs["instruction"])
    ctx, real = frames[:, : len(ctx_idx)], frames[:, len(ctx_idx) :]
    past_end = torch.from_numpy(~in_episode)
    res = model.generate(
        ctx,
        K,
        cams,
        instruction,
        max_chunks=chunks,
        steps=steps,
        seed=seed,
        stop_at_eos=False,
        memory_mode=memory_mode,
    )
    pred = res.frames.cpu()
    baseline = ctx[:, -1:].expand_as(real)
    return {
        "real": real,
        "pred": pred,
        "baseline": baseline,
        "past_end": past_end,
        "K": K,
        "cams": cams,
        "eos_pred": res.eos_frame,
        "eos_true": int((T - 1 - start) // k),
        "future_idx": fut_idx,
        "episode": e,
        "start": start,
    }


FRAME_METRICS = ("psnr", "baseline_psnr", "ssim", "baseline_ssim")
OBJECT_METRICS = (
    "object_psnr",
    "baseline_object_psnr",
    "moved_psnr",
    "baseline_moved_psnr",
    "object_ssim",
    "baseline_object_ssim",
)


def score(r: dict, store: EpisodeStore, M: int) -> dict:
    """Per-frame metrics [V, F] of one rollout (whole frame, and object pixels when the store has
    segmentation masks), grouped by chunk index and view."""
    valid = ~r["past_end"]
    real, pred, base = (r[k][:, valid].flatten(0, 1) for k in ("real", "pred", "baseline"))
    V, F_ = r["real"].shape[0], int(valid.sum())
    out = {
        "psnr": psnr(pred, real).view(V, F_),
        "baseline_psnr": psnr(base, real).view(V, F_),
        "ssim": ssim(pred, real).view(V, F_),
        "baseline_ssim": ssim(base, real).view(V, F_),
        "chunk_of": (torch.arange(F_) // M).tolist(),
    }
    ep = store.episode(r["episode"])
    idx = r["future_idx"][valid.numpy()]
    if ep.has("seg"):
        seg = torch.from_numpy(ep.load("seg", np.concatenate([idx, [r["start"]]])) > 0).permute(1, 0, 2, 3)
        if seg.shape[-1] != real.shape[-1]:  # [V, F + 1, H, W] object pixels (the present frame last)
            seg = F.interpolate(seg.float(), size=real.shape[-2:], mode="nearest").bool()
        masks = seg[:, :-1].flatten(0, 1)
        now = seg[:, -1:].expand(V, F_, *seg.shape[2:]).flatten(0, 1)
        moved = moved_object_mask(masks, now, real, base)  # base repeats the present frame
        out["object_psnr"] = masked_psnr(pred, real, masks).view(V, F_)
        out["baseline_object_psnr"] = masked_psnr(base, real, masks).view(V, F_)
        out["moved_psnr"] = masked_psnr(pred, real, moved).view(V, F_)
        out["baseline_moved_psnr"] = masked_psnr(base, real, moved).view(V, F_)
        out["object_ssim"] = masked_ssim(pred, real, masks).view(V, F_)
        out["baseline_object_ssim"] = masked_ssim(base, real, masks).view(V, F_)
    if ep.has("depth") and V > 1:
        depth = torch.from_numpy(ep.load("depth", idx).astype(np.float32))  # [F, V, H, W]
        if depth.shape[-1] != real.shape[-1]:
            depth = F.interpolate(depth, size=real.shape[-2:], mode="nearest")
        pred_v, real_v = pred.view(V, F_, *pred.shape[1:]), real.view(V, F_, *real.shape[1:])
        out["consistency"] = depth_warp_error(pred_v, depth, r["K"], r["cams"])
        out["consistency_real"] = depth_warp_error(real_v, depth, r["K"], r["cams"])
    return out


def _nanmean(t: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean ignoring NaN (object metrics are NaN in frames where no object is visible)."""
    return t.nanmean() if dim is None else t.nanmean(dim=dim)


def aggregate(scores: list[dict], chunks: int, V: int) -> dict:
    """Means per chunk index (and per view for PSNR); object metrics where masks were recorded."""
    keys = FRAME_METRICS + tuple(k for k in OBJECT_METRICS if all(k in s for s in scores))
    table: dict = {"per_chunk": []}
    for c in range(chunks):
        row: dict = {"chunk": c + 1}
        for k in keys:
            vals = [s[k][:, [i for i, ci in enumerate(s["chunk_of"]) if ci == c]] for s in scores]
            vals = [v for v in vals if v.numel()]
            if vals:
                cat = torch.cat(vals, dim=1)
                row[k] = float(_nanmean(cat))
                if k in ("psnr", "object_psnr"):
                    row[f"{k}_per_view"] = [float(x) for x in _nanmean(cat, dim=1)]
        table["per_chunk"].append(row)
    for k in keys:
        table[k] = float(np.nanmean([float(_nanmean(s[k])) for s in scores]))
    cons = [s["consistency"] for s in scores if "consistency" in s]
    if cons:
        table["consistency"] = float(np.mean(cons))
        table["consistency_real"] = float(
            np.mean([s["consistency_real"] for s in scores if "consistency" in s])
        )
    return table


def evaluate_model(
    model, store: EpisodeStore, eps: list[int], cfg: EvalGeneratorConfig, memory_mode: str | None = None
) -> tuple[dict, list]:
    """Roll out and score every (episode, start); returns the aggregate and the rollouts."""
    M = model.cfg.memory.chunk
    scores, rolls, eos_err = [], [], []
    jobs = []
    for e in eps:
        T = store.episode(e).length
        for s in (
            np.linspace(
                model.cfg.memory.n_memory, max(model.cfg.memory.n_memory, T // 2), cfg.starts_per_episode
            )
            .round()
            .astype(int)
        ):
            jobs.append((e, int(min(s, T - 2))))
    desc = "rollouts" if memory_mode is None else f"rollouts ({memory_mode} memory)"
    for k, (e, s) in enumerate(progress(jobs, desc=desc, unit="rollout")):
        r = rollout(model, store, e, s, cfg.chunks, cfg.steps, cfg.seed + k, memory_mode)
        scores.append(score(r, store, M))
        rolls.append(r)
        if r["eos_true"] < cfg.chunks * M:  # the true end lies inside the rolled-out horizon
            eos_err.append(
                abs((r["eos_pred"] if r["eos_pred"] is not None else cfg.chunks * M) - r["eos_true"])
            )
    agg = aggregate(scores, cfg.chunks, model.cfg.num_views)
    agg["eos_timing_error_frames"] = float(np.mean(eos_err)) if eos_err else None
    agg["rollouts"] = len(jobs)
    return agg, rolls


def run(cfg: EvalGeneratorConfig, out_dir: Path) -> dict:
    """Evaluate the checkpoint (and the comparison one); write results and a video grid."""
    from enerverse.samples import write_rollout_grid

    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    store = EpisodeStore.open(cfg.store)
    model = load_generator(cfg.checkpoint, device)
    check_store_matches(model, store, f"checkpoint={cfg.checkpoint}")
    eps = pick_episodes(cfg, model, store)
    main, rolls = evaluate_model(model, store, eps, cfg)
    results = {"checkpoint": cfg.checkpoint, "episodes": eps, "model": main}
    if not all(store.episode(e).has("seg") for e in eps):
        note = (
            f"{cfg.store} has no segmentation masks, so object-pixel metrics are skipped (whole-frame "
            "metrics follow); collect a store with ev-collect seg=true for them"
        )
        print(f"note: {note}", file=sys.stderr)
        results["object_metrics"] = note
    other_mode = "sparse" if model.cfg.memory.mode == "consecutive" else "consecutive"
    if cfg.memory_ablation:
        results[f"{other_mode}_memory"], _ = evaluate_model(model, store, eps, cfg, other_mode)
    if cfg.compare:
        other = load_generator(cfg.compare, device)
        check_store_matches(other, store, f"compare={cfg.compare}")
        results["compare"], _ = evaluate_model(other, store, eps, cfg)
        results["compare_checkpoint"] = cfg.compare
    write_json_atomic(out_dir / "results.json", results)
    video = write_rollout_grid(rolls[:2], out_dir / "rollouts")
    summary = {
        "psnr": main["psnr"],
        "baseline_psnr": main["baseline_psnr"],
        "ssim": main["ssim"],
        **{k: main[k] for k in OBJECT_METRICS if k in main},
        **{f"{k}_per_chunk": [r.get(k) for r in main["per_chunk"]] for k in OBJECT_METRICS[:4] if k in main},
        "consistency": main.get("consistency"),
        "consistency_real": main.get("consistency_real"),
        "psnr_per_chunk": [r.get("psnr") for r in main["per_chunk"]],
        "baseline_psnr_per_chunk": [r.get("baseline_psnr") for r in main["per_chunk"]],
        "eos_timing_error_frames": main["eos_timing_error_frames"],
        "rollouts": main["rollouts"],
        "video": str(video),
        "out": str(out_dir),
    }
    if cfg.memory_ablation:
        abl = results[f"{other_mode}_memory"]
        summary[f"{other_mode}_memory_psnr"] = abl["psnr"]
        summary[f"{other_mode}_memory_psnr_per_chunk"] = [r.get("psnr") for r in abl["per_chunk"]]
    if cfg.compare:
        summary["compare_psnr"] = results["compare"]["psnr"]
        summary["compare_psnr_per_chunk"] = [r.get("psnr") for r in results["compare"]["per_chunk"]]
    return summary


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-eval-generator``."""
    cfg = parse_cli(EvalGeneratorConfig, argv, prog="ev-eval-generator")
    with user_errors():
        if not Path(cfg.checkpoint).is_dir():
            raise ConfigError(f"checkpoint={cfg.checkpoint} is not a folder")
        out_dir = make_output_dir("eval_generator", cfg.out)
        save_config(cfg, out_dir / "config.json")
        summary = run(cfg, out_dir)
    print_summary(summary)


if __name__ == "__main__":
    main()
