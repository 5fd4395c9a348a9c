"""Policy checkpoints: config.json (policy + generator configs, views, statistics) + model.safetensors.

The generator EnerVerse-A reads is saved inside the policy checkpoint, so one folder is everything
``ev-eval`` and the ROS node need. No pickles: weights through safetensors, the rest JSON.
"""

from __future__ import annotations

from pathlib import Path

from enerverse.core.checkpoint import (
    CheckpointError,
    check_format,
    keeping_card_notes,
    load_checkpoint,
    resolve_folder,
    save_checkpoint,
)
from enerverse.core.config import ConfigError, config_to_dict, describe_differences
from enerverse.core.store import recorded_rig_version
from policies.config import EncoderConfig, HeadConfig, PolicyConfig

FORMAT = "enerverse-policy"
VERSION = 1


def policy_config_from_dict(d: dict | None) -> PolicyConfig:
    """Rebuild a PolicyConfig from its JSON form; CheckpointError for unknown or missing keys."""
    try:
        # checkpoints written before ``encoder.block`` existed read the middle block
        enc = {"block": "mid", **d["encoder"]}
        return PolicyConfig(**{**d, "encoder": EncoderConfig(**enc), "head": HeadConfig(**d["head"])})
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"not a policy config this version understands: {e}") from None


def save_policy(policy, folder: str | Path, extra: dict | None = None, half: bool = False) -> Path:
    """Write the policy (and its generator) to ``folder`` atomically; ``half`` stores float weights as
    float16 (half the size; loading casts them back to float32)."""
    state = dict(policy.state_dict())
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "policy": config_to_dict(policy.cfg),
        "meta": policy.meta,
        "generator": config_to_dict(policy.generator.cfg) if policy.generator is not None else None,
        "weights_dtype": "float16" if half else "float32",
        **(extra or {}),
    }
    return save_checkpoint(folder, config, state)


def load_policy(folder: str | Path, device: str = "cpu"):
    """Load a checkpoint written by :func:`save_policy` (weights only); eval mode on ``device``."""
    from enerverse.generator import EnerVerseGenerator
    from enerverse.io import generator_config_from_dict
    from policies.model import DiffusionPolicy

    folder = resolve_folder(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a policy checkpoint folder (no config.json)")
    ck = load_checkpoint(folder, map_location=device)
    check_format(ck.config, FORMAT, VERSION, folder, "an EnerVerse policy")
    cfg = policy_config_from_dict(ck.config.get("policy"))
    spec = _data_spec(ck.config.get("meta"), folder, cfg.encoder.kind)
    gen = None
    if ck.config.get("generator") is not None:
        gen = EnerVerseGenerator(generator_config_from_dict(ck.config["generator"]))
    policy = DiffusionPolicy(cfg, spec, gen)
    missing, unexpected = policy.load_state_dict(ck.state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{folder} does not match its own config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    policy.train_config = ck.config.get("train")
    return policy.to(device).eval()


def _data_spec(meta: dict | None, folder: Path, kind: str):
    """The DataSpec of a checkpoint's ``meta``; CheckpointError naming the folder when it is unreadable
    or its encoder ``kind`` is not registered here (e.g. a plugin's encoder, not installed)."""
    from policies.encoder_api import DataSpec, encoder_kinds

    if kind not in encoder_kinds():
        raise CheckpointError(
            f"{folder} was trained with encoder kind {kind!r}; expected one registered here: "
            f"{', '.join(encoder_kinds())}"
        )
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder} is not a policy checkpoint this version reads: no 'meta' settings")
    try:
        return DataSpec.from_dict(meta)
    except (TypeError, ValueError) as e:  # the contract's own checks of foreign content
        raise CheckpointError(f"{folder} is not a policy checkpoint this version reads: {e}") from None


NORMALISATION_BUFFERS = (
    "action_lo",
    "action_hi",
    "state_mean",
    "state_std",
    "privileged_mean",
    "privileged_std",
)
TRAINING_ONLY = ("aux_head.",)  # the auxiliary object-state head (read at inference with aux_condition only)


def init_policy_from(policy, folder: str | Path) -> list[str]:
    """Warm-start ``policy`` with the encoder and head weights of checkpoint ``folder`` (fine-tuning).

    The generator and the normalisation statistics stay ``policy``'s own (its generator and its
    training data's). The two must share their policy settings, views and resolution (the DDIM step
    count, the auxiliary loss weight and the shift augmentations may differ: the auxiliary head is
    loaded when both have one of the same size); otherwise ConfigError listing the differences.
    Returns the loaded tensor names."""
    src = load_policy(folder, policy.device)

    def settings(p) -> dict:  # what gives the weights their meaning (DDIM steps at inference do not)
        d = config_to_dict(p.cfg)
        d["head"] = {k: v for k, v in d["head"].items() if k != "sample_steps"}
        d.pop("preset", None)
        d.pop("aux_weight", None)
        d.pop("aux_condition", None)  # a run may add the estimate token to a policy trained without it
        for k in ("aux_teacher", "aux_teacher_noise"):  # training-time only
            d.pop(k, None)
        for k in ("shift", "feature_shift"):  # training-time augmentation
            d["encoder"].pop(k, None)
        rig = recorded_rig_version(p.meta)
        return {**d, "views": list(p.meta["views"]), "resolution": p.meta["resolution"], "rig_version": rig}

    diff = describe_differences(settings(src), settings(policy))
    if diff:
        raise ConfigError(
            f"init_from={folder} was trained with other policy settings (checkpoint -> this run: {diff})"
        )
    # the auxiliary head carries over only between runs that regress the same object state layout
    both_aux = (
        src.aux_head is not None
        and policy.aux_head is not None
        and src.meta.get("privileged_dim") == policy.meta.get("privileged_dim")
    )

    def keep(k: str) -> bool:
        aux = k.startswith(TRAINING_ONLY)
        return not k.startswith("generator.") and k not in NORMALISATION_BUFFERS and (both_aux or not aux)

    theirs = {k: v for k, v in src.state_dict().items() if keep(k)}
    missing, extra = policy.load_state_dict(theirs, strict=False)  # same settings: same tensors and shapes
    missing = [
        k for k in missing if keep(k) and not (k.startswith("aux_proj.") and not src.cfg.aux_condition)
    ]
    if missing or extra:
        raise CheckpointError(f"init_from={folder}: missing {missing[:3]}, unexpected {extra[:3]}")
    return sorted(theirs)


def export(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """Copy a policy checkpoint (e.g. to ship it), optionally with float16 weights. ``src`` may also be
    an intermediate training step (``<run>/policy/step_<N>``, see :mod:`policies.snapshot`)."""
    from policies.snapshot import is_training_step, policy_at_step

    with keeping_card_notes(dst):
        if is_training_step(src):
            policy = policy_at_step(src)
            extra = {"train": policy.train_config, "step": policy.step}
            return save_policy(policy, dst, extra=extra, half=half)
        ck = load_checkpoint(src)
        policy = load_policy(src)
        own = ("format", "version", "policy", "meta", "generator", "weights_dtype")
        extra = {k: v for k, v in ck.config.items() if k not in own}
        return save_policy(policy, dst, extra=extra, half=half)


def main(argv: list[str] | None = None) -> None:
    """``python -m policies.io <checkpoint> <destination> [--float32]``: export a checkpoint (run paths
    in a training step's config are read relative to the current directory, as training read them)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m policies.io", description=main.__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--float32", action="store_true", help="keep float32 weights (default: float16)")
    args = ap.parse_args(argv)
    from enerverse.core.errors import user_errors

    with user_errors():
        out = export(args.src, args.dst, half=not args.float32)
    size = sum(f.stat().st_size for f in Path(out).iterdir()) / 2**20
    print(f"{out}: {size:.1f} MiB")


if __name__ == "__main__":
    main()
