"""4DGS quality checks on simulated scenes (the fitting targets in docs/results.md, "EnerVerse-D"), in JSON.

    python scripts/fit_check.py --task pick_place --seed 1000 --out outputs/fit_check

1. **Static scene, held-out view.** The scene at reset, rendered with depth by 5 cameras (main and
   anchors at ±30° and ±15° about the workspace). Gaussians are initialised from the depth of the 4
   training views (main, ±30°, -15°), fitted to them (static), and scored on the held-out +15° view:
   over all its pixels and over those some training view sees (``masked_psnr``; the rest is geometry
   no training view saw).
2. **Moving objects, held-out frames.** The scripted expert runs the task for ``--frames`` steps,
   seen by the 4 training views. Fitted on the even frames; scored on the odd ones (times never
   seen in training), once as a static fit and once with the deformation field.

Writes ``results.json`` and a picture per check (truth | render) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import sim  # noqa: F401  (headless GL defaults)
from data_engine.coverage import covisible_mask
from data_engine.fit import Clip, FitSettings, fit_4dgs, render_psnr
from data_engine.flywheel import render_frames
from data_engine.gaussians import init_from_rgbd
from enerverse.core.media import write_png
from enerverse.core.outputs import write_json_atomic
from sim.env import EnerVerseEnv
from sim.experts import make_expert
from sim.rollout import batch_obs

ANCHORS = [{"name": "anchor_left", "yaw_deg": 30.0}, {"name": "anchor_right", "yaw_deg": -30.0},
           {"name": "anchor_15", "yaw_deg": 15.0}, {"name": "anchor_m15", "yaw_deg": -15.0}]  # fmt: skip
VIEWS = ["main", "anchor_left", "anchor_right", "anchor_m15", "anchor_15"]  # the last is held out
TRAIN, HELD = [0, 1, 2, 3], [4]


def record(task: str, seed: int, frames: int, size: int) -> dict[str, np.ndarray]:
    """rgb [T, V, H, W, 3], depth [T, V, H, W], K [V, 3, 3], T_cam_world [T, V, 4, 4] of an expert run."""
    env = EnerVerseEnv(task, views=VIEWS, anchors=ANCHORS, width=size, height=size, depth=True)
    expert = make_expert(task)
    try:
        obs, _ = env.reset(seed=seed)
        expert.reset()
        out = {"rgb": [], "depth": [], "T_cam_world": []}
        while len(out["rgb"]) < frames:
            for a in expert.act(batch_obs(obs))[0]:
                for k in out:
                    out[k].append(np.asarray(obs[k]))
                obs, *_ = env.step(a)
                if len(out["rgb"]) >= frames:
                    break
        res = {k: np.stack(v) for k, v in out.items()}
        res["K"] = np.asarray(obs["K"])
        return res
    finally:
        env.close()


def clip_of(rec: dict, views: list[int], frames: list[int] | slice, t_total: int) -> Clip:
    idx = np.arange(len(rec["rgb"]))[frames]
    times = 2.0 * idx / max(1, t_total - 1) - 1.0
    cams = rec["T_cam_world"][idx][:, views].astype(np.float32)
    depth = rec["depth"][idx][:, views].astype(np.float32)
    return Clip(rec["rgb"][idx][:, views], rec["K"][views].astype(np.float32), cams, depth, times=times)


def fit(clip: Clip, coarse: int, fine: int, n_init: int, seed: int = 0, fill_plane: bool = False):
    g = init_from_rgbd(
        clip.rgb[0], clip.depth[0], clip.K, clip.T_cam_world[0], n=n_init, seed=seed, fill_plane=fill_plane
    )
    cfg = FitSettings(coarse_steps=coarse, fine_steps=fine, depth_weight=0.1, seed=seed)
    t = time.time()
    scene, logs = fit_4dgs(clip, cfg, gaussians=g)
    return scene, {
        "seconds": round(time.time() - t, 1),
        "gaussians": len(scene.gaussians),
        "final_loss": logs[-1]["loss"],
    }


def static_check(rec: dict, steps: int, n_init: int, out: Path, fill_plane: bool = False) -> dict:
    T = len(rec["rgb"])
    train, held = clip_of(rec, TRAIN, slice(0, 1), T), clip_of(rec, HELD, slice(0, 1), T)
    scene, info = fit(train, steps, 0, n_init, fill_plane=fill_plane)
    d = rec["depth"][0]
    seen = covisible_mask(d[HELD[0]], rec["K"][HELD[0]], rec["T_cam_world"][0, HELD[0]],
                          d[TRAIN], rec["K"][TRAIN], rec["T_cam_world"][0, TRAIN])  # fmt: skip
    res = {
        **info,
        "train_views": render_psnr(scene, train, deform=False),
        "held_out_view": render_psnr(scene, held, deform=False, mask=seen[None, None]),
        "held_out_covisible_fraction": round(float(seen.mean()), 4),
    }
    render, _ = render_frames(scene, held)
    write_png(out / "static_heldout_view.png", np.concatenate([held.rgb[0, 0], render[0, 0]], axis=1))
    return res


def dynamic_check(rec: dict, coarse: int, fine: int, n_init: int, out: Path) -> dict:
    T = len(rec["rgb"])
    train, held = clip_of(rec, TRAIN, slice(0, None, 2), T), clip_of(rec, TRAIN, slice(1, None, 2), T)
    static, s_info = fit(train, coarse + fine, 0, n_init)
    moving, m_info = fit(train, coarse, fine, n_init)
    res = {
        "frames": T,
        "static": {**s_info, "held_out_frames": render_psnr(static, held, deform=False)},
        "deforming": {**m_info, "held_out_frames": render_psnr(moving, held, deform=True)},
    }
    f = len(held.rgb) // 2
    r_s, _ = render_frames(static, held)
    r_m, _ = render_frames(moving, held)
    write_png(
        out / "dynamic_heldout_frame.png", np.concatenate([held.rgb[f, 0], r_s[f, 0], r_m[f, 0]], axis=1)
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pick_place")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--static-steps", type=int, default=400)
    ap.add_argument("--coarse", type=int, default=200)
    ap.add_argument("--fine", type=int, default=400)
    ap.add_argument("--n-init", type=int, default=6000)
    ap.add_argument("--fill-plane", action="store_true", help="also initialise the unseen support plane")
    ap.add_argument("--only", choices=["static", "dynamic"], help="run one of the two checks")
    ap.add_argument("--out", type=Path, default=Path("outputs/fit_check"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rec = record(a.task, a.seed, 1 if a.only == "static" else a.frames, a.size)
    results: dict = {"config": {k: str(v) for k, v in vars(a).items()}, "views": VIEWS}
    results["held_out_view"] = VIEWS[HELD[0]]
    if a.only != "dynamic":
        results["static"] = static_check(rec, a.static_steps, a.n_init, a.out, a.fill_plane)
    if a.only != "static":
        results["dynamic"] = dynamic_check(rec, a.coarse, a.fine, a.n_init, a.out)
    write_json_atomic(a.out / "results.json", results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
