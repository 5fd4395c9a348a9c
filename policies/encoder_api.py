"""The observation-encoder contract: one interface, several registered encoders.

An encoder turns what a robot observes into condition tokens for the action head. The policy, the
training data and :class:`~policies.runtime.PolicyRuntime` talk to it only through this interface, so
none of them looks at ``encoder.kind``:

- **what it needs**: :meth:`ObservationEncoder.input_features`, typed :class:`InputFeature` entries
  (key, dtype, per-environment shape) that the runtime validates observations against;
- **how it caches**: :meth:`~ObservationEncoder.observe` turns one validated observation into the
  per-environment item the runtime keeps in its history (frames, cameras; EnerVerse-A encodes a
  frame the first time :meth:`~ObservationEncoder.memory_batch` reads it), and
  :meth:`~ObservationEncoder.prepare_data` computes the training data's caches once;
- **how it tokenises**: :meth:`~ObservationEncoder.memory_batch` (runtime) and
  :meth:`~ObservationEncoder.data_batch` (training) build the model inputs of the memory frames, and
  ``forward(batch)`` returns tokens [B, T, D].

Register a new encoder with ``@register_encoder("name")``; ``policy.encoder.kind=name`` selects it.
The three built in (``policies.encoders``): ``enerverse`` (EnerVerse-A, future-space features of the
generator), ``cnn`` (the image baseline) and ``fused`` (both token sets).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import Tensor, nn

from enerverse.core.config import ConfigError


@dataclass(frozen=True)
class InputFeature:
    """One observation entry an encoder needs, per environment (a leading batch axis may be added)."""

    key: str
    """observation dict key"""
    dtype: str
    """``uint8`` (exact) or ``float`` (any real dtype; must be finite)"""
    shape: tuple[int, ...]
    """shape for one environment"""
    per_view: bool = False
    """the first axis is the camera view (the runtime reorders it by view name)"""

    def describe(self, views: list[str] | None = None) -> str:
        """E.g. ``rgb uint8 [B, V=2 (main, anchor_left), 64, 64, 3]``."""
        dims = [str(s) for s in self.shape]
        if self.per_view and views is not None:
            dims[0] = f"V={self.shape[0]} ({', '.join(views)})"
        return f"{self.key} {self.dtype} [B, {', '.join(dims)}]"


@dataclass
class DataSpec:
    """What a policy knows of its training data: the typed form of a checkpoint's ``meta``."""

    views: list[str]
    """camera views in the order the encoder reads them"""
    resolution: int
    """image size in pixels (square)"""
    state_dim: int
    """proprioception vector size S"""
    text_encoder: str = "minilm"
    text_model_path: str | None = None
    task: str | None = None
    tasks: list[str] | None = None
    """the tasks of a multi-task policy (``task`` is None then)"""
    privileged_dim: int = 0
    """object-state size P (the auxiliary training loss only)"""
    rig_version: int | None = None
    """camera rig of the training data (None: written before rigs were versioned)"""

    @classmethod
    def from_dict(cls, d: dict | DataSpec) -> DataSpec:
        """From a checkpoint's ``meta`` (unknown keys are a ValueError naming them)."""
        if isinstance(d, DataSpec):
            return dataclasses.replace(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown policy data settings {unknown}; known: {sorted(known)}")
        missing = [k for k in ("views", "resolution", "state_dim") if k not in d]
        if missing:
            raise ValueError(f"policy data settings lack {missing}")
        out = cls(**d)
        out.views, out.privileged_dim = list(out.views), int(out.privileged_dim or 0)
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ObservationEncoder(nn.Module):
    """Base class of the registered encoders (see module docstring).

    ``frames``: tokens per decision (T). ``generator``: the EnerVerse-G model it reads, if any; it is
    owned (and saved) by the policy, so the encoder keeps a reference outside its own parameters."""

    kind: ClassVar[str] = ""
    needs_generator: ClassVar[bool] = False

    def __init__(self, cfg, spec: DataSpec, dim: int, generator: nn.Module | None = None) -> None:
        super().__init__()
        if self.needs_generator and generator is None:
            raise ConfigError(f"encoder.kind={self.kind!r} needs a generator (generator=<checkpoint folder>)")
        self.cfg, self.spec, self.dim = cfg, spec, dim
        self.__dict__["generator"] = generator  # not a submodule: the policy owns its weights
        self.frames = cfg.n_memory

    @property
    def decision_tokens(self) -> list[int]:
        """Indices of the tokens that describe the decision frame (the newest memory frame); the
        auxiliary object-state head reads their mean."""
        return [self.cfg.n_memory - 1]

    @property
    def memory_stride(self) -> int:
        """Memory frames lie on the decision frame's grid of every n-th recorded frame: the generator's
        frame stride (its training windows' rule), 1 without a generator."""
        return self.generator.cfg.frame_stride if self.generator is not None else 1

    @property
    def text_key(self) -> tuple[str, str | None]:
        """(text encoder kind, model path) for the instruction tokens."""
        g = self.generator
        if g is not None:
            return g.cfg.text_encoder, g.cfg.text_model_path
        return self.spec.text_encoder, self.spec.text_model_path

    def input_features(self) -> list[InputFeature]:
        """Observation entries this encoder reads (``state`` is the policy's own)."""
        R, V = self.spec.resolution, len(self.spec.views)
        return [InputFeature("rgb", "uint8", (V, R, R, 3), per_view=True)]

    def observe(self, obs: dict) -> list[Any]:
        """One validated, batched observation -> the history item of every environment."""
        raise NotImplementedError

    def memory_batch(self, items: list[list[Any]], pos: np.ndarray) -> dict:
        """Model inputs for the memory frames: ``items`` per environment (oldest first, the history
        items of :meth:`observe`), ``pos`` [B, m] their frame times relative to the newest (<= 0)."""
        raise NotImplementedError

    def prepare_data(self, data, finetune: bool = False, seed: int = 0) -> None:
        """Compute the training data's caches once (``data.cache``); nothing by default."""

    def data_batch(self, data, items: list[int], finetune: bool = False, video: bool = False) -> dict:
        """Model inputs for decision points ``items`` of ``data`` (a PolicyData); ``finetune``: inputs
        the generator runs on (not cached features); ``video``: also the window's ``latents`` (memory
        + future frames) for the generator's video loss."""
        raise NotImplementedError

    def forward(self, batch: dict, finetune: bool = False, seed: int | None = None) -> Tensor:
        """Condition tokens [B, T, D] from a batch of :meth:`memory_batch` / :meth:`data_batch`."""
        raise NotImplementedError


_REGISTRY: dict[str, type[ObservationEncoder]] = {}


def register_encoder(kind: str):
    """Class decorator: make an :class:`ObservationEncoder` selectable as ``encoder.kind=kind``."""

    def wrap(cls: type[ObservationEncoder]) -> type[ObservationEncoder]:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"encoder kind {kind!r} is already registered by {_REGISTRY[kind].__name__}")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return wrap


def encoder_kinds() -> list[str]:
    """Every registered kind (the built-in encoders are registered on first use)."""
    import policies.encoders  # noqa: F401  (registers enerverse, cnn, fused)

    return sorted(_REGISTRY)


def encoder_class(kind: str) -> type[ObservationEncoder]:
    """The registered encoder class of ``kind``; ValueError listing the valid kinds otherwise."""
    kinds = encoder_kinds()
    if kind not in _REGISTRY:
        raise ValueError(f"encoder.kind must be one of {', '.join(kinds)}, got {kind!r}")
    return _REGISTRY[kind]
