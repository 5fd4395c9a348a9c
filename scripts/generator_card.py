"""Model card and quality reference of a shipped generator checkpoint.

    python scripts/generator_card.py checkpoints/generator_pretrained \
        --evals outputs/eval_generator/pretrained_*    # ev-eval-generator runs to tabulate

Writes, into the checkpoint folder:
- ``quality.json``: the codec's PSNR and object PSNR on a fixed set of simulator frames (every task,
  seeds 1000-1001 at reset, all views, rendered now at the checkpoint's resolution). CI recomputes
  them (tests/test_shipped_generator.py) and fails when the shipped weights got worse;
- ``README.md``: what the checkpoint is, how it was made (the recipe file) and the held-out
  evaluation table of the ``--evals`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import sim  # noqa: F401  (headless GL defaults)
from enerverse.core.checkpoint import hub_front_matter, read_card_notes
from enerverse.core.frames import to_model
from enerverse.core.outputs import write_json_atomic
from enerverse.io import load_codec, load_generator
from enerverse.metrics import masked_psnr, psnr
from sim.env import EnerVerseEnv
from sim.tasks import TASKS

SEEDS = (1000, 1001)


def reference_frames(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, R, R] in [-1, 1] and object masks [N, R, R]: every task at reset, SEEDS, 3 views."""
    imgs, masks = [], []
    for task in TASKS:
        env = EnerVerseEnv(task, width=resolution, height=resolution, seg=True)
        try:
            for seed in SEEDS:
                obs, _ = env.reset(seed=seed)
                imgs.append(obs["rgb"])
                masks.append(obs["seg"] > 0)
        finally:
            env.close()
    x = to_model(np.concatenate(imgs))
    return x, torch.from_numpy(np.concatenate(masks))


@torch.no_grad()
def codec_quality(codec, resolution: int) -> dict:
    """Codec reconstruction PSNR and object PSNR (dB) on :func:`reference_frames`."""
    x, m = reference_frames(resolution)
    rec = codec.decode(codec.encode(x))
    return {
        "codec_psnr": float(psnr(rec, x).mean()),
        "codec_object_psnr": float(masked_psnr(rec, x, m).nanmean()),
    }


@torch.no_grad()
def heldout_codec_quality(codec, stores: list[str], per_store: int = 40) -> dict:
    """Codec PSNR / object PSNR / SSIM on frames spread over held-out stores (as bench/codec_options.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from codec_options import heldout_frames, score

    x, m = heldout_frames(stores, per_store)
    return {f"heldout_{k}": v for k, v in score(codec, x, m).items()}


def eval_table(runs: list[Path]) -> list[str]:
    rows = ["| store | PSNR c1 / c2 (copy-last) | object PSNR | moved-object PSNR (copy-last) | SSIM |",
            "|---|---|---|---|---|"]  # fmt: skip
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        m = res["model"]
        c = m["per_chunk"]

        def pair(k: str, c: list = c) -> str:
            return " / ".join(f"{r[k]:.2f}" if r.get(k) is not None else "-" for r in c)

        store = json.loads((run / "config.json").read_text())["store"]
        rows.append(
            f"| {store} | {pair('psnr')} ({pair('baseline_psnr')}) "
            f"| {m.get('object_psnr', float('nan')):.2f} ({m.get('baseline_object_psnr', float('nan')):.2f}) "
            f"| {m.get('moved_psnr', float('nan')):.2f} ({m.get('baseline_moved_psnr', float('nan')):.2f}) "
            f"| {m['ssim']:.3f} |"
        )
    return rows


def quality_line(quality: dict, held: dict) -> str:
    line = (
        f"- Codec on the reference frames (quality.json, checked in CI): PSNR "
        f"{quality['codec_psnr']:.2f} dB, object pixels {quality['codec_object_psnr']:.2f} dB."
    )
    if held:
        line += (
            f" On held-out store frames: PSNR {held['heldout_psnr']:.2f} dB, object pixels "
            f"{held['heldout_object_psnr']:.2f} dB, SSIM {held['heldout_ssim']:.3f}, object SSIM "
            f"{held['heldout_object_ssim']:.3f}."
        )
    return line


def generator_card(
    folder: Path, config: dict, recipe: str, quality: dict, held: dict, evals: list, notes: str = ""
) -> list:
    """The README.md lines of a shipped generator; ``notes``: hand-written paragraphs after the intro."""
    model = load_generator(folder)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.name.endswith(".safetensors")) / 2**20
    return [
        *hub_front_matter(["robotics", "video-diffusion", "enerverse-g", "world-model"]),
        f"# {folder.name}",
        "",
        f"EnerVerse-G pretrained on all six tasks of the simulator (camera rig {config.get('rig_version')}, "
        f"{model.cfg.resolution} px, {model.cfg.num_views} views, frame stride {model.cfg.frame_stride}): "
        "the project's stand-in for the paper's pretrained video model. Adapt it to a task with "
        "`ev-train-generator init_from=<this folder>`.",
        "",
        *([notes.strip(), ""] if notes.strip() else []),
        f"- Training: {config.get('step')} denoiser steps; the exact data and recipe: `{recipe}`.",
        f"- Weights: {config.get('weights_dtype')}, {size:.1f} MiB; denoiser "
        f"{model.denoiser.num_parameters() / 1e6:.2f} M parameters.",
        quality_line(quality, held),
        "",
        "Held-out evaluation (`ev-eval-generator` on the held-out stores, seeds 1000+: 8 episodes × 2 start "
        "frames per task, 2 chunks of 8 frames):",
        "",
        *eval_table([Path(r) for r in evals]),
        "",
    ]


def decoder_note(config: dict) -> str:
    """', then its decoder alone for 1000 + 1000 steps' for a codec_decoder_only fine-tune."""
    steps = config.get("decoder_steps")
    return f", then its decoder alone for {' + '.join(str(s) for s in steps)} steps" if steps else ""


def codec_card(folder: Path, config: dict, recipe: str, quality: dict, held: dict) -> list:
    return [
        *hub_front_matter(["robotics", "autoencoder", "enerverse-g"]),
        f"# {folder.name}",
        "",
        f"The codec of the pretrained EnerVerse-G (camera rig {config.get('rig_version')}, "
        f"{config['generator']['resolution']} px; f{config['generator']['codec']['factor']}, "
        f"{config['generator']['codec']['latent_channels']} latent channels), trained "
        f"{config.get('codec_steps')} steps on all six tasks{decoder_note(config)}. Use it with "
        f"`ev-train-generator codec_from=<this folder>` to train a denoiser on it; the recipe: `{recipe}`.",
        "",
        quality_line(quality, held),
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--evals", nargs="*", default=[])
    ap.add_argument("--recipe", default="configs/experiment/generator_pretrained.yaml")
    ap.add_argument("--heldout", nargs="*", default=[], help="held-out stores for the codec's numbers")
    ap.add_argument("--notes", type=Path, help="hand-written paragraphs (default: <checkpoint>/notes.md)")
    args = ap.parse_args()
    folder = Path(args.checkpoint)
    notes = read_card_notes(folder, args.notes)
    config = json.loads((folder / "config.json").read_text())
    codec, cfg = load_codec(folder)
    quality = codec_quality(codec, cfg.resolution)
    write_json_atomic(folder / "quality.json", {"seeds": list(SEEDS), "tasks": list(TASKS), **quality})
    held = heldout_codec_quality(codec, args.heldout) if args.heldout else {}
    if config.get("format") == "enerverse-codec":
        lines = codec_card(folder, config, args.recipe, quality, held) + ([notes] if notes else [])
    else:
        lines = generator_card(folder, config, args.recipe, quality, held, args.evals, notes)
    (folder / "README.md").write_text("\n".join(lines))
    print(json.dumps({"checkpoint": str(folder), **quality, **held}))


if __name__ == "__main__":
    main()
