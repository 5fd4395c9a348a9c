"""``ev-eval``: success rate of a policy over N seeded episodes in vectorised environments.

    ev-eval task=pick_place policy=expert episodes=50 num_envs=4
    ev-eval task=all policy=expert episodes=20            # per-task table over every project task

    ev-eval task=pick_place policy=outputs/train_policy/<run>/checkpoint episodes=50   # a trained policy
    ev-eval policies=[ckpt_a,ckpt_b] tasks=[reach,stack] episodes=100 backend=ray workers=8   # a sweep

Any policy object with ``reset(instructions)`` (one per environment) and
``act(obs) -> actions [B, chunk, A]`` (batched observation dict in, batched action chunks out) can be
evaluated with :func:`evaluate`. Optional methods: ``observe(obs)`` (every observation between
decisions, for memory) and ``imagine(envs)`` (the imagined next chunk [len(envs), V, M, H, W, 3] of
the listed environments, or None without a generator; shown next to the real views in the video).
Checkpoint folders are loaded through the ``enerverse.policy_loaders`` entry point
(``policies`` registers it), so ``sim`` never imports the policy code; the environment then uses
the checkpoint's views and resolution.
Episode ``i`` of a task always uses seed ``episode_seed(seed, i)``; evaluation seeds default to a
range (1000) disjoint from collection's (0). Writes results.json, a success plot (png) and a video
grid per task (per policy and task in a sweep of several policies); ``sim.sweep`` runs the units of
work, here or as Ray tasks.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enerverse.core.checkpoint import resolve_folder
from enerverse.core.cluster import absolute_path, check_backend
from enerverse.core.config import ConfigError, parse_cli, save_config
from enerverse.core.errors import user_errors
from enerverse.core.outputs import make_output_dir, print_summary, write_json_atomic
from enerverse.core.progress import progress
from enerverse.core.seeding import episode_seed
from enerverse.core.store import check_rig_version, recorded_rig_version
from sim.outcomes import summarise_episodes, wilson_interval
from sim.plots import success_plot
from sim.registration import make_vec_env
from sim.settings import SimSettings, rig_version
from sim.sweep import check_sweep, merged_rows, plan_units, policy_names
from sim.tasks import TASKS


@dataclass
class EvalConfig(SimSettings):
    """Settings of ``ev-eval``."""

    policy: str = "expert"
    """'expert' (the task's scripted expert) or a policy checkpoint folder (ev-train-policy)"""
    policies: list[str] | None = None
    """several policies evaluated on the same tasks and seeds (replaces policy), e.g. a checkpoint sweep"""
    tasks: list[str] | None = None
    """several tasks, e.g. tasks=[reach,push] for a multi-task policy (replaces task; task=all: every
    project task)"""
    episodes: int = 20
    """episodes per task"""
    num_envs: int = 4
    """environments stepped together"""
    asynchronous: bool = False
    """one process per environment (gymnasium AsyncVectorEnv)"""
    seed: int = 1000
    """base seed; episode i uses episode_seed(seed, i)"""
    videos: int = 4
    """episodes per task shown in the video grid (0: none)"""
    imagine: bool = True
    """checkpoint policies with a generator: show the imagined future views next to the real ones"""
    action_steps: int | None = None
    """checkpoint policies: actions executed from each predicted chunk before the next decision
    (default: the whole chunk)"""
    policy_steps: int | None = None
    """DDIM steps of the action head (default: the checkpoint's)"""
    device: str = "cpu"
    """device of checkpoint policies"""
    backend: str = "local"
    """'local' (this process) or 'ray' (shards of episodes as Ray tasks; RAY_ADDRESS names a cluster)"""
    workers: int = 2
    """backend=ray without RAY_ADDRESS: CPUs of the local Ray instance (one shard per CPU)"""
    shard_episodes: int = 10
    """backend=ray: episodes per Ray task"""
    out: str | None = None
    """output folder (default: outputs/eval/<timestamp>)"""

    @property
    def policy_list(self) -> list[str]:
        """The policies evaluated: ``policies``, or ``policy``."""
        return list(self.policies) if self.policies else [self.policy]

    @property
    def task_list(self) -> list[str]:
        """The tasks evaluated: ``tasks``, or every project task for ``task=all``, or ``task``."""
        if self.tasks:
            return list(self.tasks)
        return list(TASKS) if self.task == "all" else [self.task]

    def validate(self) -> None:
        check_backend(self.backend)
        for name in ("workers", "shard_episodes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        check_sweep(self)
        if self.tasks and len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks must be distinct, got {self.tasks}")
        if self.policies and len({str(Path(p).resolve()) for p in self.policies}) != len(self.policies):
            raise ConfigError(f"policies must be distinct folders, got {self.policies}")
        if self.policies and self.policy != "expert":
            raise ConfigError(
                f"give policy= or policies=, not both (policy={self.policy!r}, policies={self.policies})"
            )
        if self.policies:  # every policy evaluated must accept the settings
            for policy in self.policies:
                dataclasses.replace(self, policy=policy, policies=None).validate()
            return
        if self.action_steps is not None:
            if self.action_steps < 1:
                raise ConfigError(f"action_steps must be >= 1, got {self.action_steps}")
            if self.policy == "expert":
                raise ConfigError(
                    "action_steps applies to checkpoint policies; the experts act one step at a time"
                )
        if self.task == "all" or self.tasks:  # every task evaluated must accept the settings
            for task in self.task_list:
                dataclasses.replace(self, task=task, tasks=None).validate()
            return
        try:
            super().validate()
        except ConfigError as e:
            if "unknown" in str(e) and "task" in str(e):
                raise ConfigError(f"{e} (or task=all for every project task)") from None
            raise
        for name in ("episodes", "num_envs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.policy != "expert" and not (resolve_folder(self.policy) / "config.json").is_file():
            raise ConfigError(
                f"policy={self.policy!r}: expected 'expert' or a policy checkpoint folder "
                "(with config.json, written by ev-train-policy)"
            )


def policy_loader(name: str = "checkpoint"):
    """The loader registered under ``enerverse.policy_loaders`` (``policies.runtime:load_for_eval``)."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="enerverse.policy_loaders") if ep.name == name]
    if not found:
        raise ConfigError(
            "no policy loader is installed: reinstall the project (pip install -e .) so the "
            "'enerverse.policy_loaders' entry point of the policies package is registered"
        )
    return found[0].load()


def make_policy(spec: str, task: str, **kw):
    """Resolve a policy spec for a task: ``expert`` or a checkpoint folder (keyword args go to its loader)."""
    if spec == "expert":
        from sim.experts import make_expert

        return make_expert(task)
    policy = policy_loader()(spec, **kw)
    meta, current = getattr(policy, "data_meta", None), rig_version(task)
    if meta is not None:
        expected = recorded_rig_version(meta, current)
        check_rig_version(expected, current, f"policy={spec}", f"the simulated {task}")
        trained_on = meta.get("tasks")
        if trained_on and task not in trained_on:
            print(f"warning: policy={spec} was trained on {', '.join(trained_on)}, not on {task}; evaluating "
                  "it anyway", file=sys.stderr, flush=True)  # fmt: skip
    return policy


@dataclass
class _Batch:
    """The state of one batch of envs during :func:`evaluate` (arrays [B])."""

    done: np.ndarray
    success: np.ndarray
    length: np.ndarray
    stage: np.ndarray  # most stages done so far (-1: the task reports none)
    clips: dict  # env -> real frames [V, H, W, 3] of a recorded episode
    dreams: dict  # env -> imagined frames (empty without a generator)


def _step_chunk(venv, policy, chunk: np.ndarray, obs: dict, st: _Batch, bar) -> dict:
    """Execute one action chunk [B, H, A] on every env; returns the last observation."""
    observe = getattr(policy, "observe", None)
    for j, a in enumerate(chunk.transpose(1, 0, 2)):
        obs, _, term, trunc, info = venv.step(a)
        live = ~st.done
        st.length[live] += 1
        st.success[live] |= np.asarray(info["success"], dtype=bool)[live]
        if "stages_done" in info:
            st.stage[live] = np.maximum(st.stage[live], np.asarray(info["stages_done"], dtype=int)[live])
        if observe is not None and j < chunk.shape[1] - 1:
            observe(obs)  # the next act() sees the observation after the last action
        for i in st.clips:
            if live[i]:
                st.clips[i].append(obs["rgb"][i])
        ended = np.asarray(term) | np.asarray(trunc)
        st.done |= ended
        bar.update(int((live & st.done).sum()))
        if st.done.all():
            break
        if ended.any():  # idle envs restart (results ignored) so the batch can keep stepping
            obs, _ = venv.reset(options={"reset_mask": ended})
    return obs


def _batch_frames(st: _Batch) -> list[np.ndarray]:
    """Per recorded episode: real views [T, V, H, W, 3], with the imagined views beside them."""
    out = []
    for i, clip in st.clips.items():
        real = np.stack(clip)
        if st.dreams:  # real views | imagined views, side by side
            dream = np.stack(st.dreams[i][: len(real)])
            dream = np.concatenate([dream, np.repeat(dream[-1:], len(real) - len(dream), 0)])
            real = np.concatenate([real, dream], axis=1)
        out.append(real)
    return out


def _run_batch(policy, venv, seeds: list[int], n: int, show: list[int], imagine: bool, bar) -> _Batch:
    """Roll out one batch of envs (the first ``n`` count) until every counted episode ended."""
    B = len(seeds)
    obs, info = venv.reset(seed=seeds)
    policy.reset([str(x) for x in info.get("instruction", [""] * B)])
    done = np.zeros(B, dtype=bool)
    done[n:] = True  # padding envs of a last, partial batch are ignored
    imagine_fn = getattr(policy, "imagine", None) if imagine else None
    st = _Batch(done, np.zeros(B, bool), np.zeros(B, int), np.full(B, -1), {i: [obs["rgb"][i]] for i in show},
                {i: [obs["rgb"][i]] for i in show} if imagine_fn is not None else {})  # fmt: skip
    while not st.done.all():
        chunk = np.asarray(policy.act(obs))
        if chunk.ndim != 3 or chunk.shape[0] != B:
            raise ValueError(f"policy.act must return actions [B={B}, chunk, A], got shape {chunk.shape}")
        live = [i for i in st.dreams if not st.done[i]]  # recorded episodes still running
        if live:
            future = imagine_fn(live)  # [len(live), V, M, H, W, 3]; None: no generator
            if future is None:
                st.dreams = {}
            for j, i in enumerate(live if future is not None else []):
                st.dreams[i].extend(np.moveaxis(future[j], 1, 0)[: chunk.shape[1]])
        obs = _step_chunk(venv, policy, chunk, obs, st, bar)
    return st


def evaluate(
    policy,
    task: str,
    episodes: int,
    num_envs: int = 4,
    seed: int = 1000,
    asynchronous: bool = False,
    videos: int = 0,
    env_kwargs: dict | None = None,
    show_progress: bool = True,
    imagine: bool = True,
    first_episode: int = 0,
    pad_batches: bool = False,
) -> dict:
    """Run ``episodes`` seeded episodes of ``task``; returns per-episode results and frames to show.

    Envs are reset together in batches of ``num_envs``; an env that finishes early is restarted and
    its later steps are ignored until the batch ends. Episode ``i`` is the task's episode
    ``first_episode + i`` (for its seed). Batches have ``min(num_envs, episodes)`` envs, or always
    ``num_envs`` with ``pad_batches`` (a shard of a larger run: the run's batches). Result keys: task,
    episodes, successes, success_rate, ci95, mean_length, per_episode (seed, success, length), frames
    (list of [T, V, H, W, 3]).
    """
    num_envs = num_envs if pad_batches else min(num_envs, episodes)
    venv = make_vec_env(task, num_envs, asynchronous=asynchronous, **(env_kwargs or {}))
    per_episode: list[dict] = []
    frames: list[np.ndarray] = []
    bar = progress(total=episodes, desc=f"eval {task}", unit="ep", disable=None if show_progress else True)
    try:
        for start in range(0, episodes, num_envs):
            n = min(num_envs, episodes - start)
            seeds = [episode_seed(seed, first_episode + start + i) for i in range(num_envs)]
            show = [i for i in range(n) if start + i < videos]
            st = _run_batch(policy, venv, seeds, n, show, imagine, bar)
            per_episode += [
                {"seed": seeds[i], "success": bool(st.success[i]), "length": int(st.length[i])}
                | ({"stages_done": int(st.stage[i])} if st.stage[i] >= 0 else {})
                for i in range(n)
            ]
            frames += _batch_frames(st)
    finally:
        bar.close()
        venv.close()
    return {**summarise_episodes(task, per_episode), "frames": frames}


def run(cfg: EvalConfig, run_dir: Path) -> dict:
    """Evaluate every requested (policy, task); write results.json, plot and videos; return the summary."""
    cfg = _absolute_policies(cfg)
    names = policy_names(cfg.policy_list)
    several = len(cfg.policy_list) > 1
    done = {}
    for row in merged_rows(cfg, plan_units(cfg)):
        name = names[row["policy"]]
        if several:
            row["label"] = f"{name}: {row['task']}"
        stem = f"{name}_{row['task']}" if several else row["task"]
        _write_video(row, run_dir / f"{stem.replace('/', '_')}.mp4")
        done[(row["policy"], row["task"])] = row
    rows = [done[(p, t)] for p in cfg.policy_list for t in cfg.task_list]  # the requested order
    total = sum(r["episodes"] for r in rows)
    k = sum(r["successes"] for r in rows)
    lo, hi = wilson_interval(k, total)
    print("\n" + format_table(rows), file=sys.stderr)
    success_plot(rows, run_dir / "success.png")
    policy = [names[p] for p in cfg.policy_list] if several else cfg.policy
    write_json_atomic(run_dir / "results.json", {"policy": policy, "backend": cfg.backend, "tasks": rows})
    summary = {
        "task": cfg.tasks or cfg.task,
        "policy": policy,
        "success_rate": k / total,
        "ci95": [lo, hi],
        "episodes": total,
        "per_task": {r.get("label", r["task"]): r["success_rate"] for r in rows},
        "run_dir": str(run_dir),
    }
    if several:
        per = {names[p]: [r for r in rows if r["policy"] == p] for p in cfg.policy_list}
        summary["per_policy"] = {n: sum(r["successes"] for r in rs) / sum(r["episodes"] for r in rs)
                                 for n, rs in per.items()}  # fmt: skip
    return summary


def _absolute_policies(cfg: EvalConfig) -> EvalConfig:
    """On Ray, checkpoint paths made absolute: workers on other nodes start in other folders."""
    if cfg.backend == "local":
        return cfg
    return dataclasses.replace(
        cfg, policy=absolute_path(cfg.policy), policies=[absolute_path(p) for p in cfg.policies or []] or None
    )


def _write_video(row: dict, path: Path) -> None:
    """The row's recorded episodes as one grid video (real views, imagined views beside them); sets
    ``row["video"]`` and drops the frames."""
    from enerverse.core.media import write_video
    from sim.video import grid_video

    frames, views = row.pop("frames"), list(row.pop("views"))
    if not frames:
        return
    H = frames[0].shape[2]
    if frames[0].shape[1] == 2 * len(views):
        views += [f"{v} imagined" for v in views]
    labels = [f"ep{j} {'ok' if e['success'] else 'fail'}" for j, e in enumerate(row["per_episode"])]
    vid = grid_video(frames, views, labels[: len(frames)], max(1, 128 // H))
    row["video"] = str(write_video(path, vid, 20))


def format_table(rows: list[dict]) -> str:
    """A plain-text per-task table."""
    lines = [f"{'task':<28} {'episodes':>8} {'success':>8} {'95% CI':>15} {'mean len':>9}"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(
            f"{r.get('label', r['task']):<28} {r['episodes']:>8} {r['success_rate']:>8.3f} "
            f"{f'[{lo:.2f}, {hi:.2f}]':>15} {r['mean_length']:>9.1f}"
        )
        if r.get("stages"):
            lines.append("    reached: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-eval``."""
    cfg = parse_cli(EvalConfig, argv, prog="ev-eval")
    with user_errors():
        run_dir = make_output_dir("eval", cfg.out)
        save_config(cfg, run_dir / "config.json")
        summary = run(cfg, run_dir)
    print_summary(summary)


if __name__ == "__main__":
    main()
