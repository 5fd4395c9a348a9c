"""The shipped policy checkpoints: they load, drive the simulated arm, and did not get worse.

Each shipped policy carries ``quality.json`` (scripts/policy_card.py): how many of a fixed set of
seeded episodes it succeeds on. Rolling it out here on the same seeds must succeed as often (one
episode of slack for floating-point differences between machines), so a quality regression fails CI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    p.parent
    for p in (REPO / "checkpoints").glob("*/config.json")
    if json.loads(p.read_text()).get("format") == "enerverse-policy"
)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SHIPPED, reason="no shipped policy checkpoint in checkpoints/"),
]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_is_small_of_the_current_rig_and_drives_the_arm(folder: Path) -> None:
    import sim  # noqa: F401  (GL defaults)
    from policies.runtime import PolicyRuntime
    from sim.cameras import RIG_VERSION
    from sim.env import EnerVerseEnv

    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size <= 30 * 2**20, f"{folder} is {size / 2**20:.1f} MiB (limit 30)"
    assert (folder / "README.md").is_file() and (folder / "quality.json").is_file()
    rt = PolicyRuntime(folder)
    assert rt.data_meta.get("rig_version") == RIG_VERSION, "shipped policies must be of the current rig"
    task = (rt.data_meta.get("tasks") or [rt.data_meta["task"]])[0]
    env = EnerVerseEnv(task, views=rt.views, width=rt.resolution, height=rt.resolution)
    try:
        obs, info = env.reset(seed=1000)
        rt.reset(info["instruction"])
        for _ in range(2 * rt.horizon):
            a = rt.step(obs)
            assert a.shape == (7,) and np.isfinite(a).all()
            obs, *_ = env.step(a)
    finally:
        env.close()
    assert rt.latency()["chunks"] == 2


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_keeps_its_recorded_success(folder: Path) -> None:
    """CI fails when the shipped policy succeeds on fewer of its reference episodes than its card says."""
    sys.path.insert(0, str(REPO / "scripts"))
    from policy_card import rollout_quality

    recorded = json.loads((folder / "quality.json").read_text())
    now = rollout_quality(folder, recorded["episodes"])
    for task, q in recorded["tasks"].items():
        got = now["tasks"][task]["successes"]
        assert got >= q["successes"] - 1, (
            f"{folder.name} on {task}: {got} of {recorded['episodes']} reference episodes succeed, "
            f"the card records {q['successes']} ({now['tasks'][task]['per_episode']})"
        )


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_the_model_card_names_data_recipe_and_notes(folder: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from policy_card import card

    quality = json.loads((folder / "quality.json").read_text())
    text = card(folder, quality, "configs/experiment/x.yaml", [], notes="Hand-written note.\n")
    train = json.loads((folder / "config.json").read_text())["train"]
    assert f"`{train['store']}`" in text and "configs/experiment/x.yaml" in text
    assert text.index("Made by") < text.index("Hand-written note.") < text.index("## CI quality")
