"""docs/design.md §2 import direction, checked on the source with ``ast``; and ``sim`` works without torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("enerverse", "sim", "policies", "data_engine", "ros_nodes")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of every module a source file imports (top level, in functions, importlib)."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                full = f"{base}.{node.module}" if node.module else base
            else:
                full = node.module or ""
            found.add(full)
            # ``from pkg import sub`` may import the submodule pkg.sub
            found.update(
                f"{full}.{a.name}" for a in node.names if a.name != "*" and not a.name.startswith("__")
            )
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            arg = node.args[0] if node.args else None
            if (
                name in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                found.add(arg.value)
    return found


def project_files() -> list[Path]:
    files = []
    for top in PROJECT:
        root = REPO / top
        if root.is_dir():
            files += sorted(p for p in root.rglob("*.py") if ".venv" not in p.parts)
    return files


def layer(module: str) -> str | None:
    """Which layer of docs/design.md §2 a module name belongs to (None: not a project module)."""
    top = module.split(".")[0]
    if top not in PROJECT:
        return None
    if top == "enerverse":
        if module == "enerverse":
            return "enerverse-root"
        return "core" if module.split(".")[1] == "core" else "enerverse"
    return top


# importer layer -> layers it must not import (its own layer and those below it are fine)
FORBIDDEN = {
    "core": {"enerverse", "sim", "policies", "data_engine", "ros_nodes"},
    "sim": {"enerverse", "policies", "data_engine", "ros_nodes"},
    "enerverse": {"sim", "policies", "data_engine", "ros_nodes"},
    "enerverse-root": {"sim", "policies", "data_engine", "ros_nodes"},
    "policies": {"sim", "data_engine", "ros_nodes"},
    "data_engine": {"sim", "policies", "ros_nodes"},
}


def _ros_allowed(target: str) -> bool:
    t = layer(target)
    return t in ("core", "sim", "ros_nodes", "enerverse-root") or (
        t == "policies" and (target == "policies" or target.startswith("policies.runtime"))
    )


def violations() -> list[str]:
    out = []
    for path in project_files():
        mod = module_name(path)
        src_layer = "ros_nodes" if path.relative_to(REPO).parts[0] == "ros_nodes" else layer(mod)
        for target in sorted(imported_modules(path.read_text(), mod, path.name == "__init__.py")):
            t_layer = layer(target)
            if t_layer is None or t_layer == src_layer:
                continue
            rel = path.relative_to(REPO)
            if src_layer == "ros_nodes":
                if not _ros_allowed(target):
                    out.append(f"{rel}: ros_nodes imports {target} (allowed: policies.runtime, sim, core)")
            elif t_layer == "ros_nodes":
                out.append(f"{rel}: imports {target}; nothing may import ros_nodes")
            elif t_layer in FORBIDDEN.get(src_layer, set()):
                out.append(f"{rel}: {src_layer} must not import {target}")
    return out


def test_import_extractor_resolves_relative_and_lazy_imports() -> None:
    src = (
        "import os, sim.env\n"
        "from . import store\n"
        "from .config import load_config\n"
        "from ..generator import Denoiser\n"
        "def f():\n"
        "    from policies.runtime import PolicyRuntime\n"
        "    import importlib; importlib.import_module('data_engine.flywheel')\n"
    )
    got = imported_modules(src, "enerverse.core.camera", is_package=False)
    for name in (
        "os",
        "sim.env",
        "enerverse.core",
        "enerverse.core.store",
        "enerverse.core.config",
        "enerverse.generator",
        "policies.runtime",
        "data_engine.flywheel",
    ):
        assert name in got, (name, got)
    got_pkg = imported_modules("from .store import EpisodeStore\n", "enerverse.core", is_package=True)
    assert "enerverse.core.store" in got_pkg
    assert layer("enerverse.core.store") == "core" and layer("enerverse.generator") == "enerverse"
    assert layer("numpy") is None


def test_the_checker_sees_the_project() -> None:
    mods = {module_name(p) for p in project_files()}
    assert {"enerverse.core.camera", "enerverse.core.store.reader", "sim.env", "sim.collect"} <= mods
    # sanity: the checker would catch a forbidden import if one existed
    fake = imported_modules("from sim.env import EnerVerseEnv\n", "enerverse.core.camera", False)
    assert any(layer(t) in FORBIDDEN["core"] for t in fake)


def test_import_direction_follows_design() -> None:
    bad = violations()
    assert not bad, "import direction violations (docs/design.md §2):\n" + "\n".join(bad)


@pytest.mark.integration
def test_sim_imports_and_steps_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "import sim, sim.env, sim.collect, sim.evaluate, sim.rollout, sim.experts, sim.video\n"
        "import enerverse.core.store, enerverse.core.config, enerverse.core.camera\n"
        "import numpy as np\n"
        "from sim.env import EnerVerseEnv\n"
        "from sim.experts import make_expert\n"
        "from sim.rollout import batch_obs\n"
        "env = EnerVerseEnv('pick_place', views=['main', 'anchor_left'], width=16, height=16)\n"
        "obs, _ = env.reset(seed=0)\n"
        "pol = make_expert('pick_place'); pol.reset()\n"
        "for _ in range(3):\n"
        "    obs, r, term, trunc, info = env.step(pol.act(batch_obs(obs))[0, 0])\n"
        "assert obs['rgb'].shape == (2, 16, 16, 3)\n"
        "env.close()\n"
        "assert sys.modules['torch'] is None\n"
        "print('OK')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("OK")
