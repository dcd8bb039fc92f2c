"""Layers built on :func:`onebyone.conv1x1`.

Conv1x1 is a thin module over the op: its parameters are laid out exactly as
``nn.Conv2d(in_channels, out_channels, 1)`` keeps them, so state_dicts move freely
between the two. :func:`convert` swaps the 1x1 convolutions of an existing model for
Conv1x1, keeping their weights.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from .ops import ACTIVATIONS, conv1x1

__all__ = ["Conv1x1", "ConvNormAct", "Inception", "MLPConv", "NaiveInception", "convert"]


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


# ------------------------------------------------------------ blocks built on Conv1x1
#
# The two places the 1x1 convolution made its name: Network in Network's "mlpconv"
# block (a spatial convolution followed by a per-pixel multilayer perceptron, which is
# a stack of 1x1 convolutions) and GoogLeNet's Inception module (1x1 convolutions that
# reduce depth before the expensive 3x3 and 5x5 ones). Every 1x1 layer below is a
# Conv1x1, so it runs on onebyone's own op.


def _check_channels(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class ConvNormAct(nn.Sequential):
    """Convolution, optional BatchNorm, optional ReLU: the unit every block here is made of.

    A 1x1 kernel with no padding becomes a :class:`Conv1x1` (the ReLU fused into the op
    when there is no norm between them); any other kernel is an ``nn.Conv2d``.

    Args:
        in_channels, out_channels: input and output feature maps.
        kernel_size: odd side of the square kernel.
        stride: subsampling of the convolution.
        padding: defaults to ``kernel_size // 2``, which keeps the map size at stride 1.
        norm: insert ``nn.BatchNorm2d`` after the convolution (the convolution then has no
            bias, which BatchNorm would cancel).
        act: apply a ReLU at the end.

    Children are named ``conv``, ``bn`` (with norm) and ``act`` (when not fused).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        *,
        norm: bool = False,
        act: bool = True,
    ) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                        stride=stride)
        if padding is None:
            padding = kernel_size // 2
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int or None, got {padding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        conv: nn.Module
        if kernel_size == 1 and padding == 0:
            fuse = act and not norm
            conv = Conv1x1(in_channels, out_channels, bias=not norm, stride=stride,
                           activation="relu" if fuse else None)
            act = act and not fuse
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not norm)
        self.add_module("conv", conv)
        if norm:
            self.add_module("bn", nn.BatchNorm2d(out_channels))
        if act:
            self.add_module("act", nn.ReLU(inplace=True))


class MLPConv(nn.Sequential):
    """Network in Network's mlpconv block: a k x k convolution, then 1x1 convolutions, each with ReLU.

    ``widths`` lists the output maps of every layer: ``MLPConv(3, (192, 160, 96), 5)`` is
    the NiN paper's first CIFAR-10 block, a 5x5 convolution to 192 maps followed by 1x1
    convolutions to 160 and to 96. The 1x1 layers are a small multilayer perceptron
    applied at every pixel across the channels; that is the "network in network".

    Args:
        in_channels: input feature maps.
        widths: output maps of the spatial layer and of each 1x1 layer (at least one).
        kernel_size, stride, padding: of the spatial layer (padding defaults to k // 2).
        norm: BatchNorm after every convolution.
        last_act: ReLU after the last layer too (turn off when it produces class scores).
        pointwise: ``False`` builds the block without its 1x1 layers: nothing replaces them,
            and the spatial layer maps straight to ``widths[-1]`` so that the block's output
            (and so the rest of the network) keeps its shape. This is the "no 1x1" ablation.

    Children: ``spatial`` and ``mlp1``, ``mlp2``, ... (the 1x1 layers, all Conv1x1).
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] | list[int],
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        *,
        norm: bool = False,
        last_act: bool = True,
        pointwise: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths must list at least one layer width, got ()")
        _check_channels(in_channels=in_channels, **{f"widths[{i}]": w for i, w in enumerate(widths)})
        self.in_channels = in_channels
        self.out_channels = widths[-1]
        self.pointwise = pointwise
        first = widths[0] if pointwise else widths[-1]
        only = not pointwise or len(widths) == 1
        self.add_module("spatial", ConvNormAct(in_channels, first, kernel_size, stride, padding, norm=norm,
                                               act=last_act or not only))
        if pointwise:
            for i, (c_in, c_out) in enumerate(itertools.pairwise(widths), start=1):
                act = last_act or i < len(widths) - 1
                self.add_module(f"mlp{i}", ConvNormAct(c_in, c_out, 1, norm=norm, act=act))


class Inception(nn.Module):
    """GoogLeNet's Inception module (v1, "with dimension reductions"): four branches, concatenated.

    The arguments are the columns of the paper's Table 1:

    * ``branch1``: 1x1 convolution to ``ch1x1`` maps;
    * ``branch2``: 1x1 reduction to ``ch3x3red`` maps, then 3x3 convolution to ``ch3x3``;
    * ``branch3``: 1x1 reduction to ``ch5x5red`` maps, then 5x5 convolution to ``ch5x5``
      (5x5 as published; torchvision's port uses 3x3 here);
    * ``branch4``: 3x3 max pooling (stride 1), then 1x1 projection to ``pool_proj`` maps.

    Every convolution is followed by ReLU (and BatchNorm before it with ``norm``). The
    output has ``ch1x1 + ch3x3 + ch5x5 + pool_proj`` maps, the input's height and width.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        norm: bool = False,
    ) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, ch1x1=ch1x1, ch3x3red=ch3x3red, ch3x3=ch3x3,
                        ch5x5red=ch5x5red, ch5x5=ch5x5, pool_proj=pool_proj)
        self.in_channels = in_channels
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = ConvNormAct(in_channels, ch1x1, 1, norm=norm)
        self.branch2 = nn.Sequential(
            ConvNormAct(in_channels, ch3x3red, 1, norm=norm), ConvNormAct(ch3x3red, ch3x3, 3, norm=norm)
        )
        self.branch3 = nn.Sequential(
            ConvNormAct(in_channels, ch5x5red, 1, norm=norm), ConvNormAct(ch5x5red, ch5x5, 5, norm=norm)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            ConvNormAct(in_channels, pool_proj, 1, norm=norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        # N x C x H x W -> N x (ch1x1 + ch3x3 + ch5x5 + pool_proj) x H x W
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class NaiveInception(nn.Module):
    """The "naive" Inception module (the paper's Figure 2a): no 1x1 reductions.

    The 3x3 and 5x5 convolutions read all ``in_channels`` maps directly, and the pooling
    branch passes its input through unprojected, so the output has ``ch1x1 + ch3x3 +
    ch5x5 + in_channels`` maps: depth grows with every module, which is the blow-up the
    1x1 reductions of :class:`Inception` prevent. Branch names match :class:`Inception`.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, ch5x5: int, *, norm: bool = False) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, ch1x1=ch1x1, ch3x3=ch3x3, ch5x5=ch5x5)
        self.in_channels = in_channels
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels
        self.branch1 = ConvNormAct(in_channels, ch1x1, 1, norm=norm)
        self.branch2 = ConvNormAct(in_channels, ch3x3, 3, norm=norm)
        self.branch3 = ConvNormAct(in_channels, ch5x5, 5, norm=norm)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        # N x C x H x W -> N x (ch1x1 + ch3x3 + ch5x5 + C) x H x W
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)
