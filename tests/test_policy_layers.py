"""The observation encoders' pooling layers: every future-token pooling gives one token per frame with
gradients, and the linear keypoint pool locates a feature."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("pool", ["keypoints", "keypoints_linear", "attention", "mean"])
def test_future_space_pooling_gives_one_token_per_frame(pool: str) -> None:
    from policies.config import EncoderConfig
    from policies.tokens import FutureSpaceTokens

    m = FutureSpaceTokens(EncoderConfig(kind="fused", pool=pool), 8, 2, 16, 6, 32)
    feats = torch.randn(3, 2, 6, 8, 4, 4, requires_grad=True)  # [B, V, T, C, h, w]
    out = m(feats)  # [B, T, D]
    assert out.shape == (3, 6, 32)
    out.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_linear_keypoint_pool_locates_a_feature_with_one_1x1_conv() -> None:
    from policies.layers import KeypointPool

    pool = KeypointPool(4, keypoints=2, linear=True)
    assert isinstance(pool.conv, torch.nn.Conv2d) and pool.conv.kernel_size == (1, 1)
    with torch.no_grad():  # keypoint 0 reads channel 2 sharply; keypoint 1 reads nothing
        pool.conv.weight.zero_()
        pool.conv.bias.zero_()
        pool.conv.weight[0, 2] = 50.0
    x = torch.zeros(2, 4, 8, 8)
    x[0, 2, 1, 6] = 1.0  # top right
    x[1, 2, 6, 1] = 1.0  # bottom left
    out = pool(x)  # [N, 3K]: x of each keypoint, y of each, mean of each
    assert out.shape == (2, 6)
    assert out[0, 0] > 0.5 and out[0, 2] < -0.5  # x right, y top
    assert out[1, 0] < -0.5 and out[1, 2] > 0.5
    assert abs(out[0, 1]) < 1e-5 and abs(out[0, 3]) < 1e-5  # the blind keypoint sits in the centre
