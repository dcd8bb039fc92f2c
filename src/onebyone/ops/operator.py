"""conv1x1 itself: argument checks, the autograd function, and the public entry point."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .checks import _check, _is_channels_last
from .onednn import _onednn_ok
from .passes import _activation_grad, _backward_on, _contiguous, _forward, _grad_input, _grad_weight, _pass_on
from .views import _format


class _Conv1x1Function(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        w: Tensor,
        stride: tuple[int, int],
        groups: int,
        activation: str | None,
        channels_last: bool,
    ) -> Tensor:
        # weight: the caller's tensor (K x C/g x 1 x 1 or K x C/g), the input whose gradient is
        # returned; w: the same values as K x C/g with contiguous rows, detached, what is computed
        # with. A view of weight made outside would put a view node into the graph (3 us of the
        # seed's 10x32x32->4 forward+backward here, 70.4 against 67.4 us interleaved).
        y = _forward(x, w, bias, stride, groups, activation, channels_last)
        ctx.save_for_backward(x, w, y if activation is not None else None)
        ctx.conf = (stride, groups, activation, bias is not None, channels_last, weight.shape)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, y = ctx.saved_tensors
        stride, groups, activation, has_bias, channels_last, weight_shape = ctx.conf
        if activation is not None:
            grad = _activation_grad(grad, y, activation)
        fmt = _format(channels_last)
        if not grad.is_contiguous(memory_format=fmt):
            grad = grad.contiguous(memory_format=fmt)
        gx = gw = gb = None
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if want_x and want_w:
            # oneDNN computes both in one call, sharing its reorder of grad: timed against the
            # best of the passes one by one
            names = ["torch"] + ["onednn"] * _onednn_ok(x, w, channels_last)
            gx, gw = _pass_on("backward", _backward_on, names, grad, x, w, stride, groups, channels_last)
        else:
            gx = _grad_input(grad, x, w, stride, groups, channels_last) if want_x else None
            gw = _grad_weight(grad, x, w, stride, groups, channels_last) if want_w else None
        if gw is not None and len(weight_shape) == 4:
            gw = gw.reshape(weight_shape)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


def conv1x1(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
) -> Tensor:
    """Pointwise (1x1) convolution: ``y[n, k] = act(sum_c weight[k, c] * x[n, c] + bias[k])``.

    Args:
        x: input, N x C x H x W, contiguous (NCHW) or channels_last.
        weight: K x C/groups x 1 x 1 (as ``nn.Conv2d`` keeps it) or K x C/groups.
        bias: optional, K values.
        stride: subsample rows and columns (an int or a (row, col) pair), as ResNet's
            1x1 stride-2 shortcut does.
        groups: split channels and filters into this many independent groups
            (ShuffleNet's grouped 1x1).
        activation: ``None``, ``"relu"`` or ``"relu6"``, applied in place on the result.

    Returns:
        N x K x ceil(H/stride) x ceil(W/stride), in the input's memory format.

    Raises:
        TypeError: a non-tensor, an integer or complex dtype, mixed dtypes.
        ValueError: wrong number of dimensions, a kernel that is not 1x1, channels that
            do not match the weight, groups that do not divide the channels, stride < 1,
            tensors on different devices, an unknown activation.
    """
    x, w, bias, stride_pair, groups, activation = _check(x, weight, bias, stride, groups, activation)
    channels_last = _is_channels_last(x)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    x, w = _contiguous(x, w, channels_last)
    if not needs_grad:  # inference: no autograd bookkeeping, nothing saved
        return _forward(x, w, bias, stride_pair, groups, activation, channels_last)
    y: Tensor = _Conv1x1Function.apply(x, weight, bias, w, stride_pair, groups, activation, channels_last)
    return y
