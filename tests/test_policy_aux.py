"""The auxiliary object-state loss (``policy.aux_weight``): data, loss, checkpoints, warm starts."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_observation, train_tiny_policy

from enerverse.core.config import ConfigError
from enerverse.core.store import EpisodeStore
from policies.config import get_policy_preset
from policies.data import PolicyData
from policies.model import DiffusionPolicy


def _data(store: Path, privileged: bool = True) -> PolicyData:
    s = EpisodeStore.open(store)
    return PolicyData(s, s.indices(), None, 32, n_memory=2, horizon=4, privileged=privileged)


def _cnn_policy(data: PolicyData) -> DiffusionPolicy:
    cfg = get_policy_preset("tiny")
    cfg.encoder.kind, cfg.encoder.shift, cfg.aux_weight = "cnn", 0, 0.5
    meta = {
        "views": data.views,
        "resolution": 32,
        "state_dim": data.state_dim,
        "text_encoder": "hashing",
        "privileged_dim": data.privileged_dim,
    }
    policy = DiffusionPolicy(cfg, meta)
    policy.set_stats(data.stats())
    return policy


def test_aux_loss_teaches_the_encoder_the_object_state(policy_workdir: Path) -> None:
    data = _data(policy_workdir / "store")
    assert data.privileged_dim == 3  # reach: the goal position
    stats = data.stats()
    every = np.concatenate(data.privileged)
    np.testing.assert_allclose(stats["privileged_mean"], every.mean(0), rtol=1e-5)
    items = list(range(len(data)))
    torch.manual_seed(0)
    policy = _cnn_policy(data)
    batch = data.batch(items, policy)
    k, c = data.items[5]
    np.testing.assert_array_equal(batch["privileged"][5].numpy(), data.privileged[k][c])

    loss, logs = policy.loss(batch)
    assert logs["loss"] == pytest.approx(logs["action_loss"] + 0.5 * logs["aux_loss"], rel=1e-5)

    # its gradient reaches the encoder, not the action head
    policy.zero_grad()
    policy.aux_loss(policy.observation_tokens(batch), batch).backward()
    assert all(p.grad is None for p in policy.head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.encoder.parameters())

    # and on its own it learns to read the goal position from the images of these 4 episodes
    params = [*policy.encoder.parameters(), *policy.aux_head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(60):
        aux = policy.aux_loss(policy.observation_tokens(batch), batch)
        opt.zero_grad()
        aux.backward()
        opt.step()
        losses.append(float(aux.detach()))
    assert np.mean(losses[-5:]) < 0.2 * losses[0], losses[::10]


def test_aux_loss_needs_episodes_with_object_state(policy_workdir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(policy_workdir / "store", store)
    shutil.rmtree(store / "episodes" / "episode_000002" / "privileged")  # e.g. recorded before it existed
    with pytest.raises(ConfigError, match=r"episodes \['[^']*/2'\] \(1 of 4\) did not.*aux_weight=0"):
        _data(store)
    assert _data(store, privileged=False).privileged is None  # without the loss the store is fine

    cfg = get_policy_preset("tiny")
    cfg.encoder.kind, cfg.aux_weight = "cnn", 1.0
    with pytest.raises(ValueError, match="privileged_dim"):
        meta = {"views": ["main"], "resolution": 32, "state_dim": 15, "text_encoder": "hashing"}
        DiffusionPolicy(cfg, meta)
    cfg.aux_weight = -1.0
    with pytest.raises(ConfigError, match="aux_weight must be >= 0"):
        cfg.validate()


def test_aux_checkpoint_runs_and_warm_starts_either_way(policy_workdir: Path) -> None:
    from policies.io import load_policy
    from policies.runtime import PolicyRuntime

    gen = f"generator={policy_workdir / 'gen' / 'checkpoint'}"
    s = train_tiny_policy(policy_workdir, "pol_aux", gen, "policy.aux_weight=1.0", "train.steps=3")
    ck = Path(s["checkpoint"])
    policy = load_policy(ck)
    assert policy.aux_head is not None and policy.meta["privileged_dim"] == 3
    assert torch.all(policy.privileged_std > 0)

    rt = PolicyRuntime(ck)  # the runtime never needs the object state
    rt.reset("reach the red sphere")
    obs = random_observation(rt)
    assert np.isfinite(rt.act(obs)).all()

    # the aux head carries over between runs with the same object state, not across layouts
    from policies.io import init_policy_from

    same = DiffusionPolicy(copy.deepcopy(policy.cfg), policy.meta, policy.generator)
    assert any(n.startswith("aux_head.") for n in init_policy_from(same, ck))
    other = DiffusionPolicy(copy.deepcopy(policy.cfg), {**policy.meta, "privileged_dim": 5}, policy.generator)
    assert not any(n.startswith("aux_head.") for n in init_policy_from(other, ck))

    # a run without the auxiliary loss can start from it (the aux head is left behind) ...
    plain = train_tiny_policy(policy_workdir, "pol_from_aux", gen, f"init_from={ck}", "train.steps=1")
    assert load_policy(plain["checkpoint"]).aux_head is None
    # ... and a run with it from a checkpoint without it (the aux head starts fresh)
    again = train_tiny_policy(
        policy_workdir, "pol_aux_again", gen, f"init_from={plain['checkpoint']}", "policy.aux_weight=2.0",
        "train.steps=1",
    )  # fmt: skip
    assert load_policy(again["checkpoint"]).aux_head is not None


def test_tasks_with_object_states_of_different_sizes_are_padded_and_masked(policy_workdir: Path) -> None:
    """Multi-task: reach records 3 numbers, other tasks more; the shorter vectors are NaN-padded, the
    statistics skip the padding and the auxiliary loss counts only the known entries."""
    data = _data(policy_workdir / "store")
    short = data.privileged[0]
    pad = ((0, 0), (0, 2))  # episode 0 has two more numbers (1.5), the others do not (NaN)
    fills = [1.5] + [np.nan] * (len(data.privileged) - 1)
    data.privileged = [np.pad(p, pad, constant_values=f) for p, f in zip(data.privileged, fills, strict=True)]
    stats = data.stats()
    assert np.isfinite(stats["privileged_mean"]).all() and stats["privileged_mean"][-1] == pytest.approx(1.5)
    torch.manual_seed(0)
    policy = _cnn_policy(data)
    batch = data.batch(list(range(len(data))), policy)
    obs = policy.observation_tokens(batch)
    loss = policy.aux_loss(obs, batch)
    assert torch.isfinite(loss)
    pred = policy.object_state(obs, standardised=True)
    target = (batch["privileged"] - policy.privileged_mean) / policy.privileged_std
    known = torch.isfinite(target)
    assert float(loss) == pytest.approx(float((pred - target)[known].square().mean()), rel=1e-5)
    assert short.shape[1] == 3


def test_aux_condition_gives_the_head_the_estimate_without_training_it_through_actions(
    policy_workdir: Path,
) -> None:
    data = _data(policy_workdir / "store")
    torch.manual_seed(0)
    plain = _cnn_policy(data)
    cfg = copy.deepcopy(plain.cfg)
    cfg.aux_condition = True
    policy = DiffusionPolicy(cfg, plain.spec)
    policy.set_stats(data.stats())
    batch = data.batch(list(range(8)), policy)
    cond, pad = policy.condition(batch)
    assert cond.shape[1] == plain.condition(batch)[0].shape[1] + 1 and not pad[:, -1].any()
    policy.zero_grad()
    policy.head.loss(policy.normalize_actions(batch["actions"]), cond, pad).backward()
    assert all(p.grad is None for p in policy.aux_head.parameters())  # the estimate is the aux loss's
    assert policy.aux_proj.weight.grad is not None  # connected (zero at init: the head's adaLN-Zero)
    cfg.aux_weight = 0.0
    with pytest.raises(ConfigError, match="aux_condition=true reads the auxiliary head"):
        cfg.validate()


def test_a_policy_trained_without_the_estimate_token_warm_starts_one_with_it(
    policy_workdir: Path, tmp_path: Path
) -> None:
    from policies.io import init_policy_from, save_policy

    data = _data(policy_workdir / "store")
    torch.manual_seed(0)
    plain = _cnn_policy(data)
    save_policy(plain, tmp_path / "plain")
    cfg = copy.deepcopy(plain.cfg)
    cfg.aux_condition = True
    cond = DiffusionPolicy(cfg, plain.spec)
    before = cond.aux_proj.weight.clone()
    loaded = init_policy_from(cond, tmp_path / "plain")
    assert any(k.startswith("aux_head.") for k in loaded) and not any(
        k.startswith("aux_proj.") for k in loaded
    )
    torch.testing.assert_close(cond.aux_proj.weight, before)  # new, left as initialised
    torch.testing.assert_close(cond.head.state_dict(), plain.head.state_dict())


def test_aux_teacher_feeds_the_true_object_state_in_training_only(policy_workdir: Path) -> None:
    data = _data(policy_workdir / "store")
    torch.manual_seed(0)
    plain = _cnn_policy(data)
    cfg = copy.deepcopy(plain.cfg)
    cfg.aux_condition, cfg.aux_teacher, cfg.aux_teacher_noise = True, 1.0, 0.0
    policy = DiffusionPolicy(cfg, plain.spec)
    policy.set_stats(data.stats())
    batch = data.batch(list(range(8)), policy)
    true = (batch["privileged"] - policy.privileged_mean) / policy.privileged_std
    est = policy.object_state(policy.observation_tokens(batch), standardised=True).detach()
    torch.testing.assert_close(policy.teacher_estimate(est, batch), true)
    T = policy.observation_tokens(batch).shape[1]  # the estimate token follows the observation tokens
    with torch.no_grad():
        cond_train = policy.condition(batch, teacher=True)[0][:, T]
        cond_infer = policy.condition(batch)[0][:, T]  # inference (predict) reads the estimate only
        torch.testing.assert_close(cond_train, policy.aux_proj(true))
        torch.testing.assert_close(cond_infer, policy.aux_proj(est))
    cfg.aux_teacher = 0.5  # about half the rows
    many = {"privileged": batch["privileged"].repeat(200, 1)}
    picked = (policy.teacher_estimate(est.repeat(200, 1), many) == true.repeat(200, 1)).all(1)
    assert 0.4 < float(picked.float().mean()) < 0.6
    cfg.aux_condition = False
    with pytest.raises(ConfigError, match="aux_teacher > 0 replaces the estimate token"):
        cfg.validate()
