"""Policy training data: every frame (or every ``stride``-th) of every episode is a decision point.

An item at frame ``c`` of an episode: memory frames (``n_memory``: 3 spread over frames 0..c-1 + c, or
the latest ones for the consecutive ablation, on c's grid of every ``memory_stride``-th frame - the
same rule the runtime applies to its history), the
state at ``c``, the instruction, and the action chunk ``action[c : c + H]``.

An episode's last frame is its terminal observation (the state the task was judged in); its action is
the recorder's synthetic "hold" (see ``sim.rollout.record_episode``), not a demonstrated one. So that
frame is never a decision point (nor, therefore, in any memory window), its action is left out of the
normalisation statistics, and a chunk that runs past the last demonstrated action
repeats that action (Diffusion Policy's edge padding). Padding with zero motion instead taught the
policy to stop wherever the scene looks like the end of a demonstration: on ``reach`` it froze 4-16 cm
short of the sphere (success needs 3 cm), which 64 px views cannot tell apart.

Episodes are read once into memory (views selected, images resized to the model's resolution). The
policy's encoder computes what it caches (``PolicyData.cache``) and draws its batch inputs itself
(:meth:`~policies.encoder_api.ObservationEncoder.prepare_data` / ``data_batch``): EnerVerse-A with a
frozen generator encodes every frame once with the codec and caches one feature map per decision
point, so training the head never runs the generator.
"""

from __future__ import annotations

import numpy as np
import torch

from enerverse.core.camera import scale_intrinsics
from enerverse.core.config import ConfigError
from enerverse.core.frames import resize_frames, to_model
from enerverse.core.progress import progress
from enerverse.core.store import EpisodeStore, store_rig_version
from enerverse.core.store.format import check_finite
from enerverse.core.store.sampler import action_indices, grid_memory_indices
from enerverse.core.store.stats import summarize

STATE_STD_FLOOR = 1e-2
"""State dimensions that barely move in the demonstrations (e.g. a fixed gripper orientation) would
otherwise turn millimetre drift at test time into huge z-scores."""


def select_views(store_views: list[str], wanted: list[str] | None) -> list[int]:
    """Indices of the wanted views in the store's view list (all, in store order, when None)."""
    if wanted is None:
        return list(range(len(store_views)))
    missing = [v for v in wanted if v not in store_views]
    if missing:
        raise ConfigError(f"views {missing} are not in the store; it has {store_views}")
    return [store_views.index(v) for v in wanted]


def edge_padded(actions: np.ndarray, start: int, horizon: int) -> np.ndarray:
    """actions[start : start + horizon] [H, A], padded past the end by repeating the last action."""
    return actions[action_indices(start, horizon, actions.shape[0])[0]].astype(np.float32)


class PolicyData:
    """Decision points of the given episodes (see module docstring)."""

    def __init__(
        self,
        store: EpisodeStore | list[tuple[EpisodeStore, list[int]]],
        episodes: list[int] | None,
        views: list[str] | None,
        resolution: int,
        n_memory: int,
        horizon: int,
        memory_mode: str = "sparse",
        stride: int = 1,
        privileged: bool = False,
        memory_stride: int = 1,
    ) -> None:
        """``store`` and its ``episodes``, or a list of (store, episodes) and ``episodes=None`` (several
        tasks in one policy). ``stride``: every n-th frame is a decision point. ``privileged``: also load
        each frame's object state (the auxiliary target); ConfigError when an episode did not record
        it. ``memory_stride``: memory frames lie on the decision frame's grid of every n-th frame (a
        generator's frame stride, so that EnerVerse-A reads memory the way its generator was trained)."""
        if stride < 1:
            raise ConfigError(f"decision stride must be >= 1, got {stride}")
        sources = [(store, episodes)] if isinstance(store, EpisodeStore) else list(store)
        for st, eps in sources:
            if not eps:
                raise ConfigError(f"no episodes to train on in {st.path}")
        rigs = {store_rig_version(st) for st, _ in sources}
        if len(rigs) > 1:
            raise ConfigError(f"the stores were recorded with different camera rigs {sorted(rigs)}")
        self.rig_version = rigs.pop()  # the camera rig the frames were recorded with
        self.store_views = list(sources[0][0].episode(sources[0][1][0]).attrs["view_names"])
        self.view_idx = select_views(self.store_views, views)
        self.views = [self.store_views[i] for i in self.view_idx]
        self.resolution, self.n_memory, self.horizon = resolution, n_memory, horizon
        self.memory_stride = memory_stride
        self.mode = memory_mode
        self.rgb, self.state, self.action, self.cams, self.K, self.instruction = [], [], [], [], [], []
        self.privileged: list[np.ndarray] | None = [] if privileged else None  # per episode [T, P]
        self.names: list[str] = []  # per episode: <store>/<index>
        self.origin: list[tuple[EpisodeStore, int]] = []  # per episode: its store and index there
        lacking: list[str] = []
        todo = [(st, e) for st, eps in sources for e in eps]
        for st, e in progress(todo, desc="load episodes", unit="ep"):
            if not self._load(st, e):
                lacking.append(self.names[-1])
        if lacking:
            raise ConfigError(
                f"the auxiliary object-state loss (policy.aux_weight > 0) needs episodes that recorded "
                f"'privileged'; episodes {lacking[:5]} ({len(lacking)} of {len(todo)}) did not. "
                f"Re-collect them with ev-collect, or set policy.aux_weight=0"
            )
        if self.privileged is not None and len({p.shape[1] for p in self.privileged}) > 1:
            # several tasks with object states of different sizes: pad with NaN (no target there)
            P = max(p.shape[1] for p in self.privileged)
            self.privileged = [
                np.pad(p, ((0, 0), (0, P - p.shape[1])), constant_values=np.nan) for p in self.privileged
            ]
        short = [e for e, a in zip(self.names, self.action, strict=True) if len(a) < 2]
        if short:
            raise ConfigError(
                f"episodes {short[:5]} have fewer than 2 frames (a demonstrated action + the terminal frame)"
            )
        # the terminal frame (synthetic hold action) is not a decision point
        self.items = [(k, c) for k, a in enumerate(self.action) for c in range(0, len(a) - 1, stride)]
        self.cache: dict = {}  # the encoder's (e.g. per-episode latents, per-decision features)

    def _load(self, store: EpisodeStore, e: int) -> bool:
        """Append episode ``e`` of ``store``; False when the object state is wanted but not recorded.
        StoreFormatError naming the episode when its state or actions hold NaN or inf."""
        ep = store.episode(e)
        self.names.append(f"{store.path.name}/{e}")
        self.origin.append((store, e))
        if list(ep.attrs["view_names"]) != self.store_views:
            raise ConfigError(
                f"episode {self.names[-1]} has views {ep.attrs['view_names']}, expected {self.store_views}"
            )
        state, action = ep.load("state").astype(np.float32), ep.load("action").astype(np.float32)
        check_finite(f"{store.path} episode {e}", {"state": state, "action": action})  # before the frames
        rgb = ep.load("rgb")[:, self.view_idx]  # [T, V, H, W, 3]
        H, R = rgb.shape[2], self.resolution
        self.rgb.append(resize_frames(rgb, R))
        K = ep.load("K")[self.view_idx].astype(np.float64)
        self.K.append(np.stack([scale_intrinsics(k, H, H, R, R) for k in K]))
        self.cams.append(ep.load("T_cam_world")[:, self.view_idx])  # [T, V, 4, 4]
        self.state.append(state)
        self.action.append(action)
        self.instruction.append(str(ep.attrs["instruction"]))
        if self.privileged is None:
            return True
        if not ep.has("privileged"):
            return False
        self.privileged.append(ep.load("privileged").astype(np.float32))
        return True

    def __len__(self) -> int:
        return len(self.items)

    @property
    def episodes(self) -> int:
        """Number of loaded episodes."""
        return len(self.rgb)

    def length(self, k: int) -> int:
        """Frames of loaded episode ``k`` (its terminal frame included)."""
        return len(self.rgb[k])

    @property
    def state_dim(self) -> int:
        return int(self.state[0].shape[1])

    @property
    def privileged_dim(self) -> int:
        """P, the size of the object-state vector (0 when not loaded)."""
        return int(self.privileged[0].shape[1]) if self.privileged else 0

    def stats(self) -> dict[str, np.ndarray]:
        """Action min/max over the demonstrated actions (not the terminal hold), state (and object
        state) mean/std over every frame."""
        a = summarize(np.concatenate([x[:-1] for x in self.action]))
        s = summarize(np.concatenate(self.state), STATE_STD_FLOOR)
        out = {"action_lo": a["min"], "action_hi": a["max"], "state_mean": s["mean"], "state_std": s["std"]}
        if self.privileged:
            p = np.concatenate(self.privileged)  # NaN: no such object in that task (multi-task padding)
            cols = [summarize(p[np.isfinite(p[:, d]), d : d + 1], STATE_STD_FLOOR) for d in range(p.shape[1])]
            out["privileged_mean"] = np.concatenate([c["mean"] for c in cols])
            out["privileged_std"] = np.concatenate([c["std"] for c in cols])
        return out

    def memory(self, k: int, c: int) -> np.ndarray:
        """Memory frame indices [n_memory] for decision point c of episode k."""
        return grid_memory_indices(c, self.n_memory, self.mode, self.memory_stride)[0]

    def frames(self, k: int, idx: np.ndarray) -> torch.Tensor:
        """Frames [V, len(idx), 3, R, R] in [-1, 1]."""
        return to_model(self.rgb[k][idx]).transpose(0, 1)  # [T, V, 3, R, R] -> [V, T, 3, R, R]

    def item(self, i: int) -> dict:
        """Everything but the observation encoding: state [S], actions [H, A], instruction (and the
        object state [P] when loaded)."""
        k, c = self.items[i]
        out = {
            "state": torch.from_numpy(self.state[k][c]),
            "actions": torch.from_numpy(edge_padded(self.action[k][:-1], c, self.horizon)),
            "instruction": self.instruction[k],
        }
        if self.privileged is not None:
            out["privileged"] = torch.from_numpy(self.privileged[k][c])
        return out

    def batch(self, items: list[int], policy, finetune: bool = False, video: bool = False) -> dict:
        """A training batch: the policy encoder's inputs (:meth:`ObservationEncoder.data_batch`) +
        state [B, S], actions [B, H, A], instruction (+ privileged [B, P] when loaded)."""
        rows = [self.item(i) for i in items]
        out = {
            "state": torch.stack([r["state"] for r in rows]),
            "actions": torch.stack([r["actions"] for r in rows]),
            "instruction": [r["instruction"] for r in rows],
        }
        if self.privileged is not None:
            out["privileged"] = torch.stack([r["privileged"] for r in rows])
        out.update(policy.encoder.data_batch(self, items, finetune, video))
        return out
