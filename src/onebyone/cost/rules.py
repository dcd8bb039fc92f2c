"""The counting rules, one per kind of arithmetic: convolutions (all kinds, transposed too),
linear layers, pools (adaptive windows counted exactly), norms and per-element ops.

Modules (:mod:`.modules`) and torch functions (:mod:`.functions`) both count through these."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .rows import _Count


def _ints(value: Any, n: int) -> list[int] | None:
    """An int or a sequence of ints as a list of n ints (None passes through)."""
    if value is None:
        return None
    if isinstance(value, int):
        return [value] * n
    if isinstance(value, str):  # padding="same"/"valid": keep the text out of the numbers
        return None
    return [int(v) for v in value]


def _conv_kind(kernel: Sequence[int], groups: int, in_channels: int) -> str:
    # the kernel decides first: a grouped 1x1 (ShuffleNet) is still a pointwise convolution
    if all(k == 1 for k in kernel):
        return "conv1x1"
    if groups > 1 and groups == in_channels:
        return "depthwise"
    return "grouped" if groups > 1 else "conv"


def _count_conv(weight: Tensor, groups: int, x: Tensor, y: Tensor, has_bias: bool, transposed: bool,
                stride: Any, padding: Any, dilation: Any) -> _Count:
    kernel = list(weight.shape[2:])
    area = math.prod(kernel)
    nd = len(kernel)
    if transposed:
        # weight is C x K/groups x k...: every input element is spread over K/groups x area outputs
        in_channels = weight.shape[0]
        macs = x.numel() * weight.shape[1] * area
        kind = "conv_transpose"
        how = f"input elements {x.numel()} x K/groups {weight.shape[1]} x kernel {area}"
    else:
        # weight is K x C/groups x k...: every output element is a dot product of C/groups x area
        in_channels = weight.shape[1] * groups
        macs = y.numel() * weight.shape[1] * area
        kind = _conv_kind(kernel, groups, in_channels)
        how = f"output elements {y.numel()} x C/groups {weight.shape[1]} x kernel {area}"
    return _Count(
        kind=kind, macs=macs, bias_adds=y.numel() if has_bias else 0, rule=f"MACs = {how}",
        kernel=kernel, stride=_ints(stride, nd), padding=_ints(padding, nd), dilation=_ints(dilation, nd),
        groups=groups,
    )


def _count_linear(x: Tensor, y: Tensor, in_features: int, has_bias: bool) -> _Count:
    return _Count(
        kind="linear", macs=y.numel() * in_features, bias_adds=y.numel() if has_bias else 0,
        rule=f"MACs = output elements {y.numel()} x in_features {in_features}",
    )


def _adaptive_window_total(in_size: int, out_size: int) -> int:
    """Sum of window lengths of an adaptive pool along one dim, as PyTorch cuts the windows."""
    return sum(
        -((-(i + 1) * in_size) // out_size) - (i * in_size) // out_size for i in range(out_size)
    )


def _count_pool(x: Tensor, y: Tensor, kernel: Any, stride: Any, padding: Any, nd: int,
                adaptive: bool, what: str) -> _Count:
    if adaptive:
        out_sp = list(y.shape[-nd:])
        in_sp = list(x.shape[-nd:])
        lead = y.numel() // max(1, math.prod(out_sp))
        windows = [_adaptive_window_total(i, o) for i, o in zip(in_sp, out_sp, strict=True)]
        window_elems = lead * math.prod(windows)
        k = [-(-i // o) for i, o in zip(in_sp, out_sp, strict=True)]  # the largest window, for display
        return _Count(kind="pool", ops=window_elems, kernel=k,
                      rule=f"{what}: 1 op per window element, windows summed exactly ({window_elems})")
    k = _ints(kernel, nd) or [1] * nd
    area = math.prod(k)
    return _Count(kind="pool", ops=y.numel() * area, kernel=k, stride=_ints(stride, nd) or k,
                  padding=_ints(padding, nd),
                  rule=f"{what}: output elements {y.numel()} x window {area} ops")


def _count_norm(norm: str, y: Tensor, affine: bool, size: int = 0) -> _Count:
    n = y.numel()
    if norm == "batch":
        # at inference the statistics are constants: (x - mean) / std * gamma + beta folds to x * a + b
        per, how = 2, "2 ops per element (scale and shift; inference statistics folded in)"
    elif norm == "rms":
        per = 3 + (1 if affine else 0)
        how = f"{per} ops per element (square and sum, normalise" + (", scale)" if affine else ")")
    elif norm == "lrn":
        per = size + 5
        how = f"{per} ops per element (square, sum of {size} neighbours, scale, power, divide)"
    else:
        # statistics over each sample: mean (1 add), variance (subtract, square, add), normalise (2)
        per = 6 + (2 if affine else 0)
        how = f"{per} ops per element (mean 1, variance 3, normalise 2" + (", affine 2)" if affine else ")")
    return _Count(kind="norm", ops=n * per, rule=f"{norm} norm: {how}")


def _per_element(kind: str, y: Tensor, per: int, what: str) -> _Count:
    plural = "s" if per != 1 else ""
    return _Count(kind=kind, ops=y.numel() * per, rule=f"{what}: {per} op{plural} per element")
