"""Run a policy in one environment and record the episode into an episode store."""

from __future__ import annotations

import numpy as np

from enerverse.core.store import EpisodeStore


def batch_obs(obs: dict) -> dict:
    """Add a leading batch dimension of 1 to every array in an observation dict."""
    return {k: np.asarray(v)[None] for k, v in obs.items()}


def record_episode(
    env, policy, store: EpisodeStore, index: int, seed: int, action_noise: float = 0.0, **attrs
) -> dict:
    """Roll ``policy`` out in ``env`` from ``reset(seed)`` and commit it as episode ``index``.

    Each stored frame t pairs the observation with the action the env applied from it (after its
    clipping). The final observation is stored too, with the env's hold action (zero Δ-EE motion or
    the current joint targets, gripper unchanged), so the episode ends on the state the task was
    judged in. The observation's ``privileged`` vector (the task's object state), when the env has
    one, is stored per frame as an auxiliary training target. Returns a summary dict (index, seed,
    success, length).

    ``action_noise`` > 0 (Δ-EE control only) is noise injection in the style of DART: the env executes
    the policy's action plus Gaussian noise of that standard deviation (metres per step) on the
    position, while the stored action stays the policy's own (clipped) one. A closed-loop expert then
    demonstrates how to recover from states off its own path; the episode records ``action_noise``.
    """
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    uw = env.unwrapped
    if action_noise > 0 and getattr(uw, "control", "ee") != "ee":
        raise ValueError("action_noise needs Δ-EE control (the noise is added to the position step)")
    rng = np.random.default_rng([int(seed), 7])  # the noise is part of the episode's seed
    obs, info = env.reset(seed=seed)
    policy.reset()
    if action_noise > 0:
        attrs["action_noise"] = float(action_noise)
    if "seg" in obs:
        attrs["seg_names"] = list(uw.seg_names)
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
                label = np.clip(a, env.action_space.low, env.action_space.high).astype(np.float32)
                if action_noise > 0:
                    a = np.array(a, dtype=np.float64)
                    a[:3] += rng.normal(0.0, action_noise, 3)
                nxt, _, term, trunc, info = env.step(a)
                # what the env executed (after clipping), or the clean label under noise injection
                applied = label if action_noise > 0 else info.get("applied_action", a)
                ep.add_frame(
                    rgb=obs["rgb"],
                    state=obs["state"],
                    action=applied,
                    T_cam_world=obs["T_cam_world"],
                    depth=obs.get("depth"),
                    privileged=obs.get("privileged"),
                    seg=obs.get("seg"),
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
            privileged=obs.get("privileged"),
            seg=obs.get("seg"),
        )
        ep.set_attrs(success=bool(info["success"]))
        length = ep.n_frames
    return {"index": index, "seed": int(seed), "success": bool(info["success"]), "length": length}
