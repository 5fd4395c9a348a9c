"""Run an experiment file: the project's own commands in order, with their settings in one YAML file.

    python scripts/experiment.py configs/experiment/generator_pretrained.yaml [--only train] [--dry-run] \
        [--set codec_from=checkpoints/generator_codec]

An experiment file has a ``name``, a ``description`` and ``steps``. Each step runs one command
(``run``: ev-collect, ev-train-generator, ev-eval-generator, ev-train-policy, ev-eval or
export-generator) with ``args`` as ``key=value`` overrides; ``foreach`` repeats a step for every
value of a variable, substituted into the args as ``{variable}``. Every command the project has
resumes (collection fills in missing episodes, training continues from its newest checkpoint), so
running the file again continues where it stopped. Each step's final JSON line is collected into
outputs/experiments/<name>/steps.json. A step that fails stops the run with its name and exit code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from enerverse.core.outputs import write_json_atomic

MODULES = {
    "ev-collect": "sim.collect",
    "ev-train-generator": "enerverse.train",
    "ev-eval-generator": "enerverse.evaluate",
    "ev-train-policy": "policies.train",
    "ev-eval": "sim.evaluate",
    "export-generator": "enerverse.io",
}


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if v is None:
        return "null"
    return str(v)


def expand(step: dict, overrides: dict | None = None) -> list[tuple[str, list[str]]]:
    """(label, command line) for every ``foreach`` combination of one step; ``overrides`` replace or
    add args."""
    run = step.get("run")
    if run not in MODULES:
        raise SystemExit(f"error: step {step.get('name', run)!r}: run must be one of {', '.join(MODULES)}")
    loops = step.get("foreach") or {}
    keys = list(loops)
    out = []
    for combo in itertools.product(*(loops[k] for k in keys)) if keys else [()]:
        env = dict(zip(keys, combo))
        args = {**(step.get("args") or {}), **(overrides or {})}
        if run == "export-generator":
            argv = [str(args["src"]).format(**env), str(args["dst"]).format(**env)]
        else:
            argv = [f"{k}={_value(v).format(**env)}" for k, v in args.items()]
        label = " ".join([step.get("name", run), *(f"{k}={v}" for k, v in env.items())])
        out.append((label, [sys.executable, "-m", MODULES[run], *argv]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--only", default=None, help="run only steps whose name contains this text")
    ap.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override an arg of the steps that run (e.g. with --only train: codec_from=<folder>)",
    )  # fmt: skip
    args = ap.parse_args()
    try:
        spec = yaml.safe_load(Path(args.file).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"error: cannot read experiment file {args.file}: {e}") from None
    if not isinstance(spec, dict) or "name" not in spec or not isinstance(spec.get("steps"), list):
        raise SystemExit(f"error: {args.file} needs a 'name' and a list of 'steps'")
    results, out = [], Path("outputs/experiments") / spec["name"] / "steps.json"
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        raise SystemExit(f"error: --set expects KEY=VALUE, got {bad}")
    overrides = dict(kv.split("=", 1) for kv in args.set)
    for step in spec["steps"]:
        if args.only and args.only not in step.get("name", step.get("run", "")):
            continue
        try:
            commands = expand(step, overrides)
        except (KeyError, IndexError) as e:
            raise SystemExit(
                f"error: step {step.get('name', step.get('run'))!r}: unknown or missing {e}"
            ) from None
        for label, cmd in commands:
            print(f"[experiment] {label}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
            if args.dry_run:
                continue
            r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ})
            lines = r.stdout.strip().splitlines()
            if r.returncode != 0:
                raise SystemExit(f"error: step {label!r} failed with exit code {r.returncode}")
            try:
                results.append({"step": label, "result": json.loads(lines[-1])})
            except (IndexError, json.JSONDecodeError):
                results.append({"step": label, "result": lines[-1] if lines else None})
            write_json_atomic(out, {"file": args.file, "steps": results})
    if not args.dry_run:
        print(json.dumps({"experiment": spec["name"], "steps": len(results), "results": str(out)}))


if __name__ == "__main__":
    main()
