"""Cost of stage 2 (the policy loss into the generator): seconds per training step, per fine-tune mode.

    python bench/finetune_cost.py [--preset small] [--batch 8] [--repeats 6] [--block first]

One EnerVerse-A policy per variant around a generator of ``preset`` (random weights: cost does not
depend on training), on the same synthetic batch. A step = forward, backward and the AdamW update.

- ``frozen``: the head on cached generator features (the generator never runs; stage 1 only);
- ``partial`` / ``lora`` / ``full``: a features-only generator forward + backward every step
  (:mod:`policies.finetune`), with gradient checkpointing;
- ``full_no_checkpointing``: the same without it;
- ``cotrain_lora``: LoRA with the video loss (the one-stage co-training variant: a second, whole
  generator forward).

Variants are timed in turn, one step each per round, so all see the same machine load. Reported: the
median seconds per step, the ratio to ``frozen``, and trainable parameters. JSON under
outputs/bench/finetune_cost/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results, timed_step  # noqa: E402

from enerverse.core.camera import intrinsics_from_fovy, look_at, rotate_about_z  # noqa: E402
from enerverse.generator import EnerVerseGenerator  # noqa: E402
from enerverse.presets import get_preset  # noqa: E402
from policies.config import get_policy_preset  # noqa: E402
from policies.encoder_api import DataSpec  # noqa: E402
from policies.finetune import FinetuneSettings, prepare_generator  # noqa: E402
from policies.model import DiffusionPolicy  # noqa: E402

VARIANTS = {
    "frozen": FinetuneSettings(),
    "partial": FinetuneSettings(mode="partial"),
    "lora": FinetuneSettings(mode="lora"),
    "full": FinetuneSettings(mode="full"),
    "full_no_checkpointing": FinetuneSettings(mode="full", checkpointing=False),
    "cotrain_lora": FinetuneSettings(mode="lora", video_weight=1.0),
}
STATE_DIM = 15


def make_policy(
    preset: str, block: str, settings: FinetuneSettings
) -> tuple[DiffusionPolicy, torch.optim.Optimizer]:
    """A policy (random weights, seed 0) around a fresh generator, prepared for ``settings``."""
    torch.manual_seed(0)
    gcfg = get_preset(preset)
    gen = EnerVerseGenerator(gcfg)
    pcfg = get_policy_preset("small")
    pcfg.n_memory, pcfg.encoder.block = gcfg.memory.n_memory, block
    spec = DataSpec(
        views=[f"view{v}" for v in range(gcfg.num_views)],
        resolution=gcfg.resolution,
        state_dim=STATE_DIM,
        text_encoder=gcfg.text_encoder,
    )
    policy = DiffusionPolicy(pcfg, spec, gen)
    gen_params = prepare_generator(gen, settings, block)
    policy.finetune_generator, policy.video_weight = settings.enabled, settings.video_weight
    own = [p for n, p in policy.named_parameters() if p.requires_grad and not n.startswith("generator.")]
    opt = torch.optim.AdamW([{"params": own}, {"params": gen_params, "lr": 3e-5}], lr=3e-4)
    return policy.train(), opt


def make_batch(policy: DiffusionPolicy, B: int) -> dict:
    """Generator inputs for B decision points (+ window latents, state, actions, instructions)."""
    g = policy.generator.cfg
    m, M, V = g.memory.n_memory, g.memory.chunk, g.num_views
    h = g.resolution // g.codec.factor
    rng = np.random.default_rng(0)
    main = look_at([1.3, 0.0, 0.75], [0.42, 0.0, 0.08])
    cams = np.stack([rotate_about_z(main, 30.0 * v, [0.5, 0.0, 0.0]) for v in range(V)])
    K = np.broadcast_to(intrinsics_from_fovy(30.0, g.resolution, g.resolution), (B, V, 3, 3))
    window = torch.randn(B, g.codec.latent_channels, V, m + M, h, h)
    pos = np.broadcast_to(np.arange(-m + 1, 1) * g.frame_stride, (B, m))
    batch = policy.encoder.generator_inputs(
        window[:, :, :, :m], K, np.broadcast_to(cams[None, :, None], (B, V, m, 4, 4)), pos
    )
    batch.update(
        latents=window,
        instruction=["pick up the red cube and place it on the green plate"] * B,
        state=torch.from_numpy(rng.normal(size=(B, STATE_DIM)).astype(np.float32)),
        actions=torch.from_numpy(rng.uniform(-1, 1, (B, policy.cfg.head.horizon, 7)).astype(np.float32)),
    )
    return batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--block", default="first", choices=["first", "mid"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs = {}
    for name, settings in VARIANTS.items():
        policy, opt = make_policy(args.preset, args.block, settings)
        batch = make_batch(policy, args.batch)
        if name == "frozen":  # stage 1 only: the head reads cached features
            with torch.no_grad():
                batch = {**batch, "features": policy.encoder.features(batch, seed=0)}
        timed_step(policy, opt, batch)  # warm-up
        runs[name] = (policy, opt, batch, [])
    for _ in range(args.repeats):
        for policy, opt, batch, times in runs.values():
            times.append(timed_step(policy, opt, batch))
    base = float(np.median(runs["frozen"][3]))
    rows = {}
    for name, (policy, _, _, times) in runs.items():
        gen_trainable = sum(p.numel() for p in policy.generator.parameters() if p.requires_grad)
        rows[name] = {
            "s_per_step": float(np.median(times)),
            "ratio_to_frozen": float(np.median(times)) / base,
            "generator_trainable_M": gen_trainable / 1e6,
        }
        print(f"{name:>22}  {rows[name]['s_per_step']:7.3f} s/step  x{rows[name]['ratio_to_frozen']:5.1f}  "
              f"generator trainable {gen_trainable / 1e6:6.3f} M", file=sys.stderr)  # fmt: skip
    path = save_results("finetune_cost", {"meta": run_metadata(vars(args)), "rows": rows}, args.out)
    print_summary({**{k: round(v["s_per_step"], 3) for k, v in rows.items()}, "results": str(path)})


if __name__ == "__main__":
    main()
