"""conv1x1: the pointwise convolution as one matrix multiply per image, forward and backward.

A 1x1 convolution never looks at a pixel's neighbours, so it is a matrix product in
disguise. Which product depends on where the channels sit in memory:

* NCHW (contiguous): each image is a C x (H*W) matrix; the output image is
  W (K x C) @ X (C x H*W). One batched GEMM, no im2col, no copy of the input.
* channels_last (NHWC in memory): the whole batch is one (N*H*W) x C matrix; the
  output is X @ W^T, one GEMM whose result is already channels_last.

The bias is the GEMM's additive term (addmm / baddbmm) and the activation runs in
place on the result, so neither costs an extra tensor. Backward reuses the same two
views: grad_x = W^T @ grad_y, grad_W = sum over images of grad_y @ X^T, grad_b =
sum of grad_y.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["ACTIVATIONS", "conv1x1"]

#: Activations conv1x1 can fuse, by name.
ACTIVATIONS = ("relu", "relu6")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- checks


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair


def _check(
    x: Any, weight: Any, bias: Any, stride: Any, groups: Any, activation: Any
) -> tuple[Tensor, Tensor, Tensor | None, tuple[int, int], int, str | None]:
    """Validate every argument; return x, the weight as K x C/groups, bias, stride, groups, activation."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"{name} has dtype {t.dtype}; expected a floating dtype "
                "(torch.float32, torch.float64, torch.bfloat16 or torch.float16)"
            )
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        got = f"x {x.dtype}, weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else "")
        raise TypeError(f"x, weight and bias must share one dtype; got {got}")
    if weight.device != x.device or (bias is not None and bias.device != x.device):
        got = f"x on {x.device}, weight on {weight.device}" + (
            f", bias on {bias.device}" if bias is not None else ""
        )
        raise ValueError(f"x, weight and bias must be on one device; got {got}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N x C x H x W), got {x.dim()}-D with shape {tuple(x.shape)}")
    if weight.dim() == 4:
        if tuple(weight.shape[2:]) != (1, 1):
            raise ValueError(
                f"weight must hold 1x1 kernels (K x C/groups x 1 x 1), got kernel size "
                f"{tuple(weight.shape[2:])} in weight of shape {tuple(weight.shape)}"
            )
        weight = weight.flatten(1)
    elif weight.dim() != 2:
        raise ValueError(
            f"weight must be K x C/groups x 1 x 1 or K x C/groups, got shape {tuple(weight.shape)}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    channels = x.shape[1]
    k, c_per_group = weight.shape
    if channels % groups:
        raise ValueError(f"groups={groups} must divide the input channels, got {channels} channels")
    if k % groups:
        raise ValueError(f"groups={groups} must divide the output channels, got weight with {k} filters")
    if c_per_group * groups != channels:
        raise ValueError(
            f"weight expects {c_per_group * groups} input channels ({c_per_group} per group x "
            f"{groups} groups) but x has {channels}"
        )
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"bias must have shape ({k},) to match the {k} filters, got {tuple(bias.shape)}")
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")
    return x, weight, bias, _pair(stride, "stride"), groups, activation


# ------------------------------------------------------------------------- layouts


def _is_channels_last(x: Tensor) -> bool:
    """True when x is laid out channels_last (NHWC in memory).

    A tensor with size-1 dimensions can be contiguous in both formats at once (1 x 1 x 1 x 2,
    say); then its strides say which format made it, as PyTorch's own suggest_memory_format
    decides, so that the output comes back in the format the caller asked for.
    """
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    if not x.is_contiguous():
        return True
    _, c, h, w = x.shape
    return x.stride() == (h * w * c, 1, w * c, c) and x.stride() != (c * h * w, h * w, w, 1)


def _activate_(y: Tensor, activation: str | None) -> Tensor:
    if activation == "relu":
        y.clamp_(min=0)
    elif activation == "relu6":
        y.clamp_(min=0, max=6)
    return y


def _activation_grad(grad: Tensor, y: Tensor, activation: str | None) -> Tensor:
    """grad_y times the activation's derivative, read off the saved output y."""
    if activation == "relu":
        return grad * (y > 0)
    if activation == "relu6":
        return grad * ((y > 0) & (y < 6))
    return grad


def _forward_nchw(x: Tensor, w: Tensor, bias: Tensor | None, groups: int) -> Tensor:
    n, c, h, wd = x.shape
    k = w.shape[0]
    g = groups
    xm = x.reshape(n, g, c // g, h * wd)  # view: N x G x C/G x HW
    wm = w.reshape(g, k // g, c // g)  # G x K/G x C/G
    out = torch.empty((n, k, h, wd), dtype=x.dtype, device=x.device)
    om = out.view(n, g, k // g, h * wd)
    for gi in range(g):
        xg, wg, og = xm[:, gi], wm[gi], om[:, gi]
        bg = None if bias is None else bias[gi * (k // g) : (gi + 1) * (k // g)]
        if n == 1:
            if bg is None:
                torch.mm(wg, xg[0], out=og[0]) if og[0].is_contiguous() else og[0].copy_(wg @ xg[0])
            else:
                og[0].copy_(torch.addmm(bg[:, None], wg, xg[0]))
            continue
        if bg is None:
            res = torch.matmul(wg, xg)
        else:
            res = torch.baddbmm(bg[None, :, None], wg.expand(n, -1, -1), xg)
        og.copy_(res)
    return out


def _forward_nhwc(x: Tensor, w: Tensor, bias: Tensor | None, groups: int) -> Tensor:
    n, c, h, wd = x.shape
    k = w.shape[0]
    g = groups
    xm = x.permute(0, 2, 3, 1).reshape(n * h * wd, c)  # view: (N*H*W) x C
    out = torch.empty((n, k, h, wd), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    om = out.permute(0, 2, 3, 1).reshape(n * h * wd, k)  # view: (N*H*W) x K
    if g == 1:
        if bias is None:
            torch.mm(xm, w.t(), out=om)
        else:
            torch.addmm(bias, xm, w.t(), out=om)
        return out
    cg, kg = c // g, k // g
    for gi in range(g):
        xg = xm[:, gi * cg : (gi + 1) * cg]
        wg = w[gi * kg : (gi + 1) * kg]
        res = xg @ wg.t() if bias is None else torch.addmm(bias[gi * kg : (gi + 1) * kg], xg, wg.t())
        om[:, gi * kg : (gi + 1) * kg].copy_(res)
    return out


def _forward(
    x: Tensor, w: Tensor, bias: Tensor | None, groups: int, activation: str | None, channels_last: bool
) -> Tensor:
    y = _forward_nhwc(x, w, bias, groups) if channels_last else _forward_nchw(x, w, bias, groups)
    return _activate_(y, activation)


def _grad_input(grad: Tensor, w: Tensor, groups: int, channels_last: bool) -> Tensor:
    """W^T applied at every pixel: a 1x1 convolution with the transposed filters."""
    k, cg = w.shape
    kg = k // groups
    wt = w.reshape(groups, kg, cg).transpose(1, 2).reshape(groups * cg, kg)
    return _forward(grad, wt, None, groups, None, channels_last)


def _grad_weight(grad: Tensor, x: Tensor, groups: int, channels_last: bool) -> Tensor:
    n, k, h, wd = grad.shape
    c = x.shape[1]
    g = groups
    if channels_last:
        gm = grad.permute(0, 2, 3, 1).reshape(n * h * wd, k)
        xm = x.permute(0, 2, 3, 1).reshape(n * h * wd, c)
        if g == 1:
            return gm.t() @ xm
        parts = [
            gm[:, i * (k // g) : (i + 1) * (k // g)].t() @ xm[:, i * (c // g) : (i + 1) * (c // g)]
            for i in range(g)
        ]
        return torch.cat(parts)
    gm = grad.contiguous().reshape(n, g, k // g, h * wd)
    xm = x.contiguous().reshape(n, g, c // g, h * wd)
    gw = torch.zeros((g, k // g, c // g), dtype=x.dtype, device=x.device)
    for i in range(n):
        # accumulate in place across the batch: no N x K x C temporary
        gw.baddbmm_(gm[i], xm[i].transpose(1, 2))
    return gw.reshape(k, c // g)


class _Conv1x1Function(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        w: Tensor,
        bias: Tensor | None,
        stride: tuple[int, int],
        groups: int,
        activation: str | None,
    ) -> Tensor:
        channels_last = _is_channels_last(x)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        xs = x if stride == (1, 1) else x[:, :, :: stride[0], :: stride[1]]
        if not xs.is_contiguous(memory_format=fmt):
            # a strided view (or an unusual input) is packed once, in the input's own layout
            xs = xs.contiguous(memory_format=fmt)
        y = _forward(xs, w, bias, groups, activation, channels_last)
        ctx.save_for_backward(xs, w, y if activation is not None else None)
        ctx.conf = (tuple(x.shape), stride, groups, activation, bias is not None, channels_last)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        xs, w, y = ctx.saved_tensors
        in_shape, stride, groups, activation, has_bias, channels_last = ctx.conf
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        grad = _activation_grad(grad, y, activation).contiguous(memory_format=fmt)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gxs = _grad_input(grad, w, groups, channels_last)
            if stride == (1, 1):
                gx = gxs
            else:
                gx = grad.new_zeros(in_shape)
                if channels_last:
                    gx = gx.contiguous(memory_format=torch.channels_last)
                gx[:, :, :: stride[0], :: stride[1]] = gxs
        if ctx.needs_input_grad[1]:
            gw = _grad_weight(grad, xs, groups, channels_last)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None


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
    y = _Conv1x1Function.apply(x, w, bias, stride_pair, groups, activation)
    return y
