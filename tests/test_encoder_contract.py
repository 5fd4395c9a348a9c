"""The observation-encoder contract: registry, typed input features, and that the policy, the training
data and the runtime work with any registered encoder without looking at its kind."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_observation, train_tiny_policy

from enerverse.core.config import ConfigError
from enerverse.core.store import EpisodeStore
from policies.config import get_policy_preset
from policies.data import PolicyData
from policies.encoder_api import (
    DataSpec,
    InputFeature,
    ObservationEncoder,
    encoder_class,
    encoder_kinds,
    register_encoder,
)
from policies.model import DiffusionPolicy
from policies.runtime import ObservationError, PolicyRuntime

REPO = Path(__file__).resolve().parents[1]


@register_encoder("test_mean_colour")
class MeanColour(ObservationEncoder):
    """A deliberately simple encoder: the mean colour of each view of each memory frame. It needs an
    extra observation entry (``gain``), to show that the runtime validates what an encoder declares."""

    def __init__(self, cfg, spec: DataSpec, dim: int, generator=None) -> None:
        super().__init__(cfg, spec, dim)
        self.proj = torch.nn.Linear(3 * len(spec.views), dim)

    def input_features(self) -> list[InputFeature]:
        return [*super().input_features(), InputFeature("gain", "float", (1,))]

    def observe(self, obs: dict) -> list:
        rgb = torch.from_numpy(obs["rgb"]).float().mean(dim=(2, 3)) / 255  # [B, V, 3]
        return list(rgb * torch.from_numpy(obs["gain"]).float()[:, :, None])

    def memory_batch(self, items: list[list], pos: np.ndarray) -> dict:
        return {"colour": torch.stack([torch.stack(s) for s in items])}  # [B, m, V, 3]

    def data_batch(self, data, items: list[int], finetune: bool = False, video: bool = False) -> dict:
        frames = [data.frames(k, data.memory(k, c)) for k, c in (data.items[i] for i in items)]
        return {"colour": (torch.stack(frames).mean(dim=(4, 5)).transpose(1, 2) + 1) / 2}

    def forward(self, batch: dict, finetune: bool = False, seed: int | None = None) -> torch.Tensor:
        c = batch["colour"].float()
        return self.proj(c.reshape(*c.shape[:2], -1))  # [B, m, D]


def _spec(data: PolicyData) -> DataSpec:
    return DataSpec(views=data.views, resolution=32, state_dim=data.state_dim, text_encoder="hashing")


def test_registry_lists_the_built_in_encoders_and_refuses_unknown_kinds() -> None:
    assert {"enerverse", "cnn", "fused"} <= set(encoder_kinds())
    assert encoder_class("enerverse").needs_generator and not encoder_class("cnn").needs_generator
    cfg = get_policy_preset("tiny")
    cfg.encoder.kind = "resnet"
    with pytest.raises(ConfigError, match="encoder.kind must be one of .*cnn.*enerverse.*fused"):
        cfg.validate()
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("cnn")(MeanColour)


def test_data_spec_reads_a_checkpoint_meta_and_names_unknown_keys() -> None:
    spec = DataSpec.from_dict({"views": ("main",), "resolution": 64, "state_dim": 15})
    assert spec.views == ["main"] and spec.privileged_dim == 0 and spec.rig_version is None
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown policy data settings \\['colour'\\]"):
        DataSpec.from_dict({**spec.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="lack \\['state_dim'\\]"):
        DataSpec.from_dict({"views": ["main"], "resolution": 64})


def test_a_new_encoder_runs_in_training_data_and_runtime_unchanged(policy_workdir: Path) -> None:
    store = EpisodeStore.open(policy_workdir / "store")
    data = PolicyData(store, store.indices()[:2], None, 32, n_memory=2, horizon=4)
    cfg = get_policy_preset("tiny")
    cfg.encoder.kind = "test_mean_colour"
    policy = DiffusionPolicy(cfg, _spec(data))
    policy.set_stats(data.stats())
    policy.encoder.prepare_data(data)
    loss, _ = policy.loss(data.batch([0, 1, 2], policy))
    loss.backward()
    assert policy.encoder.proj.weight.grad is not None

    rt = PolicyRuntime(policy.eval())
    assert [f.key for f in rt.features] == ["rgb", "gain", "state"]
    rt.reset("reach")
    obs = {k: v for k, v in random_observation(rt).items() if k in ("rgb", "state")}
    with pytest.raises(ObservationError, match=r"lacks \['gain'\].*gain float \[B, 1\]"):
        rt.act(obs)
    assert rt.act({**obs, "gain": np.ones(1)}).shape == (1, rt.horizon, 7)
    with pytest.raises(ObservationError, match="gain contains NaN"):
        rt.act({**obs, "gain": np.full(1, np.nan)})


def test_fused_encoder_reads_future_and_image_tokens(policy_workdir: Path) -> None:
    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(
        policy_workdir, "pol_fused", "policy.encoder.kind=fused", gen, "train.steps=2", "decision_stride=4"
    )
    assert s["steps"] == 2 and s["encoder"] == "fused"
    rt = PolicyRuntime(s["checkpoint"])
    enc = rt.policy.encoder
    assert enc.frames == enc.future.frames + rt.policy.cfg.n_memory
    assert any(k.startswith("encoder.image.") for k in rt.policy.state_dict())
    rt.reset("reach the red sphere")
    obs = random_observation(rt)
    batch_keys = set()
    orig = rt.policy.observation_tokens

    def spy(batch, *a, **k):
        batch_keys.update(batch)
        tokens = orig(batch, *a, **k)
        assert tokens.shape[1] == enc.frames
        return tokens

    rt.policy.observation_tokens = spy
    assert rt.act(obs).shape == (1, rt.horizon, 7)
    assert {"memory", "rays", "pos", "frames"} <= batch_keys
    assert rt.imagine() is not None  # it has a generator to imagine with
    rt.reset(["reach the red sphere", "reach the blue sphere"])  # two envs: imagine a subset
    rt.observe(random_observation(rt, B=2))
    assert rt.imagine().shape[0] == 2 and rt.imagine(envs=(1,)).shape[0] == 1
    for bad in ([], [2], [-1]):
        with pytest.raises(ValueError, match=r"imagine\(envs=...\) expects indices in \[0, 2\)"):
            rt.imagine(envs=bad)


def test_future_gate_starts_the_fused_policy_as_the_image_baseline_and_opens_in_training(
    policy_workdir: Path,
) -> None:
    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(
        policy_workdir,
        "pol_gated",
        "policy.encoder.kind=fused",
        "policy.encoder.future_gate=true",
        gen,
        "train.steps=3",
        "decision_stride=4",
    )
    rt = PolicyRuntime(s["checkpoint"])
    enc = rt.policy.encoder
    assert enc.gate is not None and float(enc.gate.detach()) != 0.0  # trained: the gate moved off 0
    rt.reset("reach the red sphere")
    rt.act(random_observation(rt))
    seen = {}
    orig = enc.forward

    def spy(batch, *a, **k):
        seen["tokens"] = orig(batch, *a, **k)
        return seen["tokens"]

    enc.forward = spy
    with torch.no_grad():
        enc.gate.zero_()  # a new policy's gate: the future tokens are silent, the image tokens are not
    rt.act(random_observation(rt))
    future = seen["tokens"][:, : enc.future.frames]
    assert (
        torch.count_nonzero(future) == 0 and torch.count_nonzero(seen["tokens"][:, enc.future.frames :]) > 0
    )
    cfg = get_policy_preset("tiny")
    cfg.encoder.kind, cfg.encoder.future_gate = "cnn", True  # no future tokens to gate: refused
    with pytest.raises(ConfigError, match="future_gate gates the fused encoder's future tokens"):
        cfg.validate()


def test_token_stride_reads_fewer_frames_and_keeps_the_current_one(policy_workdir: Path) -> None:
    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    args = ("policy.encoder.kind=fused", gen, "train.steps=2", "decision_stride=4")
    s = train_tiny_policy(policy_workdir, "pol_stride", *args, "policy.encoder.token_stride=2")
    rt = PolicyRuntime(s["checkpoint"])
    fut = rt.policy.encoder.future  # tiny generator: 2 memory + 4 future frames
    assert fut.token_frames == [1, 3, 5] and fut.decision_tokens == [0]  # frame 1: the current one
    rt.reset("reach the red sphere")
    assert rt.act(random_observation(rt)).shape == (1, rt.horizon, 7)
    with pytest.raises(ConfigError, match="token_stride=3 must divide"):
        train_tiny_policy(policy_workdir, "pol_stride3", *args, "policy.encoder.token_stride=3")


def test_runtime_data_and_training_never_branch_on_the_encoder_kind() -> None:
    for name in ("runtime.py", "data.py", "model.py", "train.py"):
        text = (REPO / "policies" / name).read_text()
        assert not re.search(r"kind\s*(==|!=|in\s)", text), f"policies/{name} branches on the encoder kind"


@pytest.mark.parametrize("block", ["first", "mid", "first+mid"])
def test_future_space_encoder_reads_one_or_several_blocks_at_a_noise_level(
    policy_workdir: Path, block: str
) -> None:
    from enerverse.io import load_generator

    gen = load_generator(policy_workdir / "gen" / "checkpoint")
    store = EpisodeStore.open(policy_workdir / "store")
    data = PolicyData(store, store.indices()[:1], None, 32, gen.cfg.memory.n_memory, 4)
    timesteps, inner = set(), gen.denoiser.feature_maps

    def spy(x, rays, t, *args):  # the future frames' timestep of every forward
        timesteps.add(int(t[:, :, -1].max()))
        return inner(x, rays, t, *args)

    gen.denoiser.feature_maps = spy
    tokens = {}
    for level in (1.0, 0.5):
        cfg = get_policy_preset("tiny")
        cfg.n_memory, cfg.encoder.block, cfg.encoder.noise_level = gen.cfg.memory.n_memory, block, level
        torch.manual_seed(0)
        policy = DiffusionPolicy(cfg, _spec(data), gen).eval()
        data.cache.pop("features", None)
        policy.encoder.prepare_data(data)
        assert set(data.cache["features"]) == set(block.split("+"))
        batch = data.batch([0, 1], policy)
        tokens[level] = policy.observation_tokens(batch)
        assert tokens[level].shape == (2, policy.encoder.frames, cfg.head.dim)
        live = policy.observation_tokens(policy.encoder.data_batch(data, [0, 1], finetune=True), seed=0)
        assert live.shape == tokens[level].shape
    N = gen.diffusion.num_train_timesteps
    assert timesteps == {N - 1, N // 2 - 1}


def test_feature_cache_keeps_the_frames_the_tokens_read_and_refuses_another_stride(
    policy_workdir: Path,
) -> None:
    from enerverse.io import load_generator

    gen = load_generator(policy_workdir / "gen" / "checkpoint")
    assert gen.cfg.memory.chunk % 2 == 0
    store = EpisodeStore.open(policy_workdir / "store")
    data = PolicyData(store, store.indices()[:1], None, 32, gen.cfg.memory.n_memory, 4)
    policies = {}
    for stride in (2, 1):
        cfg = get_policy_preset("tiny")
        cfg.n_memory, cfg.encoder.token_stride = gen.cfg.memory.n_memory, stride
        policies[stride] = DiffusionPolicy(cfg, _spec(data), gen).eval()
    enc = policies[2].encoder
    enc.prepare_data(data)
    window = gen.cfg.memory.n_memory + gen.cfg.memory.chunk
    assert data.cache["features"]["first"].shape[2] == enc.frames == window // 2  # only the read frames
    assert policies[2].observation_tokens(data.batch([0, 1], policies[2])).shape[1] == enc.frames
    with pytest.raises(RuntimeError, match="another encoder.token_stride"):
        data.batch([0, 1], policies[1])


def test_enerverse_reads_the_latents_a_cache_of_its_codec_holds(
    policy_workdir: Path, tiny_enerverse_policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``data.cache["latent_cache"]`` (the trainer passes the video adaptation's) the encoder reads
    the episodes it holds and encodes only the rest, to the same latents; another codec's cache is
    never read."""
    import copy

    import policies.encoders as encoders
    from enerverse.latent_cache import LatentCache

    policy = PolicyRuntime(tiny_enerverse_policy).policy
    gen = policy.generator
    gen.cfg.frame_stride = 2  # the cache holds every 2nd frame: latent t' is frame 2 t'
    store = EpisodeStore.open(policy_workdir / "store")
    eps = store.indices()[:2]

    def data() -> PolicyData:  # decisions every 2nd frame: memory on frame 0's grid
        return PolicyData(store, eps, None, 32, policy.cfg.n_memory, 4, stride=2, memory_stride=2)

    plain, cached = data(), data()
    policy.encoder.prepare_data(plain)
    LatentCache(tmp_path / "latents", gen.codec).fill(gen, store, eps[:1], stride=gen.cfg.frame_stride)
    cached.cache["latent_cache"] = LatentCache.existing(tmp_path / "latents", gen.codec)
    calls: list[int] = []
    encode = encoders.encode_frames
    monkeypatch.setattr(encoders, "encode_frames", lambda *a, **k: calls.append(1) or encode(*a, **k))
    policy.encoder.prepare_data(cached)
    assert len(calls) == 1  # the second episode only
    for a, b in zip(plain.cache["latents"], cached.cache["latents"], strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=1e-2)
    assert any(len(plain.memory(k, c)) and (plain.memory(k, c) > 0).any() for k, c in plain.items)
    other = copy.deepcopy(gen.codec)
    with torch.no_grad():
        next(other.encoder.parameters()).add_(0.01)  # another encoder of the same shape
    assert LatentCache.existing(tmp_path / "latents", other) is None
    assert LatentCache.existing(tmp_path / "none", gen.codec) is None
