"""The main job (``make demo``): roll out the shipped EnerVerse-A policy in simulation and report.

    python scripts/demo.py --out outputs/demo/<stamp> [--checkpoint checkpoints/enerverse_a_pick_place]
                           [--episodes 20] [--num-envs 2]

It evaluates the checkpoint with ``ev-eval`` on seeded episodes of its task(s) (seeds 1000+, never
trained on) and writes ``report.md``: the success table with 95% confidence intervals, the success
plot, the evaluation video (real views next to the imagined future) and how the checkpoint was made.
The last stdout line is JSON with the measured success rate. Training such a checkpoint from scratch
is ``make train`` (an experiment file under configs/experiment/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from enerverse.core.checkpoint import CheckpointError
from enerverse.core.config import ConfigError
from enerverse.core.errors import user_errors
from enerverse.core.experiment import entry_args, load_experiment

EXPERIMENT = "demo"  # configs/experiment/demo.yaml: the evaluation step and its settings


def default_checkpoint() -> Path:
    """The checkpoint the demo experiment names."""
    step = next(s for s in load_experiment(EXPERIMENT)["steps"] if s["run"] == "ev-eval")
    return Path(step["args"]["policy"])


def evaluate(checkpoint: Path, tasks: list[str], args, log: Path) -> dict:
    """The experiment's ``ev-eval`` step on the checkpoint and its tasks; returns its JSON summary."""
    given = [f"policy={checkpoint}", f"tasks=[{','.join(tasks)}]", f"out={args.out / 'eval'}"]
    given += [f"episodes={args.episodes}"] * (args.episodes is not None)
    given += [f"num_envs={args.num_envs}"] * (args.num_envs is not None)
    cmd = [sys.executable, "-m", "sim.evaluate", *entry_args(EXPERIMENT, "ev-eval", given), *given]
    print(f"[demo] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, check=False)
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("error: ")]
    if proc.returncode == 2 and errors:  # ev-eval refused a setting: the user's mistake, one line
        raise ConfigError(errors[-1].removeprefix("error: "))
    if proc.returncode != 0:
        raise SystemExit(
            f"[demo] ev-eval failed (exit {proc.returncode}); log {log}:\n{log.read_text()[-2000:]}"
        )
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


def checkpoint_tasks(checkpoint: Path) -> tuple[list[str], dict]:
    """The tasks a policy checkpoint was trained on, and its config.json."""
    config = json.loads((checkpoint / "config.json").read_text())
    meta = config.get("meta", {})
    tasks = meta.get("tasks") or [meta.get("task") or "pick_place"]
    return list(tasks), config


def report(out: Path, checkpoint: Path, config: dict, ev: dict, minutes: float) -> Path:
    """report.md: success per task with CIs, plot, video and the checkpoint's provenance."""
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    rows = json.loads((Path(ev["run_dir"]) / "results.json").read_text())["tasks"]
    train = config.get("train") or {}
    policy = config.get("policy", {})
    stage2 = (train.get("finetune") or {}).get("mode", "off")
    lines = [
        f"# EnerVerse demo: {', '.join(r['task'] for r in rows)}",
        "",
        f"`make demo` rolled out `{checkpoint}` in simulation in {minutes:.1f} minutes on this machine.",
        "",
        "| task | success | 95% CI | episodes |",
        "|---|---|---|---|",
        *(
            f"| {r['task']} | **{r['success_rate']:.2f}** | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] "
            f"| {r['episodes']} |"
            for r in rows
        ),
        "",
        f"![success]({rel(Path(ev['run_dir']) / 'success.png')})",
        "",
        "## Imagined vs real",
        "",
        "Each evaluation video shows the real views next to the generator's imagined next chunk:",
        "",
        *(f"- [{Path(r['video']).name}]({rel(r['video'])})" for r in rows if r.get("video")),
        "",
        "## The checkpoint",
        "",
        f"- encoder: `{policy.get('encoder', {}).get('kind')}`, head `{policy.get('preset')}`, "
        f"{config.get('step', '?')} training steps",
        f"- generator: `{train.get('generator')}`, stage 2: `{stage2}`",
        "- made by: `make train` / the experiment file named in the checkpoint's README",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the one demo.yaml names")
    ap.add_argument("--episodes", type=int, default=None, help="evaluation episodes per task (demo.yaml: 20)")
    ap.add_argument("--num-envs", type=int, default=None)
    args = ap.parse_args(argv)
    with user_errors():
        run(args)


def run(args: argparse.Namespace) -> None:
    """The demo with parsed arguments; a user's mistake raises a project error (one line, exit 2)."""
    args.checkpoint = args.checkpoint or default_checkpoint()
    if not (args.checkpoint / "config.json").is_file():
        raise CheckpointError(
            f"no policy checkpoint at {args.checkpoint}; train one with `make train` "
            "(configs/experiment/quick_pick_place.yaml) or pass --checkpoint <folder>"
        )
    if any(n is not None and n < 1 for n in (args.episodes, args.num_envs)):
        raise ConfigError("--episodes and --num-envs must be positive")
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tasks, config = checkpoint_tasks(args.checkpoint)
    ev = evaluate(args.checkpoint, tasks, args, args.out / "logs" / "eval.log")
    minutes = (time.perf_counter() - t0) / 60
    path = report(args.out, args.checkpoint, config, ev, minutes)
    print(
        f"[demo] success {ev['success_rate']:.2f} over {ev['episodes']} episodes; report {path}",
        file=sys.stderr,
    )
    summary = {k: ev[k] for k in ("success_rate", "ci95", "episodes", "per_task") if k in ev}
    print(
        json.dumps(
            {**summary, "checkpoint": str(args.checkpoint), "minutes": round(minutes, 2), "report": str(path)}
        )
    )


if __name__ == "__main__":
    main()
