"""Multi-task generator pretraining: worker data loading, the on-disk latent cache, several stores,
object metrics in ev-eval-generator, a stopped run that resumes, and store/checkpoint mismatches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module
from torch.utils.data import Dataset

from enerverse.core.batch_order import epoch_batches
from enerverse.core.loader import loader_batches


class Items(Dataset):
    """Item (i, epoch) -> tensor [i, epoch]."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        return torch.tensor(key)


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_follows_the_epoch_order_and_resumes_from_its_position(workers: int) -> None:
    ref_state = {"epoch": 0, "index": 0}
    ref = epoch_batches(10, 3, 7, ref_state, lambda idx, ep: torch.tensor([[i, ep] for i in idx]))
    state = {"epoch": 0, "index": 0}
    it = loader_batches(Items(), 3, 7, state, _stack, workers)
    seen = []
    for _ in range(5):  # 3 batches per epoch: crosses into epoch 1
        b = next(it)
        torch.testing.assert_close(b, next(ref))
        assert state == ref_state  # advanced as each batch is handed out, not as workers prefetch
        seen.append(b)
    resumed = loader_batches(Items(), 3, 7, dict(state), _stack, workers)  # a checkpoint's position
    torch.testing.assert_close(next(resumed), next(ref))


def _write_episode(store, index: int, task: str, T: int = 9, seg: bool = True) -> None:
    rng = np.random.default_rng(index)
    K = np.stack([[[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]] * 2).astype(np.float32)
    Tcw = np.broadcast_to(np.eye(4, dtype=np.float32), (2, 4, 4)).copy()
    Tcw[:, 2, 3] = 1.0
    extra = {"seg_names": ["cube"]} if seg else {}
    with store.write_episode(
        index, task=task, instruction=f"do {task}", seed=index, view_names=["main", "anchor_left"],
        view_kinds=["real", "anchor"], fps=20.0, K=K, **extra,
    ) as w:  # fmt: skip
        for _ in range(T):
            masks = np.zeros((2, 32, 32), np.uint8)
            masks[:, 10:16, 10:16] = 1
            w.add_frame(
                rgb=rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
                state=np.zeros(3, np.float32),
                action=np.zeros(7, np.float32),
                T_cam_world=Tcw,
                seg=masks if seg else None,
            )


def test_latent_cache_writes_once_and_drops_latents_of_another_codec(tmp_path: Path) -> None:
    from enerverse.core.store import EpisodeStore
    from enerverse.data import encode_episodes
    from enerverse.generator import EnerVerseGenerator
    from enerverse.latent_cache import LatentCache
    from enerverse.presets import get_preset

    store = EpisodeStore.create(tmp_path / "s")
    _write_episode(store, 0, "reach")
    torch.manual_seed(0)
    g = EnerVerseGenerator(get_preset("tiny")).eval()
    cache = LatentCache(tmp_path / "cache", g.codec)
    latents = cache.fill(g, store, [0])
    f = latents.file(0)
    torch.testing.assert_close(latents[0], encode_episodes(g, store, [0])[0])
    mtime = f.stat().st_mtime_ns
    cache.fill(g, store, [0])  # already there: not encoded again
    assert f.stat().st_mtime_ns == mtime
    from enerverse.core.fsutil import write_json_atomic
    from enerverse.latent_cache import codec_fingerprint

    legacy = {"fingerprint": codec_fingerprint(g.codec, decoder=True)}  # caches written before 2026-12-01
    write_json_atomic(tmp_path / "cache" / "codec.json", legacy)
    assert 0 in LatentCache(tmp_path / "cache", g.codec).episodes(store)  # kept, fingerprint updated
    with torch.no_grad():
        next(g.codec.decoder.parameters()).add_(1.0)  # a decoder fine-tune: the latents are the same
    assert 0 in LatentCache(tmp_path / "cache", g.codec).episodes(store)
    with torch.no_grad():
        g.codec.scale.mul_(2.0)  # another codec
    again = LatentCache(tmp_path / "cache", g.codec)
    assert 0 not in again.episodes(store)  # the stale latents are gone


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tasks in two stores (with segmentation) and a third without masks."""
    from enerverse.core.store import EpisodeStore

    d = tmp_path_factory.mktemp("pretrain")
    for name, seg in (("reach", True), ("push", True), ("plain", False)):
        store = EpisodeStore.create(d / name, attrs={"collection": {"rig_version": 2}})
        for i in range(3):
            _write_episode(store, i, name if name != "plain" else "reach", seg=seg)
    return d


TRAIN = ["enerverse.train", "preset=tiny", "stores=[reach,push]", "codec.steps=3", "sample_every=0",
         "holdout=0.34", "workers=2", "generator.frame_stride=2"]  # fmt: skip


@pytest.mark.integration
def test_multitask_run_trains_on_every_store_and_evaluates_objects(two_stores: Path) -> None:
    r = run_module(two_stores, *TRAIN, "train.steps=3", "out=run")
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["train_episodes"] == 4 and s["heldout_episodes"] == 2 and s["task"] == ["push", "reach"]
    config = json.loads((two_stores / "run" / "checkpoint" / "config.json").read_text())
    assert config["rig_version"] == 2 and config["data_fps"] == 20.0
    assert config["generator"]["frame_stride"] == 2
    assert len(list((two_stores / "run" / "latents").glob("*/episode_*.safetensors"))) == 4
    codec = json.loads((two_stores / "run" / "codec" / "final" / "config.json").read_text())
    assert codec["format"] == "enerverse-codec" and codec["rig_version"] == 2  # for codec_from=
    again = run_module(
        two_stores, *TRAIN, "train.steps=1", "codec_from=run/codec/final", "out=run_codec_from"
    )
    assert json.loads(again.stdout.strip().splitlines()[-1])["codec_from"] == "run/codec/final"
    assert not (two_stores / "run_codec_from" / "codec").exists()  # no codec stage of its own


@pytest.mark.integration
def test_a_codec_that_cannot_reconstruct_the_store_warns_and_codec_finetune_helps(two_stores: Path) -> None:
    """init_from a generator whose codec reconstructs this store badly (here: 3 codec steps) warns and
    names codec_finetune; with it the run fine-tunes that codec here (a codec stage of its own, whose
    time counts), and the reconstruction gets better."""
    from enerverse.io import load_generator

    run_module(two_stores, *TRAIN, "train.steps=1", "out=ft_base")
    plain = run_module(two_stores, *TRAIN, "train.steps=1", "init_from=ft_base/checkpoint", "out=ft_plain")
    assert "reconstructs this store's frames at" in plain.stderr and "codec_finetune=true" in plain.stderr
    before = json.loads(plain.stdout.strip().splitlines()[-1])["codec_psnr"]
    tune = ["init_from=ft_base/checkpoint", "codec_finetune=true", "codec.steps=30"]
    ft = run_module(two_stores, *TRAIN, "train.steps=1", *tune, "out=ft")
    s = json.loads(ft.stdout.strip().splitlines()[-1])
    assert (two_stores / "ft" / "codec" / "final").is_dir() and s["codec_minutes"] > 0
    assert s["codec_psnr"] > before
    ckpts = [two_stores / run / "checkpoint" for run in ("ft_base", "ft")]
    base, tuned = (load_generator(c).codec.state_dict() for c in ckpts)
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    bad = run_module(two_stores, *TRAIN, "codec_finetune=true", "out=ft_bad", check=False)
    assert bad.returncode == 2 and "codec_finetune=true fine-tunes the codec of init_from" in bad.stderr
    kl = "generator.codec.kind=diffusers_kl"
    frozen = run_module(two_stores, *TRAIN, *tune, kl, "out=ft_bad", check=False)
    assert frozen.returncode == 2 and "need a trainable codec" in frozen.stderr
    # resuming with the flag switched would swap codecs under the denoiser: refused
    switched = run_module(two_stores, *TRAIN, "train.steps=2", tune[0], "out=ft", check=False)
    assert switched.returncode == 2 and "codec_finetune" in switched.stderr, switched.stderr[-1500:]


@pytest.mark.integration
def test_a_decoder_fine_tune_keeps_the_latents_and_replaces_a_generators_decoder(two_stores: Path) -> None:
    """codec_decoder_only trains the decoder alone (encoder and latent scale bit-identical, so the
    denoiser's latents are unchanged), from a codec (codec_from) or a generator (init_from); export
    --codec gives a generator that decoder, and refuses a codec that encodes differently."""
    from enerverse.core.checkpoint import load_checkpoint, save_checkpoint
    from enerverse.io import load_codec, load_generator

    run_module(two_stores, *TRAIN, "train.steps=1", "out=dd_base")
    ck = load_checkpoint(two_stores / "dd_base" / "codec" / "final")
    ck.state_dict["codec.scale"] *= 1.5  # a scale that recalibrating would not give: it must survive
    save_checkpoint(two_stores / "dd_src", ck.config, ck.state_dict)
    tune = ["codec_decoder_only=true", "codec.steps=6", "codec_only=true"]
    weight = "generator.codec.object_weight=16"  # a loss weight: codec_from may change it
    run_module(two_stores, *TRAIN, *tune, "codec_from=dd_src", weight, "out=dd")
    (base, _), (tuned, _) = (load_codec(two_stores / r) for r in ("dd_src", "dd/codec/final"))
    made = json.loads((two_stores / "dd" / "codec" / "final" / "config.json").read_text())
    assert made["codec_steps"] == 3 and made["decoder_steps"] == [6]  # the encoder's, then the decoder's
    b, t = base.state_dict(), tuned.state_dict()
    assert all(torch.equal(b[k], t[k]) for k in b if not k.startswith("decoder."))
    assert any(not torch.equal(b[k], t[k]) for k in b if k.startswith("decoder."))
    # from a generator: its decoder, swapped back into it
    run_module(two_stores, *TRAIN, *tune, "init_from=dd_base/checkpoint", "out=dd_init")
    swap = ("enerverse.io", "dd_base/checkpoint", "dd_swapped", "--codec")
    run_module(two_stores, *swap, "dd_init/codec/final")
    (own, _), g0, g1 = (
        load_codec(two_stores / "dd_init/codec/final"),
        *(load_generator(two_stores / f) for f in ("dd_base/checkpoint", "dd_swapped")),
    )
    torch.testing.assert_close(g1.codec.decoder.state_dict(), own.decoder.state_dict())
    torch.testing.assert_close(g1.denoiser.state_dict(), g0.half().float().denoiser.state_dict())
    assert json.loads((two_stores / "dd_swapped" / "config.json").read_text())["decoder_from"][
        "decoder_steps"
    ] == [6]
    bad = run_module(two_stores, *swap, "dd/codec/final", check=False)  # its scale is another
    assert bad.returncode == 2 and "encodes differently" in bad.stderr and "Traceback" not in bad.stderr
    alone = run_module(two_stores, *TRAIN, "codec_decoder_only=true", "out=x", check=False)
    assert alone.returncode == 2 and "codec_decoder_only=true fine-tunes the decoder" in alone.stderr
    both = run_module(
        two_stores, *TRAIN, "init_from=dd_base/checkpoint", "codec_from=dd_src", "out=x", check=False
    )
    assert both.returncode == 2 and "set one of them" in both.stderr


@pytest.mark.integration
def test_init_from_accepts_other_sampling_settings_but_not_other_weights(two_stores: Path) -> None:
    """Settings that only shape training samples (memory.train_uniform_prob, sparse_view_prob) may
    change when a run continues from a checkpoint; a setting that defines the model may not."""
    run_module(two_stores, *TRAIN, "train.steps=1", "out=if_base")
    mixed = ["init_from=if_base/checkpoint", "generator.memory.train_uniform_prob=0.5"]
    run_module(
        two_stores, *TRAIN, "train.steps=1", *mixed, "generator.diffusion.sparse_view_prob=0.3", "out=if_mix"
    )
    config = json.loads((two_stores / "if_mix" / "checkpoint" / "config.json").read_text())
    assert config["generator"]["memory"]["train_uniform_prob"] == 0.5
    other = run_module(two_stores, *TRAIN, *mixed, "generator.memory.chunk=2", "out=if_bad", check=False)
    assert other.returncode == 2 and "memory.chunk: 4 -> 2" in other.stderr, other.stderr[-800:]


@pytest.mark.integration
def test_codec_only_run_ends_before_the_denoiser_and_its_codec_ships(two_stores: Path) -> None:
    r = run_module(two_stores, *TRAIN, "codec_only=true", "out=codec_run")
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["codec"] == "codec_run/codec/final" and "steps" not in s
    assert not (two_stores / "codec_run" / "latents").exists()  # the denoiser's data was never encoded
    run_module(two_stores, "enerverse.io", "codec_run/codec/final", "shipped_codec")
    shipped = json.loads((two_stores / "shipped_codec" / "config.json").read_text())
    assert shipped["format"] == "enerverse-codec" and shipped["codec_steps"] == 3
    run_module(two_stores, *TRAIN, "train.steps=1", "codec_from=shipped_codec", "out=on_shipped")
    assert (two_stores / "on_shipped" / "checkpoint" / "model.safetensors").exists()


@pytest.mark.integration
def test_multitask_eval_reports_object_metrics(two_stores: Path) -> None:
    run_module(two_stores, *TRAIN, "train.steps=3", "out=run")
    ev_args = ("enerverse.evaluate", "checkpoint=run/checkpoint", "episodes=1", "chunks=1", "steps=2",
               "starts_per_episode=1", "memory_ablation=false")  # fmt: skip
    ev = run_module(two_stores, *ev_args, "store=push", "out=ev")
    summary = json.loads(ev.stdout.strip().splitlines()[-1])
    for key in ("object_psnr", "baseline_object_psnr", "object_ssim", "baseline_object_ssim"):
        assert np.isfinite(summary[key]), key
    plain = run_module(two_stores, *ev_args, "store=plain", "heldout_only=false", "out=ev2")
    plain_summary = json.loads(plain.stdout.strip().splitlines()[-1])
    assert "no segmentation masks" in plain.stderr and not any(k.startswith("object") for k in plain_summary)
    assert np.isfinite(plain_summary["psnr"])  # the whole-frame metrics are still reported


@pytest.mark.integration
def test_a_run_stopped_by_sigterm_saves_and_the_same_command_resumes(two_stores: Path) -> None:
    env = {**os.environ, "EV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", *TRAIN, "train.steps=100000", "train.ckpt_every=100000", "out=stopped"]
    p = subprocess.Popen(
        args, cwd=two_stores, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    tb = two_stores / "stopped" / "generator" / "tb"
    deadline = time.time() + 300
    while not tb.exists() and time.time() < deadline and p.poll() is None:  # the generator stage is running
        time.sleep(0.5)
    time.sleep(2.0)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["stopped_by"] == "SIGTERM" and "run the same command" in err and "Traceback" not in err
    step = stopped["steps"]
    assert step >= 1 and (two_stores / "stopped" / "generator" / f"step_{step:08d}").is_dir()
    resumed = run_module(
        two_stores, *TRAIN, f"train.steps={step + 2}", "train.ckpt_every=100000", "out=stopped"
    )
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == step + 2


@pytest.mark.integration
def test_eval_refuses_a_store_of_another_resolution_or_rate(two_stores: Path, tmp_path: Path) -> None:
    from enerverse.core.store import EpisodeStore

    if not (two_stores / "run" / "checkpoint").is_dir():
        run_module(two_stores, *TRAIN, "train.steps=1", "out=run")
    slow = EpisodeStore.create(tmp_path / "slow", attrs={"collection": {"rig_version": 2}})
    _write_episode(slow, 0, "reach")  # 20 fps, like the training stores
    ck = two_stores / "run" / "checkpoint"
    config = json.loads((ck / "config.json").read_text())
    config["data_fps"] = 10.0  # as if trained on a 10 fps robot
    other = tmp_path / "ck10"
    other.mkdir()
    for f in ck.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "config.json").write_text(json.dumps(config))
    r = run_module(tmp_path, "enerverse.evaluate", f"checkpoint={other}", f"store={tmp_path / 'slow'}",
             "heldout_only=false", "episodes=1", check=False)  # fmt: skip
    assert (
        r.returncode == 2 and "20 fps" in r.stderr and "10 fps" in r.stderr and "frame_stride=2" in r.stderr
    )
    legacy = dict(config, data_fps=20.0)
    del legacy["rig_version"]  # a checkpoint from before rig versions: rig v1
    (other / "config.json").write_text(json.dumps(legacy))
    r = run_module(tmp_path, "enerverse.evaluate", f"checkpoint={other}", f"store={tmp_path / 'slow'}",
             "heldout_only=false", "episodes=1", check=False)  # fmt: skip
    assert r.returncode == 2 and "rig v2" in r.stderr and "rig v1" in r.stderr


@pytest.mark.integration
def test_cue_classifier_reads_the_cued_plate_off_real_memory_frames(tmp_path: Path) -> None:
    """The colour classifier of the cue-recall metric is right on real frames (where the expert put
    the cube on the cued plate), so what it reads off imagined frames means something."""
    from enerverse.core.store import EpisodeStore
    from enerverse.cue_recall import chosen_plate, read_scene, start_frame
    from enerverse.data import load_frames

    run_module(tmp_path, "sim.collect", "task=memory", "episodes=4", "views=[main]", "seg=true", "out=mem",
         "video_episodes=0")  # fmt: skip
    store = EpisodeStore.open(tmp_path / "mem")
    for e in store.indices():
        ep = store.episode(e)
        frames, _ = load_frames(store, e, [0, ep.length - 1], 128)
        scene = read_scene(frames[0, 0].numpy(), ep.load("seg", 0)[0], list(ep.attrs["seg_names"]))
        assert chosen_plate(frames[0, 1].numpy(), scene) == scene.cued
        assert chosen_plate(frames[0, 0].numpy(), scene) is not None
    assert start_frame(4, 2) == 10 and start_frame(4, 1) == 6  # consecutive memory then sees no cue


@pytest.mark.integration
def test_sigterm_while_latents_are_encoded_ends_with_a_resume_line(two_stores: Path, tmp_path: Path) -> None:
    """Outside the training loop (codec calibration, latent encoding) SIGTERM still ends in one line."""
    env = {**os.environ, "EV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", "import signal, os, sys; sys.argv = ['x'] + sys.argv[1:]\n"
            "from enerverse.core import run\n"
            "def train(cfg, run_dir):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return {}\n"
            "import dataclasses\n"
            "@dataclasses.dataclass\nclass Cfg:\n    out: str = 'run'\n"
            "run.run_training_main(Cfg(), 'sigterm_test', train)\n"]  # fmt: skip
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]
    assert "stopped by SIGTERM" in r.stderr and "Traceback" not in r.stderr
