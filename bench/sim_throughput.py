"""Simulation throughput: env steps per second with 1 and 3 cameras at 64x64 and the default 128x128.

    python bench/sim_throughput.py [--steps 300] [--out DIR]

Measures, in one run on one machine (each cell is the median of ``--repeats`` trials, after a
warm-up): single-process env steps/s (physics + IK + rendering +
observation), the same with N parallel processes (AsyncVectorEnv), physics+IK without rendering,
and - as the baseline for the project's tiled renderer - one ``mujoco.Renderer`` call per view.
Prints a table, writes JSON (with commit and machine) and ends with one line of JSON headlines.
Target from the foundation issue: >= 300 steps/s with 3 cameras at 64x64 in one process (2 cores).
The headline compares the default resolution (sim.cameras.DEFAULT_RESOLUTION, the workspace-framed
rig) with the old 64 px default in the same run, and prices segmentation masks (``seg=True``, what
``ev-collect seg=true`` records for object-pixel metrics).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

import sim  # noqa: E402,F401  (sets MUJOCO_GL / LP_NUM_THREADS defaults)
from sim.cameras import DEFAULT_RESOLUTION  # noqa: E402
from sim.env import EnerVerseEnv  # noqa: E402
from sim.registration import make_vec_env  # noqa: E402

VIEWS = {1: ["main"], 3: ["main", "anchor_left", "anchor_right"]}


def _actions(n: int, batch: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (n, 7) if batch is None else (n, batch, 7)
    a = rng.uniform(-0.01, 0.01, shape).astype(np.float32)
    a[..., 6] = 1.0
    return a


def rate(step, n: int) -> float:
    """Calls per second of ``step(i)`` for i in 0..n-1, after one untimed warm-up call."""
    step(0)
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
    return n / (time.perf_counter() - t0)


def single(
    task: str, views: list[str], res: int, steps: int, render: bool = True, seg: bool = False
) -> float:
    """Steps/s of one env in this process (``render=False``: physics + IK only; ``seg``: with masks)."""
    env = EnerVerseEnv(task, views=views, width=res, height=res, seg=seg)
    env.reset(seed=0)
    acts = _actions(steps)
    if not render:
        env._obs = lambda: {}  # noqa: SLF001  (physics/IK-only baseline)
    r = rate(lambda i: env.step(acts[i]), steps)
    env.close()
    return r


def per_view_renderer(task: str, views: list[str], res: int, steps: int) -> float:
    """Baseline renderer: frames/s of one ``mujoco.Renderer.render`` call per view (all views = 1 frame)."""
    import mujoco

    env = EnerVerseEnv(task, views=views, width=res, height=res)
    env.reset(seed=0)
    r = mujoco.Renderer(env.model, res, res)

    def frame(_: int) -> None:
        for v in views:
            r.update_scene(env.data, camera=v)
            r.render()

    fps = rate(frame, steps)
    r.close()
    env.close()
    return fps


def tiled_renderer(task: str, views: list[str], res: int, steps: int) -> float:
    """The project's tiled renderer: frames/s (all views = 1 frame)."""
    env = EnerVerseEnv(task, views=views, width=res, height=res)
    env.reset(seed=0)
    fps = rate(lambda _: env.renderer.render(env.data), steps)
    env.close()
    return fps


def vectorised(task: str, views: list[str], res: int, steps: int, num_envs: int) -> float:
    """Total env steps/s of ``num_envs`` envs in separate processes."""
    venv = make_vec_env(task, num_envs, asynchronous=True, views=views, width=res, height=res)
    venv.reset(seed=list(range(num_envs)))
    acts = _actions(steps, num_envs)
    r = rate(lambda i: venv.step(acts[i]), steps)
    venv.close()
    return r * num_envs


def repeated(fn, repeats: int, *args) -> dict:
    """Median, min and max of ``repeats`` calls (machines are noisy; one trial is not a number)."""
    vals = sorted(fn(*args) for _ in range(repeats))
    return {"median": float(np.median(vals)), "min": vals[0], "max": vals[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="pick_place")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--num-envs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    single(args.task, ["main"], 64, 20)  # warm-up: first GL context, imports, caches
    rows = []
    for res in sorted({64, DEFAULT_RESOLUTION}):
        for nv, views in VIEWS.items():
            n, a = args.repeats, (args.task, views, res, args.steps)
            row = {
                "resolution": res,
                "views": nv,
                "single": repeated(single, n, *a),
                "vector": repeated(vectorised, n, *a, args.num_envs),
                "tiled_render": repeated(tiled_renderer, n, *a),
                "per_view_render": repeated(per_view_renderer, n, *a),
            }
            row["single_steps_per_s"] = row["single"]["median"]
            row["vector_steps_per_s"] = row["vector"]["median"]
            row["tiled_render_fps"] = row["tiled_render"]["median"]
            row["per_view_render_fps"] = row["per_view_render"]["median"]
            row["tiled_vs_per_view"] = row["tiled_render_fps"] / row["per_view_render_fps"]
            rows.append(row)
    physics = repeated(single, args.repeats, args.task, ["main"], 64, args.steps, False)["median"]
    three = VIEWS[3]
    with_seg = repeated(single, args.repeats, args.task, three, DEFAULT_RESOLUTION, args.steps, True, True)
    old = next(r for r in rows if r["resolution"] == 64 and r["views"] == 3)
    new = next(r for r in rows if r["resolution"] == DEFAULT_RESOLUTION and r["views"] == 3)
    print(
        f"{'res':>4} {'views':>5} {'steps/s 1 proc':>15} {f'steps/s {args.num_envs} procs':>16} "
        f"{'render fps':>11} {'per-view fps':>13} {'ratio':>6}",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"{r['resolution']:>4} {r['views']:>5} {r['single_steps_per_s']:>15.1f} "
            f"{r['vector_steps_per_s']:>16.1f} {r['tiled_render_fps']:>11.1f} "
            f"{r['per_view_render_fps']:>13.1f} {r['tiled_vs_per_view']:>6.2f}",
            file=sys.stderr,
        )
    print(
        f"physics + IK only: {physics:.1f} steps/s (medians of {args.repeats} trials; min/max in the JSON)\n"
        f"3 views, default {DEFAULT_RESOLUTION} px vs old 64 px: "
        f"{new['single_steps_per_s'] / old['single_steps_per_s']:.2f}x the steps/s; with seg masks "
        f"{with_seg['median']:.1f} steps/s ({with_seg['median'] / new['single_steps_per_s']:.2f}x without)",
        file=sys.stderr,
    )
    results = {
        "meta": run_metadata(vars(args)),
        "rows": rows,
        "physics_ik_steps_per_s": physics,
        "default_resolution": DEFAULT_RESOLUTION,
        "seg_3cam_default": with_seg,
        "target_3cam_64px_steps_per_s": 300,
    }
    path = save_results("sim_throughput", results, args.out)
    print_summary(
        {
            "steps_per_s_3cam_64": old["single_steps_per_s"],
            f"steps_per_s_3cam_{DEFAULT_RESOLUTION}": new["single_steps_per_s"],
            "default_vs_64": new["single_steps_per_s"] / old["single_steps_per_s"],
            f"steps_per_s_3cam_{DEFAULT_RESOLUTION}_seg": with_seg["median"],
            "vector_steps_per_s_3cam_64": old["vector_steps_per_s"],
            "physics_ik_steps_per_s": physics,
            "target_met": old["single_steps_per_s"] >= 300,
            "results": str(path),
        }
    )


if __name__ == "__main__":
    main()
