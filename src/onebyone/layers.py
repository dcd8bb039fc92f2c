"""Layers built on :func:`onebyone.conv1x1`.

Conv1x1 is a thin module over the op: its parameters are laid out exactly as
``nn.Conv2d(in_channels, out_channels, 1)`` keeps them, so state_dicts move freely
between the two. :func:`convert` swaps the 1x1 convolutions of an existing model for
Conv1x1, keeping their weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .ops import ACTIVATIONS, conv1x1

__all__ = ["Conv1x1", "convert"]


class Conv1x1(nn.Module):
    """A pointwise convolution layer; ``forward`` calls :func:`onebyone.conv1x1`.

    Args:
        in_channels: C, the number of input feature maps.
        out_channels: K, the number of filters (output feature maps).
        bias: learn an additive bias per filter.
        stride: subsample the output (int or (row, col) pair).
        groups: grouped 1x1 convolution; must divide both channel counts.
        activation: ``None``, ``"relu"`` or ``"relu6"``, fused into the op.

    ``weight`` is K x C/groups x 1 x 1 and ``bias`` is K, as in ``nn.Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = True,
        *,
        stride: int | tuple[int, int] = 1,
        groups: int = 1,
        activation: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        self.activation = activation
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, 1, 1, device=device, dtype=dtype)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype))
        else:
            # registered as None (not a plain attribute) so state_dict and nn.Conv2d agree
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same initialisation as nn.Conv2d, so swapping one for the other changes nothing
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels // self.groups
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return conv1x1(
            x, self.weight, self.bias, stride=self.stride, groups=self.groups, activation=self.activation
        )

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}"
        if self.bias is None:
            s += ", bias=False"
        if self.stride not in (1, (1, 1)):
            s += f", stride={self.stride}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        return s


def _is_pointwise(m: nn.Module) -> bool:
    """A plain nn.Conv2d whose output a Conv1x1 reproduces exactly."""
    # subclasses are left alone: their forward may pad or reshape (e.g. "same" padding)
    if type(m) is not nn.Conv2d:
        return False
    padding_none = m.padding in ((0, 0), 0, "valid")
    return tuple(m.kernel_size) == (1, 1) and padding_none and tuple(m.dilation) == (1, 1)


def _from_conv2d(m: nn.Conv2d) -> Conv1x1:
    new = Conv1x1(
        m.in_channels,
        m.out_channels,
        bias=m.bias is not None,
        stride=tuple(m.stride),  # type: ignore[arg-type]
        groups=m.groups,
        device=m.weight.device,
        dtype=m.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(m.weight)
        if m.bias is not None and new.bias is not None:
            new.bias.copy_(m.bias)
    new.weight.requires_grad_(m.weight.requires_grad)
    if m.bias is not None and new.bias is not None:
        new.bias.requires_grad_(m.bias.requires_grad)
    new.train(m.training)
    return new


def convert(model: nn.Module) -> nn.Module:
    """Swap every 1x1 ``nn.Conv2d`` (no padding, no dilation) in ``model`` for :class:`Conv1x1`.

    Weights, biases, strides, groups, devices, dtypes, ``requires_grad`` and train/eval
    mode are kept, so the model computes the same outputs. The model is changed in
    place and returned; a model that is itself a 1x1 ``nn.Conv2d`` is returned as a
    new Conv1x1. Other convolutions, including subclasses of ``nn.Conv2d``, are left
    as they are.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    if _is_pointwise(model):
        return _from_conv2d(model)  # type: ignore[arg-type]
    for name, child in list(model.named_children()):
        if _is_pointwise(child):
            setattr(model, name, _from_conv2d(child))  # type: ignore[arg-type]
        else:
            convert(child)
    return model
