"""Stage 2 of the paper's recipe: the policy loss trains the generator layers its features pass through.

EnerVerse's default ("two-stage fine-tune", its Table 5: 92.1 against 79 for a frozen generator) keeps
training the video generator with the action loss. On a CPU that is affordable only when little of it
trains, so :class:`FinetuneSettings` picks how much:

- ``off``: the generator is frozen (its features are computed once per decision point and cached);
- ``partial``: the last ``partial_levels`` modules of the feature path train, the rest stays frozen;
- ``lora``: every conv and linear layer on the feature path gets a low-rank adapter
  (:class:`LoRA`, rank ``lora_rank``; zero-initialised, so training starts at the frozen generator);
  the adapters are merged into the weights before a checkpoint is saved, so checkpoints stay plain;
- ``full``: every module on the feature path trains.

Only the feature path (:meth:`~enerverse.denoiser.Denoiser.feature_path`) is ever trainable: the up
path is never run by a features-only forward, so it has no gradient (under DDP an unused trainable
parameter is an error). ``checkpointing`` recomputes activations in the backward pass. With
``video_weight`` > 0 the generator's own video loss on the decision's window joins the action loss:
the one-stage co-training variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from enerverse.core.config import ConfigError

MODES = ("off", "partial", "lora", "full")


@dataclass
class FinetuneSettings:
    """How the policy loss trains the generator (see module docstring)."""

    mode: str = "off"
    """off | partial | lora | full"""
    partial_levels: int = 1
    """partial: how many of the feature path's last modules train"""
    lora_rank: int = 8
    """lora: rank of each adapter"""
    lr_scale: float = 0.1
    """the generator's learning rate relative to train.lr"""
    checkpointing: bool = True
    """gradient checkpointing of the generator's levels (less memory, ~1.3x compute)"""
    video_weight: float = 0.0
    """> 0: add this times the generator's video loss on the decision's window (one-stage co-training)"""

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"finetune.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.partial_levels < 1 or self.lora_rank < 1:
            raise ConfigError("finetune.partial_levels and finetune.lora_rank must be >= 1")
        if not self.lr_scale > 0:
            raise ConfigError(f"finetune.lr_scale must be > 0, got {self.lr_scale}")
        if self.video_weight < 0 or (self.video_weight > 0 and self.mode not in ("lora", "full")):
            raise ConfigError(
                "finetune.video_weight > 0 trains the whole generator: set finetune.mode=lora or full"
            )


class LoRA(nn.Module):
    """``base(x) + scale * up(down(x))`` for a frozen nn.Linear / Conv1d / Conv2d ``base``: ``down`` has
    the base's kernel and ``rank`` outputs, ``up`` is 1x1 and starts at zero."""

    def __init__(self, base: nn.Module, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv1d | nn.Conv2d):
            conv = type(base)
            self.down = conv(
                base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation, bias=False
            )
            self.up = conv(rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f"LoRA wraps Linear, Conv1d or Conv2d layers, not {type(base).__name__}")
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        self.scale = (alpha or rank) / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base layer with the adapter folded into its weight."""
        w = self.base.weight
        up = self.up.weight.reshape(w.shape[0], -1)  # [out, r]
        delta = up @ self.down.weight.reshape(up.shape[1], -1)  # [out, in * kernel]
        self.base.weight.add_(self.scale * delta.reshape(w.shape))
        return self.base


def add_lora(module: nn.Module, rank: int) -> list[nn.Parameter]:
    """Wrap every Linear / Conv1d / Conv2d inside ``module`` in a :class:`LoRA`; returns the adapters'
    parameters."""
    params: list[nn.Parameter] = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear | nn.Conv1d | nn.Conv2d):
            lora = LoRA(child, rank)
            setattr(module, name, lora)
            params += [lora.down.weight, lora.up.weight]
        elif not isinstance(child, LoRA):
            params += add_lora(child, rank)
    return params


def merge_lora(module: nn.Module) -> int:
    """Fold every :class:`LoRA` inside ``module`` back into its base layer (in place); returns how many."""
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, LoRA):
            setattr(module, name, child.merged())
            n += 1
        else:
            n += merge_lora(child)
    return n


def prepare_generator(gen: nn.Module, settings: FinetuneSettings, block: str) -> list[nn.Parameter]:
    """Freeze ``gen``, then make trainable what ``settings`` says on the feature path of ``block``;
    returns the generator parameters to optimise (none when ``mode`` is off)."""
    gen.requires_grad_(False).eval()
    if not settings.enabled:
        return []
    den = gen.denoiser
    den.gradient_checkpointing = settings.checkpointing
    path = den.feature_path(block)
    if settings.video_weight > 0:  # the video loss runs the whole denoiser
        path = [m for m in den.children() if any(p.numel() for p in m.parameters())]
    den.train()
    if settings.mode == "lora":
        params = []
        for m in path:
            params += add_lora(m, settings.lora_rank) if list(m.children()) else _lora_leaf(den, m, settings)
        return params
    chosen = path[-settings.partial_levels :] if settings.mode == "partial" else path
    for m in chosen:
        m.requires_grad_(True)
    return [p for m in chosen for p in m.parameters()]


def _lora_leaf(parent: nn.Module, leaf: nn.Module, settings: FinetuneSettings) -> list[nn.Parameter]:
    """LoRA for a module without children (e.g. ``conv_in``), replaced in ``parent``."""
    for name, child in parent.named_children():
        if child is leaf and isinstance(leaf, nn.Linear | nn.Conv1d | nn.Conv2d):
            lora = LoRA(leaf, settings.lora_rank)
            setattr(parent, name, lora)
            return [lora.down.weight, lora.up.weight]
    return []


def trainable_summary(policy: nn.Module) -> dict[str, int]:
    """Trainable parameters of the policy's generator and of the rest."""
    gen = sum(
        p.numel() for n, p in policy.named_parameters() if p.requires_grad and n.startswith("generator.")
    )
    rest = sum(
        p.numel() for n, p in policy.named_parameters() if p.requires_grad and not n.startswith("generator.")
    )
    return {"generator_trainable": gen, "policy_trainable": rest}
