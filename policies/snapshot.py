"""A deployable policy from an intermediate training checkpoint (``<run>/policy/step_<N>``).

Training writes the trainer's state every ``train.ckpt_every`` steps (model + EMA weights, optimiser)
and a policy checkpoint only at the end. To evaluate a run mid-way (learning curves, early stops),
:func:`policy_at_step` rebuilds the policy from the run's ``config.json`` (its generator: the adapted
one when the run adapted it) and loads that step's EMA weights, normalisation statistics included:

    python -m policies.io outputs/train_policy/<run>/policy/step_00001500 outputs/eval_ckpt/step1500
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from enerverse.core.checkpoint import CheckpointError
from enerverse.core.config import config_from_dict


def _run_config(run_dir: Path):
    from policies.train import TrainPolicyConfig

    return config_from_dict(TrainPolicyConfig, json.loads((run_dir / "config.json").read_text()))


def policy_at_step(step_dir: str | Path):
    """The policy (EMA weights when the run kept an EMA) of trainer checkpoint ``step_dir``
    (``<run>/policy/step_<N>``); CheckpointError when it is not one."""
    from policies.data import PolicyData
    from policies.encoder_api import encoder_class
    from policies.train import build_policy, load_reader_generator, open_episodes

    step_dir = Path(step_dir)
    run_dir = step_dir.parent.parent
    if step_dir.parent.name != "policy" or not (run_dir / "config.json").is_file():
        raise CheckpointError(
            f"{step_dir} is not a training step of an ev-train-policy run (<run>/policy/step_<N>)"
        )
    cfg = _run_config(run_dir)
    sources = [(st, eps[:1]) for st, eps in open_episodes(cfg)]  # one episode: the data's shapes only
    gen = None
    if encoder_class(cfg.policy.encoder.kind).needs_generator:
        folder = run_dir / "adapt" / "checkpoint" if cfg.adapt.steps > 0 else cfg.generator
        gen = load_reader_generator(cfg, str(folder), [st for st, _ in sources], "cpu")
    data = PolicyData(
        sources, None, cfg.policy.views, gen.cfg.resolution if gen is not None else cfg.resolution,
        cfg.policy.n_memory, cfg.policy.head.horizon, cfg.policy.memory_mode, cfg.decision_stride,
        privileged=cfg.policy.aux_weight > 0, memory_stride=gen.cfg.frame_stride if gen is not None else 1,
    )  # fmt: skip
    policy, _ = build_policy(cfg, data, gen, "cpu")
    state = load_file(str(step_dir / "model.safetensors"))
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    missing, unexpected = policy.load_state_dict(ema or state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{step_dir} does not match its run's policy: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    policy.train_config = json.loads((run_dir / "config.json").read_text())
    policy.step = int(step_dir.name.rsplit("_", 1)[-1])
    return policy.eval()


def is_training_step(folder: str | Path) -> bool:
    """True for a trainer checkpoint folder (``<run>/policy/step_<N>``)."""
    p = Path(folder)
    return p.parent.name == "policy" and p.name.startswith("step_") and (p / "model.safetensors").is_file()
