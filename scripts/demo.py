"""The main job (``make demo``): demonstrations -> codec + generator -> policy -> evaluation -> report.

    python scripts/demo.py --out outputs/demo/<stamp> [--task pick_place] [--episodes 60] [--budget 20]

Each stage is the project's own command line (ev-collect, ev-train-generator, ev-train-policy,
ev-eval), run one after the other with time budgets that fit ``--budget`` minutes on a 2-core CPU.
The report (``report.md``) collects the headline numbers, the success plot, the loss curves, the
generator's real-vs-generated grid and the evaluation video (real views next to imagined ones).
The last stdout line is JSON with the measured success rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(stage: str, cmd: list[str], log: Path) -> dict:
    """Run one CLI, echo its progress to the terminal and keep its output; returns its JSON summary."""
    t0 = time.perf_counter()
    print(f"[demo] {stage}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, check=False)
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"[demo] {stage} failed (exit {proc.returncode}); log {log}:\n{tail}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    summary["_minutes"] = (time.perf_counter() - t0) / 60
    print(f"[demo] {stage} done in {summary['_minutes']:.1f} min", file=sys.stderr, flush=True)
    return summary


def budget_plan(total: float) -> dict[str, float]:
    """Minutes per training stage out of ``total``: "generator" covers the codec and the denoiser
    (ev-train-generator's max_minutes counts both); collection, the feature cache and evaluation take
    the rest."""
    return {"generator": 0.40 * total, "policy": 0.12 * total}


def report(out: Path, args, s: dict, minutes: float) -> Path:
    ev = s["eval"]
    lo, hi = ev["ci95"]
    rel = lambda p: os.path.relpath(p, out) if p else ""  # noqa: E731
    gen, pol = s["generator"], s["policy"]
    lines = [
        f"# EnerVerse demo: {args.task}",
        "",
        f"Everything below was produced by `make demo` in {minutes:.1f} minutes on this machine.",
        "",
        "| stage | what | wall time |",
        "|---|---|---|",
        f"| collect | {s['collect']['episodes']} expert episodes, success {s['collect']['success_rate']:.2f} "
        f"| {s['collect']['_minutes']:.1f} min |",
        f"| codec + generator (`small`) | {gen.get('steps')} denoiser steps, final v-loss "
        f"{gen.get('final_loss', float('nan')):.3f} | {gen['_minutes']:.1f} min |",
        f"| policy (EnerVerse-A, `small`) | {pol.get('steps')} steps on "
        f"{pol.get('decision_points')} decision points, final loss "
        f"{pol.get('final_loss', float('nan')):.4f} | {pol['_minutes']:.1f} min |",
        f"| evaluate | **success {ev['success_rate']:.2f}** (95% CI [{lo:.2f}, {hi:.2f}]) over "
        f"{ev['episodes']} seeded episodes | {s['eval']['_minutes']:.1f} min |",
        "",
        "## Success",
        "",
        f"![success]({rel(Path(ev['run_dir']) / 'success.png')})",
        "",
        "## Loss curves",
        "",
        f"![generator loss]({rel(gen.get('loss_plot'))}) ![policy loss]({rel(pol.get('loss_plot'))})",
        "",
        "## Imagined vs real",
        "",
        "Generator samples on held-out windows (top rows real, bottom rows generated, every view):",
        "",
        f"![generator samples]({rel(gen.get('sample'))})",
        "",
        f"Evaluation video, real views next to the imagined future: [{args.task}.mp4]"
        f"({rel(Path(ev['run_dir']) / (args.task + '.mp4'))})",
        "",
        "These are small, CPU-budget models: see the README for longer runs and what limits them.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="pick_place")
    ap.add_argument("--episodes", type=int, default=60, help="expert demonstrations to collect")
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--budget", type=float, default=20.0, help="minutes for the whole job")
    args = ap.parse_args()
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan = budget_plan(args.budget)
    s: dict = {}
    store = out / "episodes"
    s["collect"] = run(
        "collect",
        [
            str(BIN / "ev-collect"),
            f"task={args.task}",
            f"episodes={args.episodes}",
            "workers=2",
            "seg=true",
            f"out={store}",
            f"run_dir={out / 'collect'}",
            "video_episodes=2",
            "resume=true",
        ],
        out / "logs" / "collect.log",
    )
    s["generator"] = run(
        "codec + generator",
        [
            str(BIN / "ev-train-generator"),
            f"task={args.task}",
            "preset=small",
            f"store={store}",
            "codec.steps=60",
            "codec.lr=2e-3",
            "generator.codec.object_weight=30",
            "train.steps=20000",
            "train.lr=3e-4",
            "train.ema_decay=0.99",
            "batch_size=4",
            "sample_every=0",
            f"max_minutes={plan['generator']:.2f}",
            f"out={out / 'generator'}",
        ],
        out / "logs" / "generator.log",
    )
    s["policy"] = run(
        "policy",
        [
            str(BIN / "ev-train-policy"),
            f"task={args.task}",
            "preset=small",
            f"store={store}",
            f"generator={s['generator']['checkpoint']}",
            "decision_stride=4",
            "train.steps=20000",
            f"max_minutes={plan['policy']:.2f}",
            f"out={out / 'policy'}",
        ],
        out / "logs" / "policy.log",
    )
    s["eval"] = run(
        "evaluate",
        [
            str(BIN / "ev-eval"),
            f"task={args.task}",
            f"policy={s['policy']['checkpoint']}",
            f"episodes={args.eval_episodes}",
            "num_envs=5",
            "videos=2",
            f"out={out / 'eval'}",
        ],
        out / "logs" / "eval.log",
    )
    minutes = (time.perf_counter() - t0) / 60
    path = report(out, args, s, minutes)
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    ev = s["eval"]
    print(
        f"[demo] success rate {ev['success_rate']:.2f} over {ev['episodes']} episodes; report {path}",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "task": args.task,
                "success_rate": ev["success_rate"],
                "ci95": ev["ci95"],
                "episodes": ev["episodes"],
                "minutes": round(minutes, 2),
                "report": str(path),
            }
        )
    )


if __name__ == "__main__":
    main()
