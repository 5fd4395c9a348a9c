"""Generator checkpoints (the final, EMA model) and train/held-out episode splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from enerverse.codec import DECODER_PREFIX
from enerverse.core.checkpoint import (
    CheckpointError,
    check_format,
    keeping_card_notes,
    load_checkpoint,
    save_checkpoint,
)
from enerverse.core.config import ConfigError, config_to_dict
from enerverse.core.errors import user_errors
from enerverse.core.store import (
    EpisodeStore,
    StoreFormatError,
    check_rig_version,
    recorded_rig_version,
    store_rig_version,
)
from enerverse.presets import CodecConfig, DenoiserConfig, DiffusionConfig, GeneratorConfig, MemoryConfig

FORMAT = "enerverse-generator"
VERSION = 1


def generator_config_from_dict(d: dict | None) -> GeneratorConfig:
    """Rebuild a GeneratorConfig from its JSON form; CheckpointError for unknown or missing keys."""
    try:
        return GeneratorConfig(
            **{
                **d,
                "codec": CodecConfig(**d["codec"]),
                "denoiser": DenoiserConfig(**d["denoiser"]),
                "diffusion": DiffusionConfig(**d["diffusion"]),
                "memory": MemoryConfig(**d["memory"]),
            }
        )
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"not a generator config this version understands: {e}") from None


def save_generator(
    model, cfg: GeneratorConfig, folder: str | Path, extra: dict | None = None, half: bool = False
) -> Path:
    """Write ``folder`` (config.json with format/version + model.safetensors) atomically; ``half``
    stores float weights as float16 (loading casts them back to float32)."""
    state = dict(model.state_dict())
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "generator": config_to_dict(cfg),
        **(extra or {}),
        "weights_dtype": "float16" if half else "float32",
    }
    return save_checkpoint(folder, config, state)


def save_codec(model, cfg: GeneratorConfig, folder: str | Path, extra: dict | None = None) -> Path:
    """Write only the (calibrated) codec of a generator, float16, for ``codec_from=<folder>``: a run
    that trains a new denoiser on a finished codec skips the codec stage."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if k.startswith("codec.")}
    config = {
        "format": "enerverse-codec",
        "version": VERSION,
        "generator": config_to_dict(cfg),
        **(extra or {}),
    }
    return save_checkpoint(folder, config, state)


def load_codec(folder: str | Path, device: str = "cpu"):
    """The codec of a codec checkpoint (:func:`save_codec`) or a generator checkpoint, with its
    generator config: (codec, GeneratorConfig)."""
    from enerverse.generator import make_codec

    ck = load_checkpoint(folder, map_location=device)
    if ck.config.get("format") not in (FORMAT, "enerverse-codec"):
        raise CheckpointError(
            f"{folder} is not an EnerVerse-G or codec checkpoint (format {ck.config.get('format')!r})"
        )
    cfg = generator_config_from_dict(ck.config.get("generator"))
    codec = make_codec(cfg.codec)
    codec.load_state_dict({k[len("codec.") :]: v for k, v in ck.state_dict.items() if k.startswith("codec.")})
    codec.data_meta = {k: ck.config[k] for k in ("rig_version", "data_fps") if k in ck.config}
    return codec.to(device).eval(), cfg


def export_generator(
    src: str | Path, dst: str | Path, half: bool = True, codec: str | Path | None = None
) -> Path:
    """Copy a generator checkpoint (e.g. to ship it), by default with float16 weights; a codec
    checkpoint (:func:`save_codec`, always float16) is copied as it is. ``codec``: a codec checkpoint
    whose decoder replaces the generator's (see :func:`swap_decoder`)."""
    ck = load_checkpoint(src)
    with keeping_card_notes(dst):
        if ck.config.get("format") == "enerverse-codec":
            if codec is not None:
                raise CheckpointError(f"{src} is a codec checkpoint; --codec swaps a generator's decoder")
            return save_checkpoint(dst, ck.config, ck.state_dict)
        model = load_generator(src)
        own = ("format", "version", "generator", "weights_dtype")
        extra = {k: v for k, v in ck.config.items() if k not in own}
        if codec is not None:
            source = swap_decoder(model, codec)
            extra["decoder_from"] = {"checkpoint": str(codec), "decoder_steps": source.get("decoder_steps")}
        return save_generator(model, model.cfg, dst, extra=extra, half=half)


def swap_decoder(model, codec_folder: str | Path) -> dict:
    """Give a generator the decoder of a codec checkpoint whose encoder and latent scale are the
    generator's own (a ``codec_decoder_only`` fine-tune of its codec): the latents, and so the denoiser,
    are unchanged. CheckpointError when the encoders differ. Returns the codec checkpoint's config."""
    ck = load_checkpoint(codec_folder)
    check_format(ck.config, "enerverse-codec", VERSION, codec_folder, "a codec")
    theirs = {k[len("codec.") :]: v for k, v in ck.state_dict.items() if k.startswith("codec.")}
    ours = model.codec.state_dict()
    if set(theirs) != set(ours):
        raise CheckpointError(f"{codec_folder} is a codec of another architecture than the generator's")
    for k, v in ours.items():  # compared in the codec checkpoint's dtype: it holds float16 copies
        if not k.startswith(DECODER_PREFIX) and not torch.equal(v.to(theirs[k].dtype), theirs[k]):
            raise CheckpointError(
                f"{codec_folder} encodes differently from the generator's codec ({k} differs): only a "
                "decoder fine-tune (codec_decoder_only=true) of this generator's codec can replace its "
                "decoder"
            )
    decoder = {k: v.to(ours[k].dtype) for k, v in theirs.items() if k.startswith(DECODER_PREFIX)}
    model.codec.load_state_dict({**ours, **decoder})  # the encoder and scale stay exactly the generator's
    return ck.config


def main(argv: list[str] | None = None) -> None:
    """``python -m enerverse.io <checkpoint> <destination> [--float32]``: export a generator (or codec)
    checkpoint."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m enerverse.io", description=main.__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--float32", action="store_true", help="keep float32 weights (default: float16)")
    ap.add_argument(
        "--codec", help="a codec checkpoint whose decoder replaces the generator's (same encoder)"
    )
    args = ap.parse_args(argv)
    with user_errors():
        out = export_generator(args.src, args.dst, half=not args.float32, codec=args.codec)
    size = sum(f.stat().st_size for f in Path(out).iterdir()) / 2**20
    print(json.dumps({"checkpoint": str(out), "mib": round(size, 2)}))


def load_generator(folder: str | Path, device: str = "cpu"):
    """Load a generator checkpoint folder written by :func:`save_generator` (weights only, no pickle)."""
    from enerverse.generator import EnerVerseGenerator

    ck = load_checkpoint(folder, map_location=device)
    check_format(ck.config, FORMAT, VERSION, folder, "an EnerVerse-G")
    cfg = generator_config_from_dict(ck.config.get("generator"))
    model = EnerVerseGenerator(cfg)
    missing, unexpected = model.load_state_dict(ck.state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{folder} does not match its own config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.train_config = ck.config.get("train")  # the run's settings (split, seed), if saved
    # camera rig and recording rate of its training data, as recorded (absent: written before them)
    model.data_meta = {k: ck.config[k] for k in ("rig_version", "data_fps") if k in ck.config}
    return model.to(device).eval()


def check_store_matches(model, store: EpisodeStore, who: str) -> None:
    """Refuse a store this generator would misread: another camera rig, recording rate (its frames
    are every ``frame_stride``-th recorded frame), resolution or view count. StoreFormatError names
    both sides."""
    got = store_rig_version(store)
    check_rig_version(recorded_rig_version(model.data_meta, got), got, who, str(store.path))
    idx = store.indices()
    if not idx:
        return
    ep = store.episode(idx[0])
    _, V, H, W, _ = ep.rgb.shape
    cfg = model.cfg
    fps, trained = float(ep.attrs["fps"]), model.data_meta.get("data_fps")
    if trained is not None and abs(fps - float(trained)) > 1e-6:
        k = cfg.frame_stride
        raise StoreFormatError(
            f"{store.path} was recorded at {fps:g} fps, but {who} was trained on {float(trained):g} fps data "
            f"with frame_stride={k} ({float(trained) / k:g} generator frames per second): its chunks would "
            f"span another time; use a store recorded at {float(trained):g} fps"
        )
    if (H, W) != (cfg.resolution, cfg.resolution) or V != cfg.num_views:
        raise StoreFormatError(
            f"{store.path} holds {V} views at {W}x{H} px, but {who} was trained on {cfg.num_views} views "
            f"at {cfg.resolution}x{cfg.resolution} px; collect a store with resolution={cfg.resolution} "
            f"and {cfg.num_views} views, or use a checkpoint trained at {H} px"
        )


def split_episodes(
    store: EpisodeStore, holdout: float, seed: int, task: str | None = None
) -> tuple[list[int], list[int]]:
    """Deterministic split of the (task's) episodes into training and held-out indices."""
    eps = [i for i in store.indices() if task is None or store.episode(i).attrs.get("task") == task]
    if not eps:
        raise ConfigError(f"the store {store.path} has no episodes" + (f" of task {task!r}" if task else ""))
    order = np.random.default_rng(seed).permutation(eps).tolist()
    n_held = int(round(holdout * len(eps)))
    if holdout > 0 and len(eps) > 1:
        n_held = max(1, n_held)
    return sorted(order[n_held:]), sorted(order[:n_held])


if __name__ == "__main__":
    main()
