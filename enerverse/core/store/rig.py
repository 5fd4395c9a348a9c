"""Which camera rig an episode store or a checkpoint was made with, and the check that refuses mixing.

The simulator's camera rig (poses, field of view, default resolution) decides what a pixel shows. A
store records the version it was collected with (``collection.rig_version`` in its root attributes),
and a checkpoint records the version of its training data. Data from before the setting existed is
rig version 1 (the 64 px room-framing camera); a model trained on one rig reading another would
misread every frame without an error, so readers call :func:`check_rig_version` instead.
"""

from __future__ import annotations

from typing import Any

from .format import StoreFormatError

LEGACY_RIG_VERSION = 1
RIG_KEY = "rig_version"


Rig = int | str  # the tabletop's versions are ints (1, 2, ...); other simulators name theirs


def store_rig_version(store: Any) -> Rig | None:
    """Rig version of a store collected in simulation; None for stores without collection settings
    (real or generated data, whose cameras are their own)."""
    collection = store.root_attrs.get("collection")
    if collection is None:
        return None
    if RIG_KEY in collection:
        return collection[RIG_KEY]
    # collected before rig versions: the tabletop's v1; other simulators' rigs did not change then
    return None if str(collection.get("task", "")).startswith("metaworld/") else LEGACY_RIG_VERSION


def legacy_rig_version(current: Rig | None) -> Rig:
    """The rig of data written before rig versions existed, for a simulator whose rig is ``current``
    now: the tabletop's was v1; other simulators' rigs (named by strings) did not change then."""
    return current if isinstance(current, str) else LEGACY_RIG_VERSION


def recorded_rig_version(config: dict, current: Rig | None = None) -> Rig | None:
    """Rig version recorded in a checkpoint's config or metadata dict: its value (None: unknown, e.g.
    trained on real or generated data), or, when the key is missing, :func:`legacy_rig_version` of
    ``current`` (the rig of the data it is about to read)."""
    if RIG_KEY in config:
        return config[RIG_KEY]
    return legacy_rig_version(current)


def check_rig_version(expected: Rig | None, got: Rig | None, who: str, where: str) -> None:
    """Raise StoreFormatError naming both versions when ``who`` (trained on rig ``expected``) would
    read ``where`` (recorded on rig ``got``); None on either side means unknown and passes."""
    if expected is None or got is None or expected == got:
        return
    raise StoreFormatError(
        f"{where} uses camera rig v{got}, but {who} was trained on rig v{expected}: the cameras "
        f"frame the scene differently (sim/cameras.py RIG_VERSION), so its frames would be misread. "
        f"Use data and checkpoints of one rig: re-collect with ev-collect, or retrain on rig v{got}"
    )
