"""Stage 2 (the policy loss into the generator): LoRA adapters, partial / full unfreezing of the feature
path only, gradient checkpointing, co-training with the video loss, and DDP with two CPU processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_torchrun, train_tiny_policy
from torch import nn

from enerverse.core.config import ConfigError
from enerverse.io import load_generator
from policies.finetune import FinetuneSettings, LoRA, add_lora, merge_lora, prepare_generator
from policies.io import load_policy


@pytest.mark.parametrize(
    "layer", [nn.Linear(6, 5), nn.Conv1d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1)]
)
def test_lora_starts_at_the_base_layer_and_merges_exactly(layer: nn.Module) -> None:
    torch.manual_seed(0)
    x = (
        torch.randn(2, 6)
        if isinstance(layer, nn.Linear)
        else torch.randn(2, 4, *(9,) * (layer.weight.ndim - 2))
    )
    ref = layer(x)
    lora = LoRA(layer, rank=2)
    torch.testing.assert_close(lora(x), ref)  # zero-initialised adapter
    assert not any(p.requires_grad for p in lora.base.parameters())
    nn.init.normal_(lora.up.weight)  # as after training
    adapted = lora(x)
    assert not torch.allclose(adapted, ref)
    torch.testing.assert_close(lora.merged()(x), adapted, rtol=1e-4, atol=1e-5)


def test_add_and_merge_lora_round_trip_a_module_tree() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Sequential(nn.Conv1d(8, 8, 1)))
    params = add_lora(net, rank=2)
    assert len(params) == 4 and isinstance(net[0], LoRA) and isinstance(net[2][0], LoRA)
    assert merge_lora(net) == 2 and isinstance(net[0], nn.Linear) and isinstance(net[2][0], nn.Conv1d)


@pytest.mark.parametrize("mode", ["partial", "lora", "full"])
@pytest.mark.parametrize("block", ["first", "mid"])
def test_only_the_feature_path_trains_and_every_trainable_weight_gets_a_gradient(
    policy_workdir: Path, mode: str, block: str
) -> None:
    """No trainable parameter is left without a gradient by a features-only forward (DDP needs that)."""
    gen = load_generator(policy_workdir / "gen" / "checkpoint")
    params = prepare_generator(gen, FinetuneSettings(mode=mode, checkpointing=True), block)
    trainable = {id(p) for p in gen.parameters() if p.requires_grad}
    assert params and trainable == {id(p) for p in params}
    up = {id(p) for p in gen.denoiser.up.parameters()} | {id(p) for p in gen.denoiser.conv_out.parameters()}
    assert not trainable & up
    if mode == "partial":
        assert trainable == {id(p) for p in gen.denoiser.feature_path(block)[-1].parameters()}
    m, V, h = gen.cfg.memory.n_memory, gen.cfg.num_views, gen.cfg.resolution // gen.cfg.codec.factor
    T = m + gen.cfg.memory.chunk
    feats = gen.features(
        torch.randn(1, gen.cfg.codec.latent_channels, V, m, h, h),
        torch.randn(1, 6, V, T, h, h),
        torch.arange(T, dtype=torch.float32)[None] - m + 1,
        ["reach the red sphere"],
        seed=0,
        block=block,
    )
    feats.square().mean().backward()
    assert all(p.grad is not None for p in params)


def test_settings_are_checked() -> None:
    FinetuneSettings(mode="lora", video_weight=1.0).validate()
    for bad in (
        FinetuneSettings(mode="some"),
        FinetuneSettings(mode="partial", video_weight=1.0),
        FinetuneSettings(lr_scale=0.0),
    ):
        with pytest.raises(ConfigError, match="finetune"):
            bad.validate()


def _changed_generator_weights(policy_workdir: Path, checkpoint: str) -> list[str]:
    before = load_generator(policy_workdir / "gen" / "checkpoint").state_dict()
    policy = load_policy(checkpoint)  # merged: a plain policy, no adapter tensors
    after = {k[len("generator.") :]: v for k, v in policy.state_dict().items() if k.startswith("generator.")}
    assert set(after) == set(before)
    return [k for k, v in before.items() if not torch.equal(v, after[k])]


@pytest.mark.integration
def test_lora_runs_save_a_plain_policy_with_an_adapted_generator(policy_workdir: Path) -> None:
    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    common = (
        "finetune.mode=lora",
        "finetune.lr_scale=1",
        "train.steps=3",
        "train.ema_decay=0",
        "decision_stride=4",
    )
    s = train_tiny_policy(policy_workdir, "pol_lora", gen, *common)
    assert s["steps"] == 3 and 0 < s["generator_trainable"] < s["params_total"] // 4
    changed = _changed_generator_weights(policy_workdir, s["checkpoint"])
    path = (
        "denoiser.time_mlp.",
        "denoiser.pos_mlp.",
        "denoiser.conv_in.",
        "denoiser.down.0.",
    )  # block "first"
    assert changed and all(k.startswith(path) for k in changed)
    # one-stage co-training: the video loss also adapts the up path
    s = train_tiny_policy(policy_workdir, "pol_cotrain", gen, *common, "finetune.video_weight=0.5")
    changed = _changed_generator_weights(policy_workdir, s["checkpoint"])
    assert any(k.startswith("denoiser.up.") for k in changed)


@pytest.mark.integration
def test_generator_fine_tuning_runs_under_torchrun_with_two_cpu_processes(policy_workdir: Path) -> None:
    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    args = ["-m", "policies.train", "task=reach", "preset=tiny", "store=store", gen, "finetune.mode=full",
            "train.steps=2", "batch_size=4", "decision_stride=4", "out=ddp_finetune"]  # fmt: skip
    r = run_torchrun(args, policy_workdir, 29533)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["generator_trainable"] > 0


def test_video_adaptation_runs_first_on_at_most_adapt_episodes(policy_workdir: Path) -> None:
    """Stage 1 of ev-train-policy: the generator keeps training on the store (here on 2 of its 4
    episodes), and the policy reads the adapted generator."""
    import json

    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(
        policy_workdir, "pol_adapt", gen, "adapt.steps=2", "adapt.ckpt_every=1", "adapt_episodes=2",
        "train.steps=1",
    )  # fmt: skip
    adapted = Path(s["adapted_generator"])
    cfg = json.loads((adapted / "config.json").read_text())
    assert cfg["step"] == 2 and cfg["train"]["episodes"] == 2
    assert cfg["train"]["init_from"].endswith("checkpoint")
    assert s["steps"] == 1 and s["adapt_minutes"] > 0
    encoded = sorted(p.name for p in (adapted.parent / "latents").glob("*/episode_*.safetensors"))
    assert encoded == ["episode_000000.safetensors", "episode_000001.safetensors"]  # 2 of the 4 episodes
