"""Ray, for jobs that outgrow one machine (``backend=ray`` of ``ev-data-engine`` and ``ev-eval``).

Ray is an optional dependency (extra ``distributed``), imported only when a job asks for it. Every
node needs the project installed and the job's files (stores, checkpoints) at the same absolute
paths; the driver passes its rendering and project settings (``MUJOCO_GL``, ``EV_*``, ...) on."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from enerverse.core.config import ConfigError
from enerverse.core.errors import EnerVerseError

FORWARDED_ENV = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "LP_NUM_THREADS")
"""Environment variables the workers get from the driver (besides every ``EV_*``). Not
``OMP_NUM_THREADS``: Ray sets it to a task's CPUs (1), so torch in a task uses the one CPU it holds."""


def check_backend(backend: str) -> None:
    """One clear line for a backend this install cannot run."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("backend=ray needs Ray: pip install -e '.[distributed]'")


def absolute_path(path: str | None) -> str | None:
    """``path`` made absolute against this process's folder (Ray workers start in other folders), with
    symlinks kept (their targets may exist only here); ``None`` and ``'expert'`` pass through."""
    if path is None or path == "expert":
        return path
    return str(Path(path).expanduser().absolute())


def start_ray(workers: int) -> None:
    """Join the cluster ``RAY_ADDRESS`` names, or start a new local instance with ``workers`` CPUs (one
    task per CPU; never a cluster that ``ray start`` left running here). No-op when Ray is up."""
    import ray

    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith("EV_")}
    kw: dict[str, Any] = {"include_dashboard": False}  # worker warnings reach the driver
    kw["runtime_env"] = {"env_vars": env}
    address = os.environ.get("RAY_ADDRESS")
    if address:  # a cluster's resources are its own: num_cpus may not be given when joining one
        ray.init(address=address, **kw)
    else:
        ray.init(address="local", num_cpus=workers, **kw)


def ray_map(fn: Callable[..., Any], calls: list[tuple], workers: int) -> Iterator[Any]:
    """``fn(*args)`` for every ``args`` in ``calls`` as Ray tasks (one CPU each); results in completion
    order. A project error raised in a task (a user's mistake) surfaces as itself, not wrapped."""
    import ray

    start_ray(workers)
    task = ray.remote(num_cpus=1)(fn)
    pending = [task.remote(*args) for args in calls]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, EnerVerseError):
                    raise cause from None
                raise
    finally:  # an error, or a caller that stopped early: the tasks left are not needed
        for ref in pending:
            ray.cancel(ref)
