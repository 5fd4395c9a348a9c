"""Episode store: zarr v3 directory of crash-safely committed multi-view episodes (numpy + zarr only).

Layout and validation rules are in :mod:`enerverse.core.store.format`; see docs/design.md §3.
"""

from __future__ import annotations

from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PROVENANCES,
    VIEW_KINDS,
    StoreFormatError,
    WriterConflictError,
)
from .reader import EpisodeStore, EpisodeView
from .rig import check_rig_version, legacy_rig_version, recorded_rig_version, store_rig_version
from .sampler import WindowSampler
from .writer import EpisodeWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PROVENANCES",
    "VIEW_KINDS",
    "EpisodeStore",
    "EpisodeView",
    "EpisodeWriter",
    "StoreFormatError",
    "WindowSampler",
    "WriterConflictError",
    "check_rig_version",
    "legacy_rig_version",
    "recorded_rig_version",
    "store_rig_version",
]
