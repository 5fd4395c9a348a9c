"""Evaluate a fused EnerVerse-A checkpoint with part of its future-space tokens replaced by zeros.

    python scripts/ablate_future.py --zero imagined -- task=pick_place policy=<checkpoint> episodes=50

``--zero imagined``: only the tokens of window frames after the current one (the generator's imagined
future); the memory frames, the current frame and the object-state estimate read from it stay as trained.
``--zero future``: every future-space token, as a future gate of 0 would (the estimate token, which
reads the current frame's future-space token, is corrupted too). Everything after ``--`` is ``ev-eval``'s
arguments. An evaluation-time ablation: it shows what the trained head relies on, not what the
future is worth in training (docs/results.md, "does EnerVerse-A read its future?").
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

from policies.encoders import FusedEncoder
from sim.evaluate import main as eval_main


def zeroed_tokens(encoder: FusedEncoder, which: str) -> list[int]:
    """Indices of the fused encoder's output tokens [B, T_future + T_image, D] that ``which`` zeroes."""
    future = encoder.future
    if which == "future":
        return list(range(future.frames))
    return list(range(future.decision_tokens[0] + 1, future.frames))  # token frames ascend past the current


@contextmanager
def zeroing(which: str) -> Iterator[None]:
    """Within the block, every FusedEncoder returns zeros for the tokens ``which`` names."""
    original = FusedEncoder.forward

    def forward(self: FusedEncoder, batch: dict, finetune: bool = False, seed: int | None = None) -> Tensor:
        out = original(self, batch, finetune, seed).clone()  # [B, T, D]
        out[:, zeroed_tokens(self, which)] = 0.0
        return out

    FusedEncoder.forward = forward
    try:
        yield
    finally:
        FusedEncoder.forward = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zero", choices=["imagined", "future"], required=True)
    ap.add_argument("eval_args", nargs="*", help="ev-eval arguments (key=value), after --")
    args = ap.parse_args()
    print(f"[ablate_future] zeroing the {args.zero} future-space tokens of fused policies")
    with zeroing(args.zero):
        eval_main(args.eval_args)


if __name__ == "__main__":
    main()
