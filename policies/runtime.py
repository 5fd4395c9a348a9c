"""``PolicyRuntime``: the one object that runs a trained policy for ``ev-eval`` and the ROS 2 node.

    rt = PolicyRuntime("outputs/train_policy/<run>/checkpoint")  # or a loaded DiffusionPolicy
    rt.reset("pick up the red cube and place it on the green plate")
    action = rt.step(obs)           # one action [A] per control tick (queue, optional background inference)
    chunk = rt.act(obs_batch)       # or whole chunks [B, H, A] for a batch of environments (ev-eval)

Observations (dicts of numpy arrays, optionally batched with a leading B): ``rgb`` uint8 [V, H, W, 3]
with the checkpoint's views in order and its resolution; ``state`` float [S]; for EnerVerse-A also
``K`` [V, 3, 3] and ``T_cam_world`` [V, 4, 4]. Bad input raises :class:`ObservationError` naming the
expected layout; a non-finite action is never returned (``RuntimeError``).

Every observation goes into a per-environment history (codec latents for EnerVerse-A, frames for the
baseline); each decision reads ``n_memory`` frames from it (3 spread over the episode + the latest, or
the latest ones for the consecutive ablation). The history is bounded (``max_history``): when it is
full, every other frame of its older half is dropped, keeping the true frame times for the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from enerverse.core.store.sampler import memory_indices
from policies.io import load_policy


class ObservationError(ValueError):
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
        meta = policy.meta
        self.views: list[str] = list(meta["views"])
        self.resolution = int(meta["resolution"])
        self.data_meta = {k: meta[k] for k in ("rig_version",) if k in meta}  # its data's camera rig
        self.state_dim = int(meta["state_dim"])
        self.kind = policy.cfg.encoder.kind
        self.horizon = policy.cfg.head.horizon
        self.action_steps = self.horizon if action_steps is None else int(action_steps)
        if not 1 <= self.action_steps <= self.horizon:
            raise ValueError(
                f"action_steps must be in 1..{self.horizon} (the chunk length), got {action_steps}"
            )
        if background and prefetch_at >= self.action_steps:
            raise ValueError(
                f"background inference starts the next chunk when prefetch_at={prefetch_at} actions are "
                f"left; it must be below action_steps={self.action_steps} or every chunk is replaced at once"
            )
        self.action_dim = policy.cfg.head.action_dim
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
        self.history: list[list] = [[] for _ in range(B)]  # per env: [(time, item, cams [V,4,4])]
        self.t = np.zeros(B, np.int64)  # frames observed per env
        self.K: np.ndarray | None = None
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
        R, V = self.resolution, len(self.views)
        extra = ", K float [B, V, 3, 3], T_cam_world float [B, V, 4, 4]" if self.kind == "enerverse" else ""
        return (
            f"rgb uint8 [B, V={V} ({', '.join(self.views)}), {R}, {R}, 3], "
            f"state float [B, {self.state_dim}]{extra} (B may be omitted for one environment)"
        )

    def validate(self, obs: dict) -> dict:
        """Checked, batched copies: rgb [B,V,R,R,3] uint8, state [B,S] float32 (+ K, T_cam_world)."""
        if not isinstance(obs, dict) or "rgb" not in obs or "state" not in obs:
            raise ObservationError(f"expected an observation dict with {self._layout()}")
        rgb, state = np.asarray(obs["rgb"]), np.asarray(obs["state"])
        single = rgb.ndim == 4
        if single:
            rgb, state = rgb[None], state[None]
        if self.view_idx is not None and rgb.ndim == 5:
            rgb = rgb[:, self.view_idx]
        R, V, B = self.resolution, len(self.views), self.batch_size
        if rgb.dtype != np.uint8:
            raise ObservationError(f"rgb must be uint8, got {rgb.dtype}; expected {self._layout()}")
        if rgb.ndim != 5 or rgb.shape[1:] != (V, R, R, 3):
            raise ObservationError(
                f"rgb has shape {tuple(np.asarray(obs['rgb']).shape)}; expected {self._layout()}"
            )
        if rgb.shape[0] != B:
            raise ObservationError(f"{rgb.shape[0]} observations for {B} environments (reset sets the batch)")
        if state.shape != (B, self.state_dim) or not np.issubdtype(state.dtype, np.number):
            raise ObservationError(f"state has shape {state.shape}; expected {self._layout()}")
        if not np.isfinite(state).all():
            raise ObservationError(f"state contains NaN or inf: {state.tolist()}")
        out = {"rgb": rgb, "state": state.astype(np.float32)}
        if self.kind == "enerverse":
            for key, shape in (("K", (3, 3)), ("T_cam_world", (4, 4))):
                if key not in obs:
                    raise ObservationError(f"EnerVerse-A needs camera {key}: expected {self._layout()}")
                a = np.asarray(obs[key], np.float64)
                a = a[None] if single else a
                if self.view_idx is not None and a.ndim == 4:
                    a = a[:, self.view_idx]
                if a.shape != (B, V, *shape) or not np.isfinite(a).all():
                    raise ObservationError(
                        f"{key} has shape {a.shape} (or non-finite values); expected {self._layout()}"
                    )
                out[key] = a
        return out

    # --- history ---------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, obs: dict) -> None:
        """Validate ``obs`` and append it to every environment's history."""
        o = self.validate(obs)
        frames = torch.from_numpy(o["rgb"]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # [B, V, 3, R, R]
        if self.kind == "enerverse":
            gen = self.policy.generator
            items = gen.encode(frames[:, :, None].to(gen.device))[:, :, :, 0].cpu()  # [B, C, V, h, w]
            self.K = o["K"]
        else:
            items = frames
        with self._lock:
            for b in range(self.batch_size):
                cams = o["T_cam_world"][b] if "T_cam_world" in o else None
                self.history[b].append((int(self.t[b]), items[b], cams))
                if len(self.history[b]) > self.max_history:  # thin the older half
                    h = self.history[b]
                    half = len(h) // 2
                    self.history[b] = h[:half:2] + h[half:]
            self.t += 1
            self.state = o["state"]

    def _inputs(self) -> dict:
        """The model batch for the current histories (memory frames, cameras, state, instruction)."""
        if self.state is None:
            raise RuntimeError("observe() an observation before asking for actions")
        m = self.policy.cfg.n_memory
        mode = "eval" if self.policy.cfg.memory_mode == "sparse" else "consecutive"
        with self._lock:
            sel = []
            for h in self.history:
                idx = memory_indices(len(h) - 1, m, mode)[0]
                sel.append([h[i] for i in idx])
            state = self.state.copy()
            frame = self.t.copy() - 1  # per env: the time of the newest observation
        batch = {"state": torch.from_numpy(state), "instruction": list(self.instructions), "frame": frame}
        if self.kind == "cnn":
            batch["frames"] = torch.stack([torch.stack([it for _, it, _ in s], dim=1) for s in sel])
            return batch
        memory = torch.stack(
            [torch.stack([it for _, it, _ in s], dim=2) for s in sel]
        ).float()  # [B,C,V,m,h,w]
        cams = np.stack([np.stack([c for _, _, c in s], axis=1) for s in sel])  # [B, V, m, 4, 4]
        pos = np.array([[t for t, _, _ in s] for s in sel]) - np.array([s[-1][0] for s in sel])[:, None]
        batch.update(self.policy.generator_inputs(memory, self.K, cams, pos))
        return batch

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

    def step(self, obs: dict) -> np.ndarray:
        """One control tick: observe, then return the next action ([A], or [B, A] for a batch).

        With ``background`` the next chunk is computed in a worker thread once ``prefetch_at`` actions
        are left; when it arrives, the actions for ticks that already passed are skipped.
        """
        self.observe(obs)
        tick = self._ticks
        self._ticks += 1
        if self._pool is not None and self._future is None and len(self._queue) <= self.prefetch_at:
            self._future, self._future_t = self._pool.submit(self._infer, self._inputs()), tick
        if not self._queue:
            if self._future is not None:
                chunk, self._future = self._future.result(), None
                skip = tick - self._future_t
                if skip < chunk.shape[1]:
                    self._queue.extend(np.moveaxis(chunk[:, skip:], 1, 0))
            if not self._queue:
                self._queue.extend(np.moveaxis(self._infer(self._inputs()), 1, 0))
        a = self._queue.popleft()
        return a[0] if self.batch_size == 1 else a

    # --- reporting -------------------------------------------------------------------------------
    def latency(self) -> dict:
        """Per-chunk inference latency in ms: count, mean, p50, p95, max."""
        x = np.asarray(self.latencies_ms)
        if not len(x):
            return {"chunks": 0}
        return {
            "chunks": int(len(x)),
            "mean_ms": float(x.mean()),
            "p50_ms": float(np.percentile(x, 50)),
            "p95_ms": float(np.percentile(x, 95)),
            "max_ms": float(x.max()),
        }

    @torch.no_grad()
    def imagine(self, steps: int | None = None) -> np.ndarray | None:
        """EnerVerse-A only: the generator's imagined next chunk for every env, uint8 [B, V, M, R, R, 3]."""
        if self.kind != "enerverse":
            return None
        b = self._inputs()
        gen = self.policy.generator
        z = gen.sample_chunk(
            b["memory"].to(gen.device),
            b["rays"].to(gen.device),
            b["pos"].to(gen.device),
            b["instruction"],
            steps=steps,
            seed=self.seed,
        )
        x = gen.decode(z).clamp(-1, 1)  # [B, V, M, 3, R, R]
        return ((x.permute(0, 1, 2, 4, 5, 3).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)

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

    def imagine(self) -> np.ndarray | None:
        return self.runtime.imagine()


def load_for_eval(spec: str, **kw) -> EvalPolicy:
    """Entry point for ``sim.evaluate``: a checkpoint folder -> an :class:`EvalPolicy`."""
    if not (Path(spec) / "config.json").is_file():
        raise ValueError(f"policy={spec} is not a checkpoint folder (no config.json)")
    return EvalPolicy(spec, **kw)
