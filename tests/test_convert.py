"""Conv1x1 is interchangeable with nn.Conv2d(k=1), and convert() swaps one for the other in any model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebyone import Conv1x1, convert


def _same_module_output(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("stride", "groups"), [(1, 1), (2, 1), ((1, 2), 2), (1, 4)])
def test_state_dict_moves_between_conv1x1_and_conv2d(bias, stride, groups):
    torch.manual_seed(0)
    ours = Conv1x1(8, 12, bias=bias, stride=stride, groups=groups)
    theirs = nn.Conv2d(8, 12, 1, bias=bias, stride=stride, groups=groups)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 7, 7)
    _same_module_output(ours, theirs, x)
    # and back: a fresh Conv1x1 takes nn.Conv2d's weights
    theirs.reset_parameters()
    again = Conv1x1(8, 12, bias=bias, stride=stride, groups=groups)
    again.load_state_dict(theirs.state_dict())
    _same_module_output(again, theirs, x)
    _same_module_output(again, theirs, x.contiguous(memory_format=torch.channels_last))


def test_parameters_are_shaped_and_initialised_like_conv2d():
    ours, theirs = Conv1x1(6, 10, groups=2), nn.Conv2d(6, 10, 1, groups=2)
    assert ours.weight.shape == theirs.weight.shape == (10, 3, 1, 1)
    assert ours.bias is not None and ours.bias.shape == (10,)
    bound = 1 / 3**0.5  # kaiming_uniform(a=sqrt(5)) and the bias share 1/sqrt(fan_in), fan_in = 3
    assert ours.weight.abs().max() <= bound and ours.bias.abs().max() <= bound
    assert Conv1x1(6, 10, bias=False).bias is None


def test_fused_activation_and_repr():
    m = Conv1x1(4, 4, bias=False, stride=2, groups=2, activation="relu")
    assert repr(m) == "Conv1x1(4, 4, bias=False, stride=2, groups=2, activation='relu')"
    x = torch.randn(1, 4, 6, 6)
    ref = torch.relu(nn.functional.conv2d(x, m.weight, stride=2, groups=2))
    torch.testing.assert_close(m(x), ref)
    assert repr(Conv1x1(3, 5)) == "Conv1x1(3, 5)"


def test_dtype_and_device_arguments():
    m = Conv1x1(3, 5, dtype=torch.float64, device="cpu")
    assert m.weight.dtype == torch.float64 and m.bias is not None and m.bias.dtype == torch.float64
    assert m(torch.randn(1, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"in_channels": 0, "out_channels": 4}, "in_channels"),
        ({"in_channels": 4, "out_channels": 2.5}, "out_channels"),
        ({"in_channels": 4, "out_channels": 6, "groups": 4}, "groups=4"),
        ({"in_channels": 4, "out_channels": 4, "activation": "swish"}, "'swish'"),
        ({"in_channels": True, "out_channels": 4}, "in_channels"),
    ],
)
def test_bad_constructor_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        Conv1x1(**kwargs)
    assert words in str(info.value)


# ----------------------------------------------------------------------------- convert


class SamePadConv(nn.Conv2d):
    """A subclass whose forward differs from nn.Conv2d's: convert must leave it alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def _mixed_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 8, 1),  # plain 1x1
        nn.Sequential(
            nn.Conv2d(8, 8, 1, stride=2, bias=False),  # ResNet-style stride-2 shortcut
            nn.Conv2d(8, 12, 1, groups=4),  # ShuffleNet-style grouped 1x1
        ),
        nn.Conv2d(12, 12, 1, padding=1),  # padded: not a pure pointwise op
        nn.Conv2d(12, 12, 1, dilation=2),  # dilated: left alone too
        SamePadConv(12, 6, 1),
        nn.BatchNorm2d(6),
        nn.Conv2d(6, 4, 3),
    )


def test_convert_swaps_exactly_the_pointwise_convs():
    model = _mixed_model()
    x = torch.randn(2, 3, 12, 12)
    model.eval()
    before = model(x)
    assert convert(model) is model
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, (nn.Conv2d, Conv1x1))]
    assert kinds == ["Conv2d", "Conv1x1", "Conv1x1", "Conv1x1", "Conv2d", "Conv2d", "SamePadConv", "Conv2d"]
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        model(x.contiguous(memory_format=torch.channels_last)), before, atol=1e-5, rtol=1e-5
    )
    shortcut = model[3][0]
    assert isinstance(shortcut, Conv1x1) and shortcut.bias is None and tuple(shortcut.stride) == (2, 2)
    assert isinstance(model[3][1], Conv1x1) and model[3][1].groups == 4
    assert not model.training


def test_converted_model_has_the_same_gradients():
    original = _mixed_model()
    converted = convert(_mixed_model())  # same seed, same weights
    x = torch.randn(2, 3, 12, 12)
    for m in (original, converted):
        m(x).square().mean().backward()
    grads = {name: p.grad for name, p in original.named_parameters()}
    for name, p in converted.named_parameters():
        assert p.grad is not None, name
        # the bias of the conv before BatchNorm has a zero gradient in exact arithmetic; in float32 it
        # is ~1e-5 of rounding whose digits depend on the order of the sums (another library's)
        torch.testing.assert_close(p.grad, grads[name], atol=5e-5, rtol=1e-4)


def test_convert_keeps_requires_grad_and_dtype():
    conv = nn.Conv2d(4, 2, 1).double()
    conv.weight.requires_grad_(False)
    new = convert(conv)  # a bare 1x1 conv comes back as a new Conv1x1
    assert isinstance(new, Conv1x1)
    assert new.weight.dtype == torch.float64 and not new.weight.requires_grad
    assert new.bias is not None and new.bias.requires_grad
    torch.testing.assert_close(new.weight, conv.weight)


def test_convert_leaves_other_models_and_rejects_non_modules():
    m = nn.Conv2d(4, 4, 3)
    assert convert(m) is m
    with pytest.raises(TypeError, match="list"):
        convert([nn.Conv2d(4, 4, 1)])  # type: ignore[arg-type]
