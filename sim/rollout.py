"""Run a policy in one environment and record the episode into an episode store."""

from __future__ import annotations

import numpy as np

from enerverse.core.store import EpisodeStore


def batch_obs(obs: dict) -> dict:
    """Add a leading batch dimension of 1 to every array in an observation dict."""
    return {k: np.asarray(v)[None] for k, v in obs.items()}


def record_episode(env, policy, store: EpisodeStore, index: int, seed: int, **attrs) -> dict:
    """Roll ``policy`` out in ``env`` from ``reset(seed)`` and commit it as episode ``index``.

    Each stored frame t pairs the observation with the action the env applied from it (after its
    clipping). The final observation is stored too, with the env's hold action (zero Δ-EE motion or
    the current joint targets, gripper unchanged), so the episode ends on the state the task was
    judged in. Returns a summary dict (index, seed, success, length).
    """
    obs, info = env.reset(seed=seed)
    policy.reset()
    uw = env.unwrapped
    with store.write_episode(
        index,
        task=info["task"],
        instruction=info["instruction"],
        seed=int(seed),
        view_names=uw.view_names,
        view_kinds=uw.view_kinds,
        fps=float(uw.fps),
        K=obs["K"],
        provenance="sim",
        **attrs,
    ) as ep:
        done = False
        while not done:
            for a in policy.act(batch_obs(obs))[0]:
                nxt, _, term, trunc, info = env.step(a)
                applied = info.get("applied_action", a)  # what the env executed (after clipping)
                ep.add_frame(
                    rgb=obs["rgb"],
                    state=obs["state"],
                    action=applied,
                    T_cam_world=obs["T_cam_world"],
                    depth=obs.get("depth"),
                )
                obs, done = nxt, term or trunc
                if done:
                    break
        ep.add_frame(
            rgb=obs["rgb"],
            state=obs["state"],
            action=uw.hold_action(),
            T_cam_world=obs["T_cam_world"],
            depth=obs.get("depth"),
        )
        ep.set_attrs(success=bool(info["success"]))
        length = ep.n_frames
    return {"index": index, "seed": int(seed), "success": bool(info["success"]), "length": length}
