"""Cue recall of a generator on the memory task, sparse against consecutive memory.

    python scripts/cue_recall.py <generator checkpoint> data/heldout/memory [--episodes 20] [--steps 10]

See enerverse/cue_recall.py: from a start after the cue, does the imagined future put the cube on the
plate the lamp showed? Needs a memory store recorded with seg=true at the checkpoint's resolution.
Prints one JSON line (recall per memory mode, the classifier's recall on the real frames, the gap in
points) and writes it to outputs/cue_recall/<checkpoint name>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from enerverse.core.config import ConfigError
from enerverse.core.errors import user_errors
from enerverse.core.outputs import write_json_atomic
from enerverse.core.store import EpisodeStore
from enerverse.cue_recall import evaluate_cue_recall
from enerverse.io import check_store_matches, load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps per chunk")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    store = EpisodeStore.open(args.store)
    model = load_generator(args.checkpoint)
    check_store_matches(model, store, f"checkpoint={args.checkpoint}")
    eps = [e for e in store.indices() if store.episode(e).attrs.get("task") == "memory"][: args.episodes]
    if not eps or not store.episode(eps[0]).has("seg"):
        raise ConfigError(f"{args.store} needs memory episodes recorded with seg=true")
    res = evaluate_cue_recall(model, store, eps, args.steps, args.seed)
    write_json_atomic(Path("outputs/cue_recall") / f"{Path(args.checkpoint).name}.json", res)
    print(json.dumps({k: v for k, v in res.items() if k != "episodes"}))


if __name__ == "__main__":
    with user_errors():
        main()
