"""Experiment files: every reported result as one YAML file of the project's own commands.

    ev-experiment configs/experiment/generator_pretrained.yaml [--only train] [--dry-run] [--set k=v]
    ev-experiment quick_pick_place                       # a name means configs/experiment/<name>.yaml
    ev-train-policy experiment=image_baseline_pick_place # one entry point: its step of that file

A file has a ``name``, a ``description`` and ``steps``. Each step runs one command (``run``: one of
:data:`MODULES`) with ``args`` as ``key=value`` settings; ``foreach`` repeats a step for every value
of a variable, substituted into the args as ``{variable}``. Every command resumes (collection fills
in missing episodes, training continues from its newest checkpoint), so running a file again
continues where it stopped. Each step's final JSON line is collected into
``outputs/experiments/<name>/steps.json``; a step that fails stops the run with its name and exit code.
SIGTERM or Ctrl-C reaches the running step once; the runner waits while it checkpoints, then stops.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
from pathlib import Path
from typing import Any

from enerverse.core.config import ConfigError
from enerverse.core.errors import user_errors
from enerverse.core.outputs import write_json_atomic
from enerverse.core.signals import run_stoppable

EXPERIMENT_DIR = Path(__file__).resolve().parents[2] / "configs" / "experiment"
MODULES = {
    "ev-collect": "sim.collect",
    "ev-train-generator": "enerverse.train",
    "ev-eval-generator": "enerverse.evaluate",
    "ev-train-policy": "policies.train",
    "ev-eval": "sim.evaluate",
    "ev-convert": "enerverse.convert",
    "export-generator": "enerverse.io",
    "export-policy": "policies.io",
    "ev-data-engine": "data_engine.jobs",  # its batch job: ev-data-engine run key=value ...
}
FILE_KEYS, STEP_KEYS = ("name", "description", "steps"), ("name", "run", "args", "foreach")


def experiment_path(ref: str) -> Path:
    """The file of ``ref``: a path, or a name in configs/experiment (ConfigError listing the names)."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = EXPERIMENT_DIR / f"{ref}.yaml"
    if candidate.is_file():
        return candidate
    names = ", ".join(sorted(x.stem for x in EXPERIMENT_DIR.glob("*.yaml")))
    raise ConfigError(f"no experiment {ref!r}: expected a file or one of {names}")


def load_experiment(ref: str) -> dict:
    """The checked contents of experiment ``ref``; ConfigError naming an unknown key and the valid ones."""
    import yaml

    path = experiment_path(ref)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read experiment file {path}: {e}") from None
    if not isinstance(spec, dict) or "name" not in spec or not isinstance(spec.get("steps"), list):
        raise ConfigError(f"{path} needs a 'name' and a list of 'steps'")
    _check_keys(spec, FILE_KEYS, str(path))
    for step in spec["steps"]:
        if not isinstance(step, dict):
            raise ConfigError(f"{path}: expected each step to be a mapping (name, run, args), got {step!r}")
        where = f"{path} step {step.get('name', step.get('run'))!r}"
        _check_keys(step, STEP_KEYS, where)
        for key in ("args", "foreach"):
            if not isinstance(step.get(key) or {}, dict):
                raise ConfigError(f"{where}: expected {key} to be a mapping (key: value), got {step[key]!r}")
        if step.get("run") not in MODULES:
            raise ConfigError(f"{where}: run must be one of {', '.join(MODULES)}, got {step.get('run')!r}")
    return {**spec, "path": str(path)}


def _check_keys(d: dict, valid: tuple, where: str) -> None:
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def experiments_for(prog: str) -> list[str]:
    """Names of the experiment files with a step that runs ``prog`` (for ``--help``)."""
    out = []
    for path in sorted(EXPERIMENT_DIR.glob("*.yaml")):
        try:
            spec = load_experiment(str(path))
        except ConfigError:
            continue
        if any(s["run"] == prog for s in spec["steps"]):
            out.append(path.stem)
    return out


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return "null" if v is None else str(v)


def step_argv(step: dict, env: dict) -> list[str]:
    """The command-line arguments of one step with the ``foreach`` variables ``env`` substituted."""
    args = step.get("args") or {}
    if step["run"] in ("export-generator", "export-policy"):  # positional src dst (+ --float32, --codec)
        flags = ["--float32"] if args.get("float32") else []
        flags += ["--codec", str(args["codec"]).format(**env)] if args.get("codec") else []
        return [str(args["src"]).format(**env), str(args["dst"]).format(**env), *flags]
    kv = [f"{k}={_value(v).format(**env)}" for k, v in args.items()]
    return ["run", *kv] if step["run"] == "ev-data-engine" else kv


def entry_args(ref: str, prog: str, given: list[str]) -> list[str]:
    """``experiment=<name>[:<step>]`` for entry point ``prog``: that step's arguments (the user's
    ``given`` key=value settings override them and fill ``foreach`` variables)."""
    name, _, step_name = ref.partition(":")
    spec = load_experiment(name)
    steps = [s for s in spec["steps"] if s["run"] == prog and (not step_name or s.get("name") == step_name)]
    if len(steps) != 1:
        names = [s.get("name") for s in spec["steps"] if s["run"] == prog]
        if not names:
            raise ConfigError(
                f"experiment {name!r} has no {prog} step; it runs {[s['run'] for s in spec['steps']]}"
            )
        raise ConfigError(
            f"experiment {name!r} has {prog} steps {names}: pick one with experiment={name}:<step>"
        )
    step = steps[0]
    user = dict(a.split("=", 1) for a in given if "=" in a)
    missing = [k for k in (step.get("foreach") or {}) if k not in user]
    if missing:
        choices = {k: step["foreach"][k] for k in missing}
        raise ConfigError(
            f"step {step.get('name')!r} repeats over {choices}: pass one value, e.g. {missing[0]}=..."
        )
    return step_argv(step, {k: user[k] for k in step.get("foreach") or {}})


def expand(step: dict, overrides: dict | None = None) -> list[tuple[str, list[str]]]:
    """(label, command line) for every ``foreach`` combination of one step; ``overrides`` replace or
    add args."""
    loops = step.get("foreach") or {}
    keys = list(loops)
    out = []
    for combo in itertools.product(*(loops[k] for k in keys)) if keys else [()]:
        env = dict(zip(keys, combo, strict=True))
        argv = step_argv({**step, "args": {**(step.get("args") or {}), **(overrides or {})}}, env)
        label = " ".join([step.get("name", step["run"]), *(f"{k}={v}" for k, v in env.items())])
        out.append((label, [sys.executable, "-m", MODULES[step["run"]], *argv]))
    return out


def run_experiment(ref: str, only: str | None = None, dry_run: bool = False, sets: list[str] = ()) -> dict:
    """Run the steps of experiment ``ref`` (those whose name contains ``only``) in order."""
    spec = load_experiment(ref)
    bad = [kv for kv in sets if "=" not in kv]
    if bad:
        raise ConfigError(f"--set expects KEY=VALUE, got {bad}")
    overrides = dict(kv.split("=", 1) for kv in sets)
    results, out = [], Path("outputs/experiments") / spec["name"] / "steps.json"
    for step in spec["steps"]:
        if only and only not in step.get("name", step["run"]):
            continue
        try:
            commands = expand(step, overrides)
        except (KeyError, IndexError) as e:
            raise ConfigError(f"step {step.get('name', step['run'])!r}: unknown or missing {e}") from None
        for label, cmd in commands:
            print(f"[experiment] {label}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
            if dry_run:
                continue
            code, stdout, stopped_by = run_stoppable(cmd)
            lines = stdout.strip().splitlines()
            if stopped_by is not None:  # the step saved its state: the same command resumes it
                print(f"[experiment] stopped by {stopped_by} in step {label!r}; run the same command "
                      "again to resume", file=sys.stderr, flush=True)  # fmt: skip
                raise SystemExit(128 + signal.Signals[stopped_by].value)
            if code != 0:
                raise ConfigError(f"step {label!r} failed with exit code {code}")
            try:
                results.append({"step": label, "result": json.loads(lines[-1])})
            except (IndexError, json.JSONDecodeError):
                results.append({"step": label, "result": lines[-1] if lines else None})
            write_json_atomic(out, {"file": spec["path"], "steps": results})
    return {"experiment": spec["name"], "steps": len(results), "results": str(out)}


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-experiment``."""
    names = ", ".join(sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml")))
    ap = argparse.ArgumentParser(prog="ev-experiment", description=__doc__.split("\n")[0],
                                 epilog=f"experiments: {names}")  # fmt: skip
    ap.add_argument("file", help="an experiment file, or the name of one in configs/experiment")
    ap.add_argument("--only", default=None, help="run only steps whose name contains this text")
    ap.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an arg of the steps that run (e.g. codec_from=<folder>)")  # fmt: skip
    args = ap.parse_args(argv)
    with user_errors():
        summary = run_experiment(args.file, args.only, args.dry_run, args.set)
    if not args.dry_run:
        print(json.dumps(summary))
