"""Cost of one policy training step on cached features, per encoder, against the image baseline.

    python bench/policy_step_cost.py [--batch 32] [--repeats 8]

What decides EnerVerse-A against the image baseline at equal wall time (issue 14) is, besides the
fixed adaptation and feature caching, the cost of a step. Every variant is `make train`'s policy
(``small`` head, current image through a CNN of width 16, 3 views at the ``small`` generator's 128 px)
on the same synthetic batch, random weights (cost does not depend on training):

- ``cnn``: the image baseline (no generator);
- ``fused_<pool>``: the image tokens + future-space tokens of every 2nd window frame
  (``token_stride=2``) read from cached first-level generator features, behind the future gate,
  pooled by ``keypoints``, ``keypoints_linear`` or ``mean`` (``--token-stride 4``: every 4th).

A step = forward, backward and the AdamW update. Variants are timed in turn, one step each per
round, so all see the same load. Reported: the median seconds per step and the ratio to ``cnn``.
JSON under outputs/bench/policy_step_cost/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results, timed_step  # noqa: E402

from enerverse.generator import EnerVerseGenerator  # noqa: E402
from enerverse.presets import get_preset  # noqa: E402
from policies.config import get_policy_preset  # noqa: E402
from policies.encoder_api import DataSpec  # noqa: E402
from policies.model import DiffusionPolicy  # noqa: E402

VARIANTS = {"cnn": None, "fused_keypoints": "keypoints", "fused_keypoints_linear": "keypoints_linear",
            "fused_mean": "mean"}  # fmt: skip
STATE_DIM = 15


def make_policy(pool: str | None, generator: EnerVerseGenerator, token_stride: int = 2) -> DiffusionPolicy:
    """`make train`'s policy (random weights, seed 0): the baseline (``pool`` None) or fused."""
    torch.manual_seed(0)
    g = generator.cfg
    cfg = get_policy_preset("small")
    cfg.n_memory = g.memory.n_memory
    cfg.encoder.image_frames, cfg.encoder.cnn_width = 1, 16
    if pool is None:
        cfg.encoder.kind = "cnn"
    else:
        cfg.encoder.kind, cfg.encoder.pool = "fused", pool
        cfg.encoder.token_stride, cfg.encoder.future_gate = token_stride, True
    spec = DataSpec(views=[f"view{v}" for v in range(g.num_views)], resolution=g.resolution,
                    state_dim=STATE_DIM, text_encoder="hashing")  # fmt: skip
    return DiffusionPolicy(cfg, spec, None if pool is None else generator).train()


def make_batch(gen: EnerVerseGenerator, B: int, horizon: int, action_dim: int, token_stride: int) -> dict:
    """Cached-feature batch for B decision points: first-level features of the window frames the
    tokens read [B, V, T, C, h, w] (every ``token_stride``-th; float16, as cached), current frames,
    state, actions, instructions."""
    g = gen.cfg
    rng = np.random.default_rng(0)
    h = g.resolution // g.codec.factor
    C = g.denoiser.width * g.denoiser.channel_mult[0]  # the first down level's channels
    T = (g.memory.n_memory + g.memory.chunk) // token_stride
    return {
        "features": {"first": torch.randn(B, g.num_views, T, C, h, h).half()},
        "frames": torch.rand(B, g.num_views, 1, 3, g.resolution, g.resolution) * 2 - 1,
        "instruction": ["pick up the red cube and place it on the green plate"] * B,
        "state": torch.from_numpy(rng.normal(size=(B, STATE_DIM)).astype(np.float32)),
        "actions": torch.from_numpy(rng.uniform(-1, 1, (B, horizon, action_dim)).astype(np.float32)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--token-stride", type=int, default=2, help="future-space tokens from every n-th frame")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    generator = EnerVerseGenerator(get_preset("small"))
    head = get_policy_preset("small").head
    batch = make_batch(generator, args.batch, head.horizon, head.action_dim, args.token_stride)
    runs = {}
    for name, pool in VARIANTS.items():
        policy = make_policy(pool, generator, args.token_stride)
        own = [p for n, p in policy.named_parameters() if p.requires_grad and not n.startswith("generator.")]
        opt = torch.optim.AdamW(own, lr=3e-4)
        timed_step(policy, opt, batch)  # warm-up
        runs[name] = (policy, opt, [])
    for _ in range(args.repeats):
        for policy, opt, times in runs.values():
            times.append(timed_step(policy, opt, batch))
    base = float(np.median(runs["cnn"][2]))
    rows = {}
    for name, (_, _, times) in runs.items():
        s = float(np.median(times))
        rows[name] = {"s_per_step": s, "ratio_to_cnn": s / base}
        print(f"{name:>24}  {s:7.3f} s/step  x{s / base:4.2f}", file=sys.stderr)
    path = save_results("policy_step_cost", {"meta": run_metadata(vars(args)), "rows": rows}, args.out)
    print_summary({**{k: round(v["s_per_step"], 3) for k, v in rows.items()}, "results": str(path)})


if __name__ == "__main__":
    main()
