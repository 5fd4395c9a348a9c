"""Model card and quality reference of a shipped policy checkpoint.

    python scripts/policy_card.py checkpoints/enerverse_a_pick_place \
        --recipe configs/experiment/features_ablation.yaml --evals outputs/eval/features_fused

Writes, into the checkpoint folder:
- ``quality.json``: successes of the checkpoint on a fixed set of simulated episodes (``--episodes``
  per task, seeds 1000+, the seeds every evaluation starts with). CI rolls the checkpoint out on the
  same seeds (tests/test_shipped_policy.py) and fails when it succeeds on fewer of them, so a shipped
  policy that got worse fails CI, not only one that crashes;
- ``README.md``: what the checkpoint is, the recipe file that made it and the held-out evaluation
  table of the ``--evals`` runs (ev-eval output folders).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sim  # noqa: F401  (headless GL defaults)
from enerverse.core.checkpoint import hub_front_matter, read_card_notes
from enerverse.core.fsutil import write_bytes_atomic
from enerverse.core.outputs import write_json_atomic
from policies.runtime import load_for_eval
from sim.evaluate import evaluate

SEED = 1000


def tasks_of(meta: dict) -> list[str]:
    """The task(s) a policy checkpoint was trained on."""
    return list(meta.get("tasks") or [meta["task"]])


def rollout_quality(folder: Path, episodes: int, num_envs: int = 2) -> dict:
    """``{"seed", "episodes", "tasks": {task: {"successes", "per_episode"}}}``: the checkpoint rolled
    out on ``episodes`` seeded episodes per task (no videos, no imagination)."""
    out: dict = {"seed": SEED, "episodes": episodes, "tasks": {}}
    policy = load_for_eval(folder)
    for task in tasks_of(policy.data_meta):
        r = evaluate(policy, task, episodes, num_envs=num_envs, seed=SEED, imagine=False, show_progress=False)
        per_episode = [e["success"] for e in r["per_episode"]]
        out["tasks"][task] = {"successes": r["successes"], "per_episode": per_episode}
    return out


def eval_table(evals: list[Path]) -> list[str]:
    """Markdown rows of ev-eval runs (their results.json)."""
    rows = ["| evaluation | task | episodes | success | 95% CI |", "|---|---|---|---|---|"]
    for run in evals:
        res = json.loads((run / "results.json").read_text())
        for t in res["tasks"]:
            lo, hi = t["ci95"]
            rate = f"{t['success_rate']:.2f} | [{lo:.2f}, {hi:.2f}]"
            rows.append(f"| `{run}` | {t.get('label', t['task'])} | {t['episodes']} | {rate} |")
    return rows


def data_line(train: dict, step: int | None) -> str:
    """What the policy was trained on, from the training config recorded in the checkpoint; ``step``:
    the training steps the last stage ran (the schedule's length may be longer)."""
    tasks = train.get("tasks") or [train.get("task")]
    stores = train.get("stores") or [train.get("store") or f"data/{tasks[0]}"]
    count = "all" if train.get("episodes") is None else train["episodes"]
    line = f"Data: {count} episodes of " + ", ".join(f"`{s}`" for s in stores)
    if train.get("generator"):
        adapted = (train.get("adapt") or {}).get("steps", 0)
        line += f"; generator `{train['generator']}`" + (f" adapted {adapted} steps" if adapted else "")
        line += " (inside the checkpoint)"
    return line + (f"; the last training stage ran {step} steps." if step else ".")


def card(folder: Path, quality: dict, recipe: str | None, evals: list[Path], notes: str = "") -> str:
    """The README.md text of a shipped policy; ``notes``: hand-written paragraphs placed after the recipe."""
    cfg = json.loads((folder / "config.json").read_text())
    enc, meta = cfg["policy"]["encoder"], cfg["meta"]
    lines = [
        *hub_front_matter(["robotics", "diffusion-policy", "enerverse-a", *tasks_of(meta)]),
        f"# {folder.name}",
        "",
        f"A diffusion policy (encoder `{enc['kind']}`, preset `{cfg['policy']['preset']}`) for "
        f"{', '.join(tasks_of(meta))}, on camera rig v{meta.get('rig_version')} at {meta['resolution']} px "
        f"with views {', '.join(meta['views'])}. Load it with `ev-eval policy={folder}` or "
        "`policies.runtime.PolicyRuntime`.",
        "",
    ]
    if recipe:
        export = f"python -m policies.io <run>/checkpoint {folder}"
        lines += [f"Made by `python scripts/experiment.py {recipe}`, then `{export}` (float16).", ""]
    if cfg.get("train"):
        lines += [data_line(cfg["train"], cfg.get("step")), ""]
    if notes.strip():
        lines += [notes.strip(), ""]
    if evals:
        lines += ["## Held-out evaluation", "", *eval_table(evals), ""]
    lines += ["## CI quality reference (`quality.json`)", ""]
    for task, q in quality["tasks"].items():
        n, seed = quality["episodes"], quality["seed"]
        lines.append(f"- {task}: {q['successes']} of {n} episodes from seed {seed}.")
    lines += [
        "",
        "tests/test_shipped_policy.py rolls the checkpoint out on these seeds and fails when it succeeds",
        "on fewer (one episode of slack for floating-point differences between machines).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="shipped policy checkpoint folder")
    ap.add_argument("--episodes", type=int, default=6, help="CI reference episodes per task")
    ap.add_argument("--recipe", help="experiment file that made the checkpoint")
    ap.add_argument("--evals", nargs="*", type=Path, default=[], help="ev-eval output folders to tabulate")
    ap.add_argument(
        "--notes", type=Path, help="hand-written paragraphs for the card (default: <folder>/notes.md)"
    )
    a = ap.parse_args()
    notes = read_card_notes(a.folder, a.notes)
    quality = rollout_quality(a.folder, a.episodes)
    write_json_atomic(a.folder / "quality.json", quality)
    write_bytes_atomic(a.folder / "README.md", card(a.folder, quality, a.recipe, a.evals, notes).encode())
    print(json.dumps({t: q["successes"] for t, q in quality["tasks"].items()}))


if __name__ == "__main__":
    main()
