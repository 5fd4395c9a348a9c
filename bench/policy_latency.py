"""Policy latency: milliseconds per action chunk for EnerVerse-A and the image baseline, same run.

    python bench/policy_latency.py [--presets tiny,small] [--repeats 30]

For each preset: a generator of that preset (random weights: latency does not depend on training)
with an EnerVerse-A policy, and the baseline (same head, CNN encoder), both behind ``PolicyRuntime``
with a 20-frame history. One chunk = observe + the codec on the memory frames not encoded yet
+ one generator forward over [memory + noise frames] (EnerVerse-A) or the CNN over the memory frames
(baseline) + the head's DDIM steps. Reported: median
and p90 ms per chunk over ``repeats`` chunks after a warm-up, timed alternately (one chunk of each
policy in turn, so both see the same load), the ratio EnerVerse-A / baseline, and peak memory (CUDA:
allocated during one chunk of that policy alone; CPU: the process's peak RSS so far, which only grows,
so it is an upper bound). ``base`` runs only with CUDA. Writes JSON under outputs/bench/policy_latency/.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

from enerverse.core.camera import intrinsics_from_fovy, look_at, rotate_about_z  # noqa: E402
from enerverse.generator import EnerVerseGenerator  # noqa: E402
from enerverse.presets import get_preset  # noqa: E402
from policies.config import get_policy_preset  # noqa: E402
from policies.model import DiffusionPolicy  # noqa: E402
from policies.runtime import PolicyRuntime  # noqa: E402

STATE_DIM = 15


def observation(V: int, R: int, rng: np.random.Generator) -> dict:
    main = look_at([1.3, 0.0, 0.75], [0.42, 0.0, 0.08])
    return {
        "rgb": rng.integers(0, 255, (V, R, R, 3), dtype=np.uint8),
        "state": rng.normal(size=STATE_DIM).astype(np.float32),
        "K": np.stack([intrinsics_from_fovy(50.0, R, R)] * V),
        "T_cam_world": np.stack([rotate_about_z(main, 30.0 * v, [0.5, 0.0, 0.0]) for v in range(V)]),
    }


def policies_for(preset: str, device: str) -> dict[str, DiffusionPolicy]:
    gcfg = get_preset(preset)
    if gcfg.codec.kind != "conv":
        gcfg.codec.kind, gcfg.codec.channels = "conv", 64  # no pretrained KL folder here: same latent shape
    gen = EnerVerseGenerator(gcfg)
    pcfg = get_policy_preset(preset if preset != "paper" else "base")
    pcfg.n_memory, pcfg.head.horizon = gcfg.memory.n_memory, gcfg.memory.chunk
    meta = {
        "views": [f"view{v}" for v in range(gcfg.num_views)],
        "resolution": gcfg.resolution,
        "state_dim": STATE_DIM,
        "text_encoder": gcfg.text_encoder,
        "text_model_path": gcfg.text_model_path,
    }
    out = {"enerverse": DiffusionPolicy(pcfg, meta, gen)}
    base_cfg = get_policy_preset(preset if preset != "paper" else "base")
    base_cfg.n_memory, base_cfg.head.horizon = pcfg.n_memory, pcfg.head.horizon
    base_cfg.encoder.kind = "cnn"
    out["baseline"] = DiffusionPolicy(base_cfg, meta)
    return {k: p.to(device).eval() for k, p in out.items()}


def bench(pols: dict[str, DiffusionPolicy], device: str, repeats: int) -> dict[str, dict]:
    """Time ``repeats`` chunks per policy, alternating between the policies chunk by chunk so that
    every policy sees the same machine load (this CPU is a shared VM whose speed drifts)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    runtimes, rngs, times = {}, {}, {}
    for name, policy in pols.items():
        rt = PolicyRuntime(policy, device)
        rt.reset("put the red cube on the blue plate")
        rngs[name] = rng = np.random.default_rng(0)
        V, R = len(rt.views), rt.resolution
        for _ in range(20):
            rt.observe(observation(V, R, rng))
        with amp:
            rt.act(observation(V, R, rng))  # warm-up
        runtimes[name], times[name] = rt, []
    with amp:
        for _ in range(repeats):
            for name, rt in runtimes.items():
                o = observation(len(rt.views), rt.resolution, rngs[name])
                sync()
                t0 = time.perf_counter()
                rt.act(o)
                sync()
                times[name].append((time.perf_counter() - t0) * 1000)
        peak = {}
        for name, rt in runtimes.items():  # CUDA: one more chunk per policy, alone; CPU: the process's RSS
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                rt.act(observation(len(rt.views), rt.resolution, rngs[name]))
                sync()
                peak[name] = torch.cuda.max_memory_allocated() / 2**20
            else:
                peak[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        name: {
            "ms_per_chunk_median": float(np.median(times[name])),
            "ms_per_chunk_p90": float(np.percentile(times[name], 90)),
            "params_M": pols[name].num_parameters() / 1e6,
            "peak_memory_MiB": peak[name],
            "horizon": runtimes[name].horizon,
            "ddim_steps": pols[name].cfg.head.sample_steps,
        }
        for name in pols
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    jobs = [(p, "cpu") for p in args.presets.split(",")]
    if torch.cuda.is_available():
        jobs += [("small", "cuda"), ("base", "cuda")]
    rows = []
    for preset, device in jobs:
        pols = policies_for(preset, device)
        r = {"preset": preset, "device": device, **bench(pols, device, args.repeats)}
        r["ratio_enerverse_over_baseline"] = (
            r["enerverse"]["ms_per_chunk_median"] / r["baseline"]["ms_per_chunk_median"]
        )
        rows.append(r)
        print(
            f"{preset:>6} {device:>5}  EnerVerse-A {r['enerverse']['ms_per_chunk_median']:8.1f} ms/chunk  "
            f"baseline {r['baseline']['ms_per_chunk_median']:8.1f} ms/chunk  "
            f"ratio {r['ratio_enerverse_over_baseline']:.2f}",
            file=sys.stderr,
        )
    path = save_results("policy_latency", {"meta": run_metadata(vars(args)), "rows": rows}, args.out)
    print_summary(
        {
            f"{r['preset']}_{r['device']}": {
                "enerverse_ms": r["enerverse"]["ms_per_chunk_median"],
                "baseline_ms": r["baseline"]["ms_per_chunk_median"],
                "ratio": r["ratio_enerverse_over_baseline"],
            }
            for r in rows
        }
        | {"results": str(path)}
    )


if __name__ == "__main__":
    main()
