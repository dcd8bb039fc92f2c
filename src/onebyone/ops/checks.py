"""The arguments of conv1x1, checked: each bad value gets a TypeError or ValueError that names it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

ACTIVATIONS = ("relu", "relu6")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
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
    """Validate every argument; return x, the weight as K x C/groups (detached: the autograd function
    takes the caller's weight as its input, so no view of it joins the graph), bias, stride, groups,
    activation."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if (
        x.dtype not in _FLOAT_DTYPES
        or weight.dtype not in _FLOAT_DTYPES
        or (bias is not None and bias.dtype not in _FLOAT_DTYPES)
    ):
        for name, t in (("x", x), ("weight", weight), ("bias", bias)):
            if t is not None and t.dtype not in _FLOAT_DTYPES:
                raise TypeError(
                    f"{name} has dtype {t.dtype}; expected a floating dtype "
                    "(torch.float32, torch.float64, torch.bfloat16 or torch.float16)"
                )
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        got = f"x {x.dtype}, weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else "")
        raise TypeError(f"x, weight and bias must share one dtype; got {got}")
    if not (x.is_cpu and weight.is_cpu and (bias is None or bias.is_cpu)) and (
        weight.device != x.device or (bias is not None and bias.device != x.device)
    ):
        got = f"x on {x.device}, weight on {weight.device}" + (
            f", bias on {bias.device}" if bias is not None else ""
        )
        raise ValueError(f"x, weight and bias must be on one device; got {got}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N x C x H x W), got {x.dim()}-D with shape {tuple(x.shape)}")
    if weight.dim() == 4:
        if weight.shape[2] != 1 or weight.shape[3] != 1:
            raise ValueError(
                f"weight must hold 1x1 kernels (K x C/groups x 1 x 1), got kernel size "
                f"{tuple(weight.shape[2:])} in weight of shape {tuple(weight.shape)}"
            )
        weight = weight.detach().flatten(1)
    elif weight.dim() == 2:
        weight = weight.detach()
    else:
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
    pair = (stride, stride) if type(stride) is int and stride >= 1 else _pair(stride, "stride")
    return x, weight, bias, pair, groups, activation


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

