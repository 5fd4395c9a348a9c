"""WindowSampler: window counts, episode boundaries, memory padding/masks, determinism, gathered data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enerverse.core.store import EpisodeStore, WindowSampler

V, H, W = 2, 4, 4
LENGTHS = {0: 5, 1: 12, 2: 3, 3: 1}  # episode index -> T
SUCCESS = {0: True, 1: False, 2: True, 3: True}


def pixel(e: int, t: int) -> int:
    return e * 20 + t


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EpisodeStore:
    """Frames encode (episode, t): rgb == pixel(e, t), state == [e, t], action == [e, t, 100 + t]."""
    store = EpisodeStore.create(tmp_path_factory.mktemp("sampler") / "store")
    K = np.tile(np.array([[5.0, 0, 2], [0, 5.0, 2], [0, 0, 1]], np.float32), (V, 1, 1))
    for e, T in LENGTHS.items():
        with store.write_episode(
            e,
            task="t",
            instruction="i",
            seed=e,
            view_names=["a", "b"],
            view_kinds=["real", "anchor"],
            fps=10,
            K=K,
            success=SUCCESS[e],
        ) as w:
            for t in range(T):
                Tcw = np.tile(np.eye(4, dtype=np.float32), (V, 1, 1))
                Tcw[:, 0, 3] = t
                w.add_frame(
                    rgb=np.full((V, H, W, 3), pixel(e, t), np.uint8),
                    state=np.array([e, t], np.float32),
                    action=np.array([e, t, 100 + t], np.float32),
                    T_cam_world=Tcw,
                )
    return store


def all_windows(s: WindowSampler) -> list[dict]:
    return [s.window(i) for i in range(len(s))]


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({}, 4 + 11 + 2 + 0),
        ({"min_future": 0}, 5 + 12 + 3 + 1),
        ({"min_future": 3}, 2 + 9 + 0 + 0),
        ({"only_success": True}, 4 + 2 + 0),
    ],
)
def test_window_counts(store: EpisodeStore, kw: dict, expected: int) -> None:
    assert len(WindowSampler(store, **kw)) == expected


def test_windows_enumerate_each_frame_once_and_never_cross_episodes(store: EpisodeStore) -> None:
    s = WindowSampler(store, chunk=8, n_memory=4, action_horizon=8, min_future=1)
    ws = all_windows(s)
    expected = [(e, c) for e, T in LENGTHS.items() for c in range(T - 1)]
    assert [(w["episode"], w["c"]) for w in ws] == expected
    for w in ws:
        T = LENGTHS[w["episode"]]
        assert w["length"] == T
        for key, n in (("memory", 4), ("chunk", 8), ("action", 8)):
            idx, mask = w[f"{key}_idx"], w[f"{key}_mask"]
            assert idx.shape == (n,) and mask.shape == (n,) and mask.dtype == bool
            assert idx.min() >= 0 and idx.max() <= T - 1
    with pytest.raises(IndexError):
        s.window(len(s))


def test_memory_indices_sorted_below_c_and_padded_at_start(store: EpisodeStore) -> None:
    for mode in ("train", "sparse"):
        for w in all_windows(WindowSampler(store, n_memory=4, mode=mode)):
            c, idx, mask = w["c"], w["memory_idx"], w["memory_mask"]
            assert idx[-1] == c and mask[-1]
            assert np.all(np.diff(idx) >= 0)
            hist, hmask = idx[:-1], mask[:-1]
            valid = hist[hmask]
            assert np.all(valid < c) and np.all(np.diff(valid) > 0)  # distinct history frames
            assert hmask.sum() == min(c, 3)
            assert np.all(hist[~hmask] == 0) and not np.any(hmask[:-1] & ~hmask[1:])  # pad only at front
    by_c = {w["c"]: w for w in all_windows(WindowSampler(store)) if w["episode"] == 1}
    np.testing.assert_array_equal(by_c[0]["memory_idx"], [0, 0, 0, 0])
    np.testing.assert_array_equal(by_c[0]["memory_mask"], [False, False, False, True])
    np.testing.assert_array_equal(by_c[2]["memory_idx"], [0, 0, 1, 2])
    np.testing.assert_array_equal(by_c[2]["memory_mask"], [False, True, True, True])
    np.testing.assert_array_equal(by_c[3]["memory_idx"], [0, 1, 2, 3])


def test_eval_memory_spread_evenly(store: EpisodeStore) -> None:
    s = WindowSampler(store, mode="sparse")
    by_c = {w["c"]: w for w in all_windows(s) if w["episode"] == 1}
    np.testing.assert_array_equal(by_c[9]["memory_idx"], [0, 4, 8, 9])
    np.testing.assert_array_equal(by_c[10]["memory_idx"], [0, 5, 9, 10])
    before = [w["memory_idx"] for w in all_windows(s)]
    s.set_epoch(3)
    assert all(np.array_equal(a, w["memory_idx"]) for a, w in zip(before, all_windows(s)))


def test_train_uniform_prob_mixes_in_the_inference_layout(store: EpisodeStore) -> None:
    """uniform_prob=1 gives generation's evenly spread memory in train mode; 0.5 mixes both layouts;
    0 leaves the random layout untouched (same draws as before the option existed)."""

    def late(s: WindowSampler) -> list[list[int]]:
        return [w["memory_idx"].tolist() for w in all_windows(s) if w["episode"] == 1 and w["c"] >= 9]

    sparse = late(WindowSampler(store, mode="sparse"))
    assert late(WindowSampler(store, seed=0, uniform_prob=1.0)) == sparse
    assert late(WindowSampler(store, seed=0, uniform_prob=0.0)) == late(WindowSampler(store, seed=0))
    mixed = [m for e in range(20) for m in late(_at_epoch(WindowSampler(store, uniform_prob=0.5), e))]
    share = np.mean([m in sparse for m in mixed])
    assert 0.3 < share < 0.8, share  # about half, plus random draws that happen to match
    with pytest.raises(ValueError, match="uniform_prob"):
        WindowSampler(store, uniform_prob=1.5)


def _at_epoch(s: WindowSampler, epoch: int) -> WindowSampler:
    s.set_epoch(epoch)
    return s


def test_chunk_and_action_masks_at_episode_end(store: EpisodeStore) -> None:
    s = WindowSampler(store, chunk=8, action_horizon=8)
    by_c = {w["c"]: w for w in all_windows(s) if w["episode"] == 1}  # T = 12
    np.testing.assert_array_equal(by_c[0]["chunk_idx"], np.arange(1, 9))
    assert by_c[0]["chunk_mask"].all() and by_c[0]["action_mask"].all()
    np.testing.assert_array_equal(by_c[6]["chunk_idx"], [7, 8, 9, 10, 11, 11, 11, 11])
    np.testing.assert_array_equal(by_c[6]["chunk_mask"], [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(by_c[10]["chunk_idx"], [11] * 8)
    np.testing.assert_array_equal(by_c[10]["chunk_mask"], [True] + [False] * 7)
    np.testing.assert_array_equal(by_c[10]["action_idx"], [10, 11] + [11] * 6)
    np.testing.assert_array_equal(by_c[10]["action_mask"], [True, True] + [False] * 6)


def test_train_memory_deterministic_per_seed_and_epoch(store: EpisodeStore) -> None:
    def memories(seed: int, epoch: int) -> list[list[int]]:
        s = WindowSampler(store, seed=seed)
        s.set_epoch(epoch)
        return [w["memory_idx"].tolist() for w in all_windows(s)]

    base = memories(0, 0)
    assert base == memories(0, 0)
    assert base != memories(0, 1)
    assert base != memories(1, 0)
    # history frames vary across epochs for a late window (many choices of 3 from 10 frames)
    s = WindowSampler(store)
    i = [k for k, w in enumerate(all_windows(s)) if w["episode"] == 1 and w["c"] == 10][0]
    seen = set()
    for epoch in range(6):
        s.set_epoch(epoch)
        seen.add(tuple(s.window(i)["memory_idx"]))
    assert len(seen) > 1


def test_get_gathers_the_right_frames(store: EpisodeStore) -> None:
    s = WindowSampler(store, chunk=3, n_memory=4, action_horizon=4, seed=7)
    for i in range(len(s)):
        d = s.get(i, keys=("rgb", "state", "action", "T_cam_world", "K"))
        e, frames = d["episode"], np.concatenate([d["memory_idx"], d["chunk_idx"]])
        assert d["rgb"].shape == (7, V, H, W, 3) and d["rgb"].dtype == np.uint8
        np.testing.assert_array_equal(d["rgb"][:, 0, 0, 0, 0], [pixel(e, t) for t in frames])
        assert d["T_cam_world"].shape == (7, V, 4, 4)
        np.testing.assert_array_equal(d["T_cam_world"][:, 1, 0, 3], frames)
        np.testing.assert_array_equal(d["state"], [[e, t] for t in d["memory_idx"]])
        np.testing.assert_array_equal(d["action"], [[e, t, 100 + t] for t in d["action_idx"]])
        assert d["K"].shape == (V, 3, 3)
    with pytest.raises(KeyError, match="depth"):
        s.get(0, keys=("depth",))
    with pytest.raises(ValueError, match="unknown key"):
        s.get(0, keys=("pose",))
    assert set(s[0]) >= {"rgb", "state", "action", "T_cam_world", "memory_mask", "chunk_mask", "action_mask"}


@pytest.mark.parametrize("kw", [{"mode": "test"}, {"chunk": 0}, {"n_memory": 0}, {"min_future": -1}])
def test_bad_arguments(store: EpisodeStore, kw: dict) -> None:
    with pytest.raises(ValueError):
        WindowSampler(store, **kw)


def test_empty_store_has_no_windows(tmp_path: Path) -> None:
    assert len(WindowSampler(EpisodeStore.create(tmp_path / "s"))) == 0


def test_consecutive_memory_is_the_frames_right_before_c(store: EpisodeStore) -> None:
    s = WindowSampler(store, n_memory=4, mode="consecutive")
    for i in range(len(s)):
        w = s.window(i)
        c = w["c"]
        if c >= 3:
            assert w["memory_idx"].tolist() == [c - 3, c - 2, c - 1, c]
            assert w["memory_mask"].all()


def test_stride_puts_memory_and_chunk_on_every_kth_frame(store: EpisodeStore) -> None:
    s = WindowSampler(store, chunk=3, n_memory=3, action_horizon=2, mode="sparse", stride=2)
    assert len(s) == (5 - 2) + (12 - 2) + (3 - 2) + 0  # a window needs one strided future frame
    for w in all_windows(s):
        c, T = w["c"], w["length"]
        assert w["stride"] == 2 and w["memory_idx"][-1] == c
        assert ((c - w["memory_idx"]) % 2 == 0).all() and (w["memory_idx"] >= 0).all()  # c's grid
        raw = c + 2 * np.arange(1, 4)
        last_on_grid = c % 2 + 2 * ((T - 1 - c % 2) // 2)
        np.testing.assert_array_equal(w["chunk_idx"], np.minimum(raw, last_on_grid))
        np.testing.assert_array_equal(w["chunk_mask"], raw <= T - 1)
        np.testing.assert_array_equal(w["action_idx"], np.minimum(c + np.arange(2), T - 1))  # control rate
    w = s.window(s._offsets[1] + 9)  # episode 1, c = 9: grid history 1, 3, 5, 7 -> spread 1, 7 (eval)
    assert w["c"] == 9
    np.testing.assert_array_equal(w["memory_idx"], [1, 7, 9])
    train = WindowSampler(store, chunk=3, n_memory=3, mode="train", stride=3)
    for i in range(len(train)):
        w = train.window(i)
        assert ((w["c"] - w["memory_idx"]) % 3 == 0).all()


def test_aligned_stride_windows_read_only_multiples_of_k(store: EpisodeStore) -> None:
    s = WindowSampler(store, chunk=3, n_memory=3, mode="train", stride=2, aligned=True)
    assert len(s) == (5 - 1 - 2) // 2 + 1 + (12 - 1 - 2) // 2 + 1 + (3 - 1 - 2) // 2 + 1  # c = 0, 2, ...
    for w in all_windows(s):
        frames = np.concatenate([w["memory_idx"], w["chunk_idx"]])
        assert w["c"] % 2 == 0 and (frames % 2 == 0).all(), w  # past-end frames clip to the grid too


def test_chunk_and_action_rules_are_the_ones_the_policy_reads() -> None:
    """One rule for the future chunk and the action chunk: the generator's windows (WindowSampler),
    EnerVerse-A's video co-training and the policy's action targets all call these two."""
    from enerverse.core.store.sampler import action_indices, chunk_indices
    from policies.data import edge_padded

    idx, mask = chunk_indices(5, 4, 2, 12)  # frames 7, 9, 11, then past the end: the last on 5's grid
    assert idx.tolist() == [7, 9, 11, 11] and mask.tolist() == [True, True, True, False]
    idx, mask = chunk_indices(4, 3, 2, 9)  # 6, 8 on the grid; 10 > 8
    assert idx.tolist() == [6, 8, 8] and mask.tolist() == [True, True, False]
    idx, mask = action_indices(3, 4, 5)
    assert idx.tolist() == [3, 4, 4, 4] and mask.tolist() == [True, True, False, False]
    with pytest.raises(IndexError, match="chunk start 5 outside the 5 actions"):
        action_indices(5, 4, 5)
    actions = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(edge_padded(actions, 3, 4), actions[[3, 4, 4, 4]])
