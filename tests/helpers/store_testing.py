"""Shared helpers of the episode-store tests: metadata, writing a whole episode, the empty-store check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers.store_crash_writer import KINDS, VIEWS, frame

from enerverse.core.store import EpisodeStore

REPO = Path(__file__).resolve().parents[2]
CRASH_WRITER = REPO / "tests" / "helpers" / "store_crash_writer.py"


def meta(ep: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """write_episode keyword arguments for an episode of :func:`make_episode`, overridden by ``kw``."""
    base = {
        "task": "push",
        "instruction": "push the cube",
        "seed": 3,
        "view_names": VIEWS,
        "view_kinds": KINDS,
        "fps": 10.0,
        "K": ep["K"],
    }
    return base | kw


def write(store: EpisodeStore, index: int, ep: dict[str, Any], **kw: Any) -> None:
    """Write and commit every frame of ``ep`` as episode ``index``."""
    with store.write_episode(index, **meta(ep, **kw)) as w:
        for t in range(len(ep["rgb"])):
            w.add_frame(**frame(ep, t))


def assert_nothing_written(store: EpisodeStore) -> None:
    """The store holds no episode, no incomplete one and no leftover folder."""
    reopened = EpisodeStore.open(store.path)
    assert reopened.indices() == [] and len(reopened) == 0
    assert reopened.incomplete() == []
    assert sorted(os.listdir(store.episodes_dir)) == ["zarr.json"]


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    """An empty store in the test's temporary folder."""
    return EpisodeStore.create(tmp_path / "store")
