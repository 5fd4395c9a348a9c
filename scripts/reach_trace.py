"""Trace a checkpoint on reach: per decision, the distance to the sphere and where the chunk points.

    python scripts/reach_trace.py outputs/train_policy/<run>/checkpoint [--seeds 0:10] [--action-steps 8]

For each seed (collection seeds 0..199 are the training episodes of ``data/reach``; evaluation uses
``episode_seed(1000, i)``) it prints success, episode length, the final end-effector-to-sphere
distance, and for the first decisions (distance in cm, cosine between the first action's position
step and the direction to the sphere, that step's length in cm). Reads privileged simulator state,
so it is a diagnosis tool, not something a policy sees.
"""

from __future__ import annotations

import argparse

import numpy as np

from policies.runtime import EvalPolicy
from sim.registration import make_env
from sim.rollout import batch_obs


def trace(policy: EvalPolicy, env, seed: int, decisions: int = 6) -> dict:
    """Roll one episode out; returns success, length, final distance (cm) and per-decision rows."""
    obs, info = env.reset(seed=seed)
    policy.reset([info["instruction"]])
    uw = env.unwrapped
    goal = uw.task.body_pos("goal").copy()
    rows, done, t = [], False, 0
    while not done:
        chunk = policy.act(batch_obs(obs))[0]
        want = goal - uw.arm.ee_pose()[0]
        step = chunk[0][:3]
        cos = float(step @ want / (np.linalg.norm(step) * np.linalg.norm(want) + 1e-9))
        rows.append((100 * float(np.linalg.norm(want)), cos, 100 * float(np.linalg.norm(step))))
        for a in chunk:
            obs, _, term, trunc, info = env.step(a)
            t += 1
            done = term or trunc
            if done:
                break
    final = 100 * float(np.linalg.norm(uw.arm.ee_pose()[0] - goal))
    return {"success": bool(info["success"]), "length": t, "final_cm": final, "decisions": rows[:decisions]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", help="policy checkpoint folder")
    ap.add_argument("--seeds", default="0:10", help="start:stop of the env seeds")
    ap.add_argument("--action-steps", type=int, default=None, help="actions executed per chunk")
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.seeds.split(":"))
    policy = EvalPolicy(a.policy, action_steps=a.action_steps)
    task = policy.runtime.policy.meta.get("task")
    if task not in (None, "reach"):
        ap.error(f"{a.policy} is a {task} policy; this trace needs a reach policy (it reads the sphere)")
    env = make_env("reach", views=policy.views, width=policy.resolution, height=policy.resolution)
    try:
        for seed in range(lo, hi):
            r = trace(policy, env, seed)
            steps = " ".join(f"({d:.1f} cm, cos {c:+.2f}, {s:.1f} cm)" for d, c, s in r["decisions"])
            print(
                f"seed {seed}: {'ok  ' if r['success'] else 'fail'} {r['length']:2d} steps, "
                f"final {r['final_cm']:.1f} cm | {steps}"
            )
    finally:
        env.close()


if __name__ == "__main__":
    main()
