"""Framing (docs/design.md §3): the default cameras see every task object at >= 8 px, and the gripper
above it."""

from __future__ import annotations

import numpy as np
import pytest

from sim.cameras import DEFAULT_RESOLUTION, DEFAULT_VIEWS
from sim.env import EnerVerseEnv
from sim.framing import MIN_OBJECT_PX, mask_sizes, measure_task, off_border
from sim.tasks import TASKS

SEEDS = list(range(20))


@pytest.mark.integration
@pytest.mark.parametrize("task", list(TASKS))
def test_every_object_is_at_least_8_px_in_the_main_view(task: str) -> None:
    for obj in measure_task(task, SEEDS, DEFAULT_RESOLUTION, "main"):
        assert obj.share_ok >= 0.95, obj.row()
        assert obj.inside.all(), obj.row()  # the whole object is in the image


@pytest.mark.integration
@pytest.mark.parametrize("task", list(TASKS))
def test_objects_and_the_gripper_above_them_stay_in_every_default_view(task: str) -> None:
    env = EnerVerseEnv(task, views=list(DEFAULT_VIEWS))
    try:
        for seed in SEEDS[:8]:
            env.reset(seed=seed)
            points = np.stack([env.task.body_pos(o.name) for o in env.task.objects])
            points = np.concatenate([points, points + [0.0, 0.0, 0.15]])  # and the gripper 15 cm above
            for cam in env.cameras():
                uv, z = cam.project(points)
                assert (z > 0).all()
                inside = (uv >= 0).all(axis=1) & (uv[:, 0] < cam.width) & (uv[:, 1] < cam.height)
                assert inside.all(), (task, seed, cam.name, uv[~inside])
    finally:
        env.close()


def test_segmentation_labels_the_object_under_its_projected_centre() -> None:
    env = EnerVerseEnv("pick_place", views=["main", "anchor_left"], width=64, height=64, seg=True)
    try:
        obs, _ = env.reset(seed=3)
        rgb_again = env.renderer.render(env.data)[0]
        np.testing.assert_array_equal(obs["rgb"], rgb_again)  # the mask pass leaves colour rendering alone
        assert obs["seg"].shape == (2, 64, 64) and obs["seg"].dtype == np.uint8
        assert env.seg_names == ["cube", "plate"]
        for v, cam in enumerate(env.cameras()):
            uv, _ = cam.project(env.task.body_pos("cube")[None])
            u, w = uv[0].astype(int)
            assert obs["seg"][v, w, u] == 1
        assert set(np.unique(obs["seg"])) == {0, 1, 2}
    finally:
        env.close()


def test_mask_sizes_and_border() -> None:
    seg = np.zeros((16, 16), np.uint8)
    seg[2:12, 3:13] = 1  # a 10 x 10 square
    seg[0, 5] = 2  # touches the top edge
    np.testing.assert_allclose(mask_sizes(seg, 3), [10.0, 1.0, 0.0])
    np.testing.assert_array_equal(off_border(seg, 3), [True, False, True])
    assert MIN_OBJECT_PX == 8.0
