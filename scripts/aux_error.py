"""How well a policy's encoder locates the objects: the auxiliary head's error on an episode store.

    python scripts/aux_error.py <policy checkpoint> <store> [--episodes 50] [--stride 1]

Needs a checkpoint trained with ``policy.aux_weight`` > 0 and a store that recorded ``privileged``
(use episodes the policy did not train on, e.g. ``ev-collect task=reach seed=1000 out=...``). Prints,
per named part of the task's object state (``Task.privileged_spec``), the mean Euclidean error of its
first three numbers (a position, in cm) over every decision point, and the same for predicting the
training mean (no perception), as one JSON line. A diagnosis tool: a policy never reads this state.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from enerverse.core.config import ConfigError
from enerverse.core.errors import user_errors
from enerverse.core.store import EpisodeStore
from policies.data import PolicyData
from policies.io import load_policy
from sim.tasks import get_task_class


@torch.no_grad()
def aux_predictions(policy, data: PolicyData, batch_size: int = 64) -> np.ndarray:
    """Object state [N, P] the auxiliary head predicts at every decision point of ``data``."""
    policy.encoder.prepare_data(data)
    out = []
    for s in range(0, len(data), batch_size):
        batch = data.batch(list(range(s, min(len(data), s + batch_size))), policy)
        out.append(policy.object_state(policy.observation_tokens(batch)).cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--stride", type=int, default=1)
    args = ap.parse_args()
    policy = load_policy(args.checkpoint)
    if policy.aux_head is None:
        raise ConfigError(f"{args.checkpoint} was trained without the auxiliary loss (policy.aux_weight=0)")
    store = EpisodeStore.open(args.store)
    eps = store.indices()[: args.episodes]
    task = store.episode(eps[0]).attrs["task"]
    cfg = policy.cfg
    data = PolicyData(
        store,
        eps,
        list(policy.meta["views"]),
        int(policy.meta["resolution"]),
        cfg.n_memory,
        cfg.head.horizon,
        cfg.memory_mode,
        args.stride,
        privileged=True,
        memory_stride=policy.encoder.memory_stride,
    )
    pred = aux_predictions(policy, data)
    true = np.stack([data.privileged[k][c] for k, c in data.items])  # [N, P]
    mean = policy.privileged_mean.cpu().numpy()
    result: dict = {"checkpoint": args.checkpoint, "store": args.store, "decision_points": len(data)}
    at = 0
    for name, n in get_task_class(task).privileged_spec:
        if n >= 3:
            sl = slice(at, at + 3)
            err = np.linalg.norm(pred[:, sl] - true[:, sl], axis=1)
            base = np.linalg.norm(mean[sl] - true[:, sl], axis=1)
            result[f"{name}_cm"] = round(100 * float(err.mean()), 2)
            result[f"{name}_within_3cm"] = round(float((err < 0.03).mean()), 3)
            result[f"{name}_mean_guess_cm"] = round(100 * float(base.mean()), 2)
        at += n
    print(json.dumps(result))


if __name__ == "__main__":
    with user_errors():
        main()
