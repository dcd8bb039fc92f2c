"""The blocks built on Conv1x1: ConvNormAct, MLPConv (NiN), Inception and NaiveInception (GoogLeNet).

Each block is checked against the same computation written with torch.nn.functional alone,
using the block's own weights: the oracle knows nothing of Conv1x1."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebyone import Conv1x1, ConvNormAct, Inception, MLPConv, NaiveInception

pytestmark = pytest.mark.usefixtures("one_thread_torch_kernels")



def _conv(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """A ConvNormAct's convolution (Conv1x1 or nn.Conv2d) by F.conv2d."""
    conv = layer.conv
    pad = 0 if isinstance(conv, Conv1x1) else conv.padding
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, pad)


# ------------------------------------------------------------------------ ConvNormAct


def test_convnormact_1x1_is_conv1x1_with_fused_relu() -> None:
    layer = ConvNormAct(6, 4, 1)
    assert isinstance(layer.conv, Conv1x1) and layer.conv.activation == "relu"
    assert [n for n, _ in layer.named_children()] == ["conv"]
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(layer(x), F.relu(_conv(layer, x)))


def test_convnormact_with_norm_has_no_bias() -> None:
    layer = ConvNormAct(6, 4, 1, norm=True).eval()
    assert isinstance(layer.conv, Conv1x1) and layer.conv.bias is None and layer.conv.activation is None
    assert [n for n, _ in layer.named_children()] == ["conv", "bn", "act"]
    with torch.no_grad():
        layer.bn.running_mean.uniform_(-1, 1)
        layer.bn.running_var.uniform_(0.5, 2)
        layer.bn.weight.uniform_(0.5, 2)
    x = torch.randn(2, 6, 5, 7)
    bn = layer.bn
    expected = F.relu(F.batch_norm(_conv(layer, x), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                   eps=bn.eps))
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize(("k", "stride"), [(3, 1), (5, 1), (3, 2), (7, 2)])
def test_convnormact_spatial(k: int, stride: int) -> None:
    layer = ConvNormAct(3, 8, k, stride, act=False)
    assert type(layer.conv) is nn.Conv2d and layer.conv.padding == (k // 2, k // 2)
    x = torch.randn(2, 3, 11, 11)
    y = layer(x)
    assert y.shape == (2, 8, (11 - 1) // stride + 1, (11 - 1) // stride + 1)
    torch.testing.assert_close(y, _conv(layer, x))


def test_convnormact_errors() -> None:
    with pytest.raises(ValueError, match="out_channels must be a positive int, got 0"):
        ConvNormAct(3, 0)
    with pytest.raises(ValueError, match="padding must be a non-negative int or None, got -1"):
        ConvNormAct(3, 4, 3, padding=-1)
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        ConvNormAct(3, 4, 2.5)


# ----------------------------------------------------------------------------- MLPConv


def test_mlpconv_is_spatial_conv_then_per_pixel_mlp() -> None:
    block = MLPConv(3, (12, 10, 6), 5)
    assert [n for n, _ in block.named_children()] == ["spatial", "mlp1", "mlp2"]
    assert isinstance(block.mlp1.conv, Conv1x1) and isinstance(block.mlp2.conv, Conv1x1)
    assert block.out_channels == 6
    x = torch.randn(2, 3, 9, 9)
    h = F.relu(_conv(block.spatial, x))  # N x 12 x 9 x 9
    # the 1x1 layers are a multilayer perceptron applied to each pixel's channel vector
    pixels = h.permute(0, 2, 3, 1)  # N x 9 x 9 x 12
    pixels = F.relu(F.linear(pixels, block.mlp1.conv.weight[:, :, 0, 0], block.mlp1.conv.bias))
    pixels = F.relu(F.linear(pixels, block.mlp2.conv.weight[:, :, 0, 0], block.mlp2.conv.bias))
    torch.testing.assert_close(block(x), pixels.permute(0, 3, 1, 2))


def test_mlpconv_last_act_off_gives_raw_scores() -> None:
    block = MLPConv(3, (8, 4), 3, last_act=False)
    assert not hasattr(block.mlp1, "act") and block.mlp1.conv.activation is None
    x = torch.randn(2, 3, 6, 6)
    assert (block(x) < 0).any()


def test_mlpconv_without_pointwise() -> None:
    block = MLPConv(3, (12, 10, 6), 5, pointwise=False)
    assert [n for n, _ in block.named_children()] == ["spatial"]
    assert block.spatial.conv.out_channels == 6  # straight to the block's output width
    assert not any(isinstance(m, Conv1x1) for m in block.modules())
    assert block(torch.randn(1, 3, 9, 9)).shape == (1, 6, 9, 9)


def test_mlpconv_norm_and_stride() -> None:
    block = MLPConv(4, (8, 8), 3, stride=2, norm=True)
    assert isinstance(block.spatial.bn, nn.BatchNorm2d) and isinstance(block.mlp1.bn, nn.BatchNorm2d)
    assert block(torch.randn(2, 4, 10, 10)).shape == (2, 8, 5, 5)


def test_mlpconv_errors() -> None:
    with pytest.raises(ValueError, match="widths must list at least one"):
        MLPConv(3, (), 3)
    with pytest.raises(ValueError, match=r"widths\[1\] must be a positive int, got 0"):
        MLPConv(3, (4, 0), 3)


# --------------------------------------------------------------------------- Inception


def _branch(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for layer in seq:
        x = F.relu(_conv(layer, x))
    return x


def test_inception_against_functional() -> None:
    torch.manual_seed(0)
    m = Inception(16, 4, 6, 8, 2, 3, 5)
    assert m.out_channels == 4 + 8 + 3 + 5
    for name in ("branch1", "branch2", "branch3", "branch4"):
        assert hasattr(m, name)
    assert isinstance(m.branch1.conv, Conv1x1)
    assert isinstance(m.branch2[0].conv, Conv1x1) and m.branch2[1].conv.kernel_size == (3, 3)
    assert isinstance(m.branch3[0].conv, Conv1x1) and m.branch3[1].conv.kernel_size == (5, 5)  # as published
    assert isinstance(m.branch4[1].conv, Conv1x1)
    x = torch.randn(2, 16, 7, 7)
    expected = torch.cat(
        [
            F.relu(_conv(m.branch1, x)),
            _branch(m.branch2, x),
            _branch(m.branch3, x),
            F.relu(_conv(m.branch4[1], F.max_pool2d(x, 3, 1, 1))),
        ],
        1,
    )
    y = m(x)
    assert y.shape == (2, 20, 7, 7)
    torch.testing.assert_close(y, expected)


def test_inception_params_follow_the_table_columns() -> None:
    # 3a: in 192, #1x1 64, #3x3 reduce 96, #3x3 128, #5x5 reduce 16, #5x5 32, pool proj 32
    m = Inception(192, 64, 96, 128, 16, 32, 32)
    weights = 192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32 + 192 * 32
    assert sum(p.numel() for p in m.parameters()) == weights + (64 + 96 + 128 + 16 + 32 + 32)


def test_naive_inception() -> None:
    m = NaiveInception(16, 4, 8, 3)
    assert m.out_channels == 4 + 8 + 3 + 16  # the pooled input passes through: depth grows
    assert not any(isinstance(c, Conv1x1) for c in (m.branch2.conv, m.branch3.conv))
    x = torch.randn(2, 16, 6, 6)
    branches = [F.relu(_conv(b, x)) for b in (m.branch1, m.branch2, m.branch3)]
    expected = torch.cat([*branches, F.max_pool2d(x, 3, 1, 1)], 1)
    torch.testing.assert_close(m(x), expected)
    weights = 16 * 4 + 9 * 16 * 8 + 25 * 16 * 3
    assert sum(p.numel() for p in m.parameters() if p.ndim > 1) == weights


def test_inception_gradients_and_errors() -> None:
    m = Inception(8, 2, 3, 4, 1, 2, 2, norm=True)
    m(torch.randn(3, 8, 5, 5)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match="ch5x5red must be a positive int, got 0"):
        Inception(8, 2, 3, 4, 0, 2, 2)
    with pytest.raises(ValueError, match="ch3x3 must be a positive int"):
        NaiveInception(8, 2, -1, 2)
