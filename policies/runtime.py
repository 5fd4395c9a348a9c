"""``PolicyRuntime``: the one object that runs a trained policy for ``ev-eval`` and the ROS 2 node.

    rt = PolicyRuntime("outputs/train_policy/<run>/checkpoint")  # or a loaded DiffusionPolicy
    rt.reset("pick up the red cube and place it on the green plate")
    action = rt.step(obs)           # one action [A] per control tick (queue, optional background inference)
    chunk = rt.act(obs_batch)       # or whole chunks [B, H, A] for a batch of environments (ev-eval)

Observations are dicts of numpy arrays, optionally batched with a leading B, carrying the input
features the policy declares (``policy.input_features()``, from its registered encoder): ``rgb`` uint8
[V, H, W, 3] with the checkpoint's views in order and its resolution; ``state`` float [S]; with a
generator (EnerVerse-A, fused) also ``K`` [V, 3, 3] and ``T_cam_world`` [V, 4, 4]. Bad input raises
:class:`ObservationError` naming the expected layout; a non-finite action is never returned
(``RuntimeError``).

Every observation goes into a per-environment history of the encoder's items (uint8 frames, whose
codec latents EnerVerse-A computes the first time a decision reads them, + cameras); each decision
reads ``n_memory`` frames from it (3 spread over the episode + the latest, or the latest ones for the
consecutive ablation). With ``background`` the worker thread builds the batch, codec calls included.
The history is bounded (``max_history``): when it is full, every other frame of its older half is
dropped, keeping the true frame times for the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from enerverse.core.checkpoint import CheckpointError
from enerverse.core.config import ConfigError
from enerverse.core.errors import EnerVerseError
from enerverse.core.frames import to_uint8
from enerverse.core.latency import latency_summary
from enerverse.core.store.sampler import grid_memory_indices
from policies.encoder_api import InputFeature
from policies.io import load_policy


class ObservationError(EnerVerseError, ValueError):
    """An observation does not match what the checkpoint expects."""


class PolicyRuntime:
    """Checkpoint + observation history + action queue (see module docstring)."""

    def __init__(
        self,
        policy,
        device: str = "cpu",
        steps: int | None = None,
        background: bool = False,
        prefetch_at: int = 2,
        max_history: int = 4096,
        view_names: list[str] | None = None,
        seed: int = 0,
        action_steps: int | None = None,
    ) -> None:
        """``policy``: a checkpoint folder or a DiffusionPolicy. ``view_names``: the views of incoming
        observations when they carry more than the checkpoint's (the runtime picks its own by name).
        ``action_steps``: actions executed from each predicted chunk before the next decision (receding
        horizon; default: the whole chunk)."""
        if isinstance(policy, str | Path):
            policy = load_policy(policy, device)
        self.policy = policy.eval()
        spec = policy.spec
        self.views: list[str] = list(spec.views)
        self.resolution, self.state_dim = spec.resolution, spec.state_dim
        # its data's camera rig (absent: recorded before rigs were versioned)
        self.data_meta: dict = {} if spec.rig_version is None else {"rig_version": spec.rig_version}
        trained_on = spec.tasks or ([spec.task] if spec.task else [])
        if trained_on:
            self.data_meta["tasks"] = list(trained_on)
        self.encoder = policy.encoder
        self.features = policy.input_features()  # what every observation must carry
        self.horizon = policy.cfg.head.horizon
        self.action_steps = self.horizon if action_steps is None else int(action_steps)
        if not 1 <= self.action_steps <= self.horizon:
            raise ConfigError(
                f"action_steps must be in 1..{self.horizon} (the chunk length), got {action_steps}"
            )
        if background and prefetch_at >= self.action_steps:
            raise ConfigError(
                f"background inference starts the next chunk when prefetch_at={prefetch_at} actions are "
                f"left; it must be below action_steps={self.action_steps} or every chunk is replaced at once"
            )
        self.action_dim = policy.cfg.head.action_dim
        if steps is not None and not 1 <= steps <= policy.cfg.head.train_timesteps:
            raise ConfigError(
                f"the action head's sampling steps must be in 1..{policy.cfg.head.train_timesteps} "
                f"(its training timesteps), got {steps}"
            )
        self.steps, self.background, self.prefetch_at = steps, background, prefetch_at
        self.max_history, self.seed = max(max_history, 2 * policy.cfg.n_memory), seed
        self.view_idx = None
        if view_names is not None:
            missing = [v for v in self.views if v not in view_names]
            if missing:
                raise ObservationError(f"the policy needs views {self.views}; observations have {view_names}")
            self.view_idx = [list(view_names).index(v) for v in self.views]
        self.latencies_ms: list[float] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy") if background else None
        self._lock = threading.Lock()
        self._future: Future | None = None
        self.reset([""])

    # --- episode state ---------------------------------------------------------------------------
    def reset(self, instructions: str | list[str], batch_size: int | None = None) -> None:
        """Start new episodes: one instruction per environment (a string broadcasts to ``batch_size``)."""
        if isinstance(instructions, str):
            instructions = [instructions] * (batch_size or 1)
        if self._future is not None:  # a chunk of the previous episode still computing: let it finish
            self._future.exception()
        self.instructions = list(instructions)
        B = len(self.instructions)
        self.history: list[list] = [[] for _ in range(B)]  # per env: [(time, the encoder's item)]
        self.t = np.zeros(B, np.int64)  # frames observed per env
        self.state: np.ndarray | None = None
        self._queue: deque = deque()
        self._future = None
        self._future_t = 0
        self._ticks = 0
        self._chunk_index = 0

    @property
    def batch_size(self) -> int:
        return len(self.instructions)

    # --- validation ------------------------------------------------------------------------------
    def _layout(self) -> str:
        return (
            ", ".join(f.describe(self.views) for f in self.features)
            + " (B may be omitted for one environment)"
        )

    def validate(self, obs: dict) -> dict:
        """Checked, batched copies of every declared input feature (:meth:`DiffusionPolicy.input_features`):
        uint8 entries as they are, float entries as float64, views picked by name."""
        missing = [f.key for f in self.features if not isinstance(obs, dict) or f.key not in obs]
        if missing:
            raise ObservationError(f"the observation lacks {missing}; expected {self._layout()}")
        single = np.asarray(obs[self.features[0].key]).ndim == len(self.features[0].shape)
        return {f.key: self._check(f, obs[f.key], single) for f in self.features}

    def _check(self, f: InputFeature, value, single: bool) -> np.ndarray:
        """One feature, batched ([B, *f.shape]), views selected, dtype and finiteness checked."""
        a = np.asarray(value)
        a = a[None] if single else a
        if f.per_view and self.view_idx is not None and a.ndim == len(f.shape) + 1:
            a = a[:, self.view_idx]
        if f.dtype == "uint8" and a.dtype != np.uint8:
            raise ObservationError(f"{f.key} must be uint8, got {a.dtype}; expected {self._layout()}")
        if f.dtype == "float" and not (
            np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
        ):
            raise ObservationError(f"{f.key} must be numeric, got {a.dtype}; expected {self._layout()}")
        if a.ndim == len(f.shape) + 1 and a.shape[1:] == f.shape and a.shape[0] != self.batch_size:
            raise ObservationError(
                f"{a.shape[0]} observations for {self.batch_size} environments (reset sets the batch)"
            )
        if a.shape != (self.batch_size, *f.shape):
            raise ObservationError(
                f"{f.key} has shape {tuple(np.asarray(value).shape)}; expected {self._layout()}"
            )
        if f.dtype == "float":
            a = a.astype(np.float64)
            if not np.isfinite(a).all():
                raise ObservationError(f"{f.key} contains NaN or inf: expected finite values")
        return a

    # --- history ---------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, obs: dict) -> None:
        """Validate ``obs`` and append the encoder's history item to every environment's history."""
        o = self.validate(obs)
        items = self.encoder.observe(o)
        with self._lock:
            for b in range(self.batch_size):
                self.history[b].append((int(self.t[b]), items[b]))
                if len(self.history[b]) > self.max_history:  # thin the older half
                    h = self.history[b]
                    half = len(h) // 2
                    self.history[b] = h[:half:2] + h[half:]
            self.t += 1
            self.state = o["state"].astype(np.float32)

    def _inputs(self) -> dict:
        """The model batch for the current histories (the encoder's memory inputs, state, instruction)."""
        return self._assemble(self._snapshot())

    def _snapshot(self) -> tuple[list, np.ndarray, np.ndarray]:
        """What a decision reads, taken under the lock: the memory items of every history, the state
        and the time of the newest observation per environment."""
        if self.state is None:
            raise RuntimeError("observe() an observation before asking for actions")
        with self._lock:
            return [self._memory(h) for h in self.history], self.state.copy(), self.t.copy() - 1

    def _infer_snapshot(self, snap: tuple[list, np.ndarray, np.ndarray]) -> np.ndarray:
        """The background worker's job: build the batch (the encoder's codec calls happen here, off
        the control thread), then infer."""
        return self._infer(self._assemble(snap))

    def _assemble(self, snap: tuple[list, np.ndarray, np.ndarray], envs: list[int] | None = None) -> dict:
        """The model batch of a snapshot, for every environment or only ``envs``."""
        sel, state, frame = snap
        instructions = list(self.instructions)
        if envs is not None:  # only their memory frames are encoded
            sel, state, frame = [sel[i] for i in envs], state[envs], frame[envs]
            instructions = [instructions[i] for i in envs]
        batch = {"state": torch.from_numpy(state), "instruction": instructions, "frame": frame}
        pos = np.array([[t for t, _ in s] for s in sel]) - np.array([s[-1][0] for s in sel])[:, None]
        batch.update(self.encoder.memory_batch([[it for _, it in s] for s in sel], pos))
        return batch

    def _memory(self, history: list) -> list:
        """The memory frames of one history: the training rule (:func:`grid_memory_indices`) applied to
        the newest frame's time, each taken as the kept frame nearest in time (the history is thinned)."""
        cfg = self.policy.cfg
        mode = cfg.memory_mode
        times = np.array([t for t, _ in history])
        want = grid_memory_indices(int(times[-1]), cfg.n_memory, mode, self.encoder.memory_stride)[0]
        return [history[i] for i in np.abs(times[None, :] - want[:, None]).argmin(axis=1)]

    # --- inference -------------------------------------------------------------------------------
    def _infer(self, batch: dict) -> np.ndarray:
        t0 = time.perf_counter()
        with self._lock:  # the background worker and the caller's thread both infer
            seed = self.seed + self._chunk_index
            self._chunk_index += 1
        actions = self.policy.predict(batch, steps=self.steps, seed=seed).cpu().numpy()  # [B, H, A]
        self.latencies_ms.append((time.perf_counter() - t0) * 1000)
        if not np.isfinite(actions).all():
            raise RuntimeError("the policy produced a non-finite action; refusing to return it")
        return actions[:, : self.action_steps]

    def act(self, obs: dict) -> np.ndarray:
        """Observe ``obs`` and return the next chunk [B, action_steps, A] (the ev-eval protocol)."""
        self.observe(obs)
        return self._infer(self._inputs())

    def step(self, obs: dict, block: bool = True) -> np.ndarray | None:
        """One control tick: observe, then return the next action ([A], or [B, A] for a batch).

        With ``background`` the next chunk is computed in a worker thread once ``prefetch_at`` actions
        are left; when it arrives, the actions for ticks that already passed are skipped. With
        ``block=False`` (and ``background``) a tick whose action is not computed yet returns None
        instead of waiting: a real-time caller holds the arm for that tick.
        """
        self.observe(obs)
        tick = self._ticks
        self._ticks += 1
        if self._pool is not None and self._future is None and len(self._queue) <= self.prefetch_at:
            self._future, self._future_t = self._pool.submit(self._infer_snapshot, self._snapshot()), tick
        if not self._queue:
            if self._future is not None:
                if not block and not self._future.done():
                    return None
                chunk, self._future = self._future.result(), None
                skip = tick - self._future_t
                if skip < chunk.shape[1]:
                    self._queue.extend(np.moveaxis(chunk[:, skip:], 1, 0))
            if not self._queue and not block and self._pool is not None:
                self._future, self._future_t = self._pool.submit(self._infer_snapshot, self._snapshot()), tick
                return None
            if not self._queue:
                self._queue.extend(np.moveaxis(self._infer(self._inputs()), 1, 0))
        a = self._queue.popleft()
        return a[0] if self.batch_size == 1 else a

    # --- reporting -------------------------------------------------------------------------------
    def latency(self) -> dict:
        """Per-chunk inference latency in ms: count, mean, p50, p95, max."""
        return latency_summary(self.latencies_ms)

    @torch.no_grad()
    def imagine(self, steps: int | None = None, envs: list[int] | None = None) -> np.ndarray | None:
        """With a generator (EnerVerse-A, fused): its imagined next chunk for every env (or only for
        ``envs``, in their order), uint8 [B, V, M, R, R, 3]; None for an encoder without one."""
        if self.policy.generator is None:
            return None
        if envs is not None:
            envs = [int(i) for i in envs]
            if not envs or not all(0 <= i < self.batch_size for i in envs):
                raise ValueError(
                    f"imagine(envs=...) expects indices in [0, {self.batch_size}), at least one; got {envs}"
                )
        b = self._assemble(self._snapshot(), envs)
        gen = self.policy.generator
        z = gen.sample_chunk(
            b["memory"].to(gen.device),
            b["rays"].to(gen.device),
            b["pos"].to(gen.device),
            b["instruction"],
            steps=steps,
            seed=self.seed,
        )
        return to_uint8(gen.decode(z))  # [B, V, M, 3, R, R] -> [B, V, M, R, R, 3]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class EvalPolicy:
    """Adapter for ``ev-eval`` (``reset(instructions)``, ``observe(obs)``, ``act(obs) -> [B, H, A]``).

    Registered as the ``checkpoint`` entry of the ``enerverse.policy_loaders`` entry-point group, so
    ``sim`` can evaluate checkpoints without importing ``policies``."""

    def __init__(self, folder: str, device: str = "cpu", **kw) -> None:
        self.runtime = PolicyRuntime(folder, device, **kw)
        self.views, self.resolution = self.runtime.views, self.runtime.resolution
        self.data_meta = self.runtime.data_meta

    def reset(self, instructions: list[str] | None = None) -> None:
        self.runtime.reset(list(instructions or [""]))

    def observe(self, obs: dict) -> None:
        self.runtime.observe(obs)

    def act(self, obs: dict) -> np.ndarray:
        return self.runtime.act(obs)

    def imagine(self, envs: list[int] | None = None) -> np.ndarray | None:
        return self.runtime.imagine(envs=envs)


def load_for_eval(spec: str, **kw) -> EvalPolicy:
    """Entry point for ``sim.evaluate``: a checkpoint folder -> an :class:`EvalPolicy`."""
    if not (Path(spec) / "config.json").is_file():
        raise CheckpointError(f"policy={spec} is not a checkpoint folder (no config.json)")
    return EvalPolicy(spec, **kw)
