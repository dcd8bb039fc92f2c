"""What a model costs, layer by layer: parameters, multiply-adds, bytes, intensity and time.

:func:`cost` runs one forward pass of any ``nn.Module`` on a random input of the given
size and writes down, for every layer call, what it is (a 1x1 convolution, a depthwise
one, a pool, a norm, ...), the shapes it saw, its parameters, the multiply-adds (MACs)
it performed, the bytes it read and wrote, its arithmetic intensity, and the least
time it can take on this machine by the roofline of :mod:`onebyone.machine`
(optionally, the time it did take: ``measure=True``).

Two sources feed the report:

* forward hooks on every module. A module of a known type (convolutions, ``Conv1x1``,
  linear, pools, norms, activations, dropout, flatten, identity) is one row, counted
  by its own rule; what runs inside it is not looked at again.
* a ``TorchFunctionMode`` that sees every torch function called *outside* such a
  module: the ``torch.cat`` and ``x + y`` in a container's ``forward``, an ``F.relu``
  called directly, a ``matmul``, or the insides of a custom module of unknown type.
  Each becomes a row named ``<module>.<function>``. Views (``view``, ``flatten``,
  ``permute``, indexing), tensor creation and calls that return no tensor cost nothing
  and are not listed; a function that returns a tensor and has no counting rule is
  listed under "not counted", never counted as zero in silence.

Conventions, printed with every report:

* 1 MAC (multiply-add) counts once and equals 2 FLOPs. MACs are the products of
  weights and activations in convolutions, linear layers and matrix products, exactly
  what ``torch.utils.flop_counter`` counts (it reports 2 FLOPs per MAC).
* Bias (the additive ``bias`` of convolutions and linear layers) is counted by a
  switch: when on, its parameters are in ``params`` and each bias add is 1 FLOP per
  output element (an add, not a MAC); when off, both are left out.
* Other arithmetic (pools, norms, activations, element-wise ops, reductions) is in
  ``flops`` at a per-element rate that each row states in its ``rule``.
* The model runs in eval mode without autograd: the cost of inference. Bytes are
  what a layer must move at least once: its weights and buffers, its inputs and its
  outputs. Arithmetic intensity is FLOPs per byte moved. GB, MB are 10^9, 10^6 bytes.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ._files import atomic_write
from .layers import Conv1x1
from .machine import Peaks, peaks, roofline_seconds

__all__ = [
    "KINDS",
    "BottleneckCost",
    "CostReport",
    "LayerCost",
    "bottleneck_cost",
    "cost",
    "load_model",
]

#: Every kind a row can have, with how its arithmetic is counted.
KINDS: dict[str, str] = {
    "conv1x1": "pointwise convolution (1x1 kernel, any groups): MACs = output elements x C/groups",
    "conv": "convolution: MACs = output elements x C/groups x kernel area (padding positions included)",
    "depthwise": "depthwise convolution (groups = C): MACs = output elements x kernel area",
    "grouped": "grouped convolution: MACs = output elements x C/groups x kernel area",
    "conv_transpose": "transposed convolution: MACs = input elements x K/groups x kernel area",
    "linear": "linear layer on any number of leading dims: MACs = output elements x in_features",
    "matmul": "matrix product: MACs = output elements x the contracted length",
    "pool": "pooling: 1 op per window element per output element (adaptive windows counted exactly)",
    "norm": "normalisation: ops per element as the row's rule says",
    "activation": "activation: 1 op per element (softmax and log-softmax: 3)",
    "dropout": "dropout: identity at inference, 0 ops",
    "elementwise": "element-wise arithmetic: 1 op per output element",
    "reduction": "reduction (sum, mean, max...): 1 op per input element",
    "concat": "copy (cat, stack, pad, clone...): 0 ops, bytes only",
    "reshape": "flatten / identity: 0 ops, bytes only",
}

_CONVENTION = "1 MAC (multiply-add) = 2 FLOPs; MACs count weight x activation products only"


# ---------------------------------------------------------------------------- rows


@dataclass
class LayerCost:
    """One layer call. Counts are for the whole batch; ``rule`` says how they were made."""

    name: str  # module path, "#k" for its k-th call; "<module>.<function>" for a function
    kind: str  # one of KINDS
    type: str  # module class or function name
    input_shapes: list[list[int]]
    output_shape: list[int]
    kernel: list[int] | None = None
    stride: list[int] | None = None
    padding: list[int] | None = None
    dilation: list[int] | None = None
    groups: int | None = None
    params: int = 0  # parameters this layer uses (bias per the switch)
    unique_params: int = 0  # of those, the ones no earlier row used (shared modules count once)
    macs: int = 0
    flops: int = 0  # 2 x MACs + other ops (+ bias adds when counted)
    weight_bytes: int = 0  # parameters and buffers read
    input_bytes: int = 0
    output_bytes: int = 0  # activation memory written
    intensity: float | None = None  # FLOPs per byte moved (weights + input + output)
    est_seconds: float = 0.0  # roofline lower bound
    measured_seconds: float | None = None  # median over repeats, with measure=True
    rule: str = ""

    @property
    def bytes_moved(self) -> int:
        return self.weight_bytes + self.input_bytes + self.output_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Count:
    """What a counting rule finds; the tracer adds shapes, bytes and parameters."""

    kind: str
    macs: int = 0
    ops: int = 0  # arithmetic other than MACs, in FLOPs
    bias_adds: int = 0  # 1 FLOP per output element when a bias is present
    rule: str = ""
    kernel: Sequence[int] | None = None
    stride: Sequence[int] | None = None
    padding: Sequence[int] | None = None
    dilation: Sequence[int] | None = None
    groups: int | None = None


# ------------------------------------------------------------------ counting rules


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


_POOL_TYPES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)
_ADAPTIVE_POOL_TYPES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.Hardshrink, nn.Softshrink,
)
_SOFTMAX_TYPES: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)
_DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)
_RESHAPE_TYPES: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Unflatten, nn.Identity)
_BATCH_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
)
_STAT_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)
_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T_TYPES: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

#: Module types counted as one row by their own rule; everything else is looked inside.
_KNOWN_MODULES: tuple[type[nn.Module], ...] = (
    Conv1x1, *_CONV_TYPES, *_CONV_T_TYPES, nn.Linear, *_POOL_TYPES, *_ADAPTIVE_POOL_TYPES,
    *_ACTIVATION_TYPES, *_SOFTMAX_TYPES, *_DROPOUT_TYPES, *_RESHAPE_TYPES, *_BATCH_NORM_TYPES,
    *_STAT_NORM_TYPES, nn.LocalResponseNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _count_module(m: nn.Module, x: Tensor, y: Tensor) -> _Count:
    """The rule for one call of a known module type, from its first input and its output."""
    if isinstance(m, Conv1x1):
        c = _count_conv(m.weight, m.groups, x, y, m.bias is not None, False, m.stride, 0, 1)
        if m.activation is not None:
            # the fused activation runs in place on the output: 1 op per element
            c.ops += y.numel()
            c.rule += f"; fused {m.activation}: 1 op per output element"
        return c
    if isinstance(m, _CONV_TYPES + _CONV_T_TYPES):
        conv: Any = m
        return _count_conv(conv.weight, conv.groups, x, y, conv.bias is not None,
                           isinstance(m, _CONV_T_TYPES), conv.stride, conv.padding, conv.dilation)
    if isinstance(m, nn.Linear):
        return _count_linear(x, y, m.in_features, m.bias is not None)
    if isinstance(m, _POOL_TYPES):
        pool: Any = m
        nd = int(type(m).__name__[-2])
        what = "max pool" if "Max" in type(m).__name__ else "average pool"
        return _count_pool(x, y, pool.kernel_size, pool.stride, pool.padding, nd, False, what)
    if isinstance(m, _ADAPTIVE_POOL_TYPES):
        nd = int(type(m).__name__[-2])
        what = "adaptive max pool" if "Max" in type(m).__name__ else "adaptive average pool"
        return _count_pool(x, y, None, None, None, nd, True, what)
    if isinstance(m, _SOFTMAX_TYPES):
        return _per_element("activation", y, 3, f"{type(m).__name__} (exp, sum, divide)")
    if isinstance(m, _ACTIVATION_TYPES):
        return _per_element("activation", y, 1, type(m).__name__)
    if isinstance(m, _DROPOUT_TYPES):
        return _Count(kind="dropout", rule="identity at inference: 0 ops")
    if isinstance(m, _RESHAPE_TYPES):
        return _Count(kind="reshape", rule=f"{type(m).__name__}: 0 ops")
    if isinstance(m, _BATCH_NORM_TYPES):
        return _count_norm("batch", y, True)
    if isinstance(m, _STAT_NORM_TYPES):
        affine = bool(getattr(m, "elementwise_affine", getattr(m, "affine", False)))
        norm = {"LayerNorm": "layer", "GroupNorm": "group"}.get(type(m).__name__, "instance")
        return _count_norm(norm, y, affine)
    if isinstance(m, nn.LocalResponseNorm):
        return _count_norm("lrn", y, False, size=m.size)
    if hasattr(nn, "RMSNorm") and isinstance(m, nn.RMSNorm):
        return _count_norm("rms", y, m.weight is not None)
    raise AssertionError(f"no rule for {type(m).__name__}")  # _KNOWN_MODULES and this list agree


# functions seen outside known modules, by base name (in-place "_" and dunders stripped)
_VIEW_FUNCS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze",
    "permute", "transpose", "t", "expand", "expand_as", "narrow", "getitem", "chunk", "split",
    "split_with_sizes", "tensor_split", "unbind", "select", "detach", "movedim", "moveaxis", "swapaxes",
    "swapdims", "as_strided", "requires_grad", "unfold", "adjoint", "mT", "T", "H"
})
# these return their input when there is nothing to do, and a copy otherwise
_MAYBE_COPY_FUNCS = frozenset({"contiguous", "to", "type", "float", "double", "half", "bfloat16"})
_CREATION_FUNCS = frozenset({
    "zeros", "ones", "empty", "full", "randn", "rand", "randint", "arange", "linspace", "logspace",
    "tensor", "as_tensor", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
    "randn_like", "eye", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
    "empty_strided", "fill", "zero"
})
_COPY_FUNCS = frozenset({
    "cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "pad", "clone", "copy",
    "repeat", "tile", "roll", "flip", "index_select", "gather", "masked_select", "repeat_interleave"
})
_ELEMENTWISE_FUNCS = frozenset({
    "add", "sub", "rsub", "mul", "div", "truediv", "rtruediv", "floordiv", "rfloordiv", "neg", "abs",
    "clamp", "clip", "clamp_min", "clamp_max", "sqrt", "rsqrt", "exp", "exp2", "log", "log2", "log10",
    "log1p", "expm1", "pow", "rpow", "reciprocal", "maximum", "minimum", "where", "sign", "square",
    "addcmul", "addcdiv", "lerp", "masked_fill", "fmod", "remainder", "mod", "rmod", "eq", "ne", "lt",
    "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "and", "or", "xor", "invert",
    "bitwise_and", "bitwise_or", "sin", "cos", "tan", "erf",
    "erfc", "floor", "ceil", "round", "trunc", "frac"
})
_REDUCTION_FUNCS = frozenset({
    "sum", "mean", "amax", "amin", "max", "min", "prod", "var", "std", "norm", "logsumexp", "argmax",
    "argmin", "all", "any", "nansum", "nanmean", "cumsum", "cumprod"
})
_ACTIVATION_FUNCS = frozenset({
    "relu", "relu6", "leaky_relu", "hardtanh", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid",
    "tanh", "hardswish", "hardsigmoid", "softplus", "softsign", "logsigmoid", "tanhshrink", "threshold",
    "prelu", "rrelu", "hardshrink", "softshrink"
})
_SOFTMAX_FUNCS = frozenset({"softmax", "log_softmax", "softmin"})
_DROPOUT_FUNCS = frozenset({
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"
})
_MATMUL_FUNCS = frozenset({
    "matmul", "rmatmul", "mm", "bmm", "addmm", "baddbmm", "addmv", "mv", "dot", "inner"
})
_CONV_FUNCS = {"conv1d": 1, "conv2d": 2, "conv3d": 3}
_CONV_T_FUNCS = {"conv_transpose1d": 1, "conv_transpose2d": 2, "conv_transpose3d": 3}
_POOL_FUNCS = {
    f"{kind}_pool{d}d": d for kind in ("max", "avg") for d in (1, 2, 3)
} | {f"max_pool{d}d_with_indices": d for d in (1, 2, 3)}
_ADAPTIVE_POOL_FUNCS = {
    f"adaptive_{kind}_pool{d}d": d for kind in ("max", "avg") for d in (1, 2, 3)
} | {f"adaptive_max_pool{d}d_with_indices": d for d in (1, 2, 3)}
_NORM_FUNCS = {"batch_norm": "batch", "layer_norm": "layer", "group_norm": "group",
               "instance_norm": "instance", "local_response_norm": "lrn", "rms_norm": "rms"}


def _base_name(func: Callable[..., Any]) -> str:
    """``__iadd__`` -> ``add``, ``relu_`` -> ``relu``, ``__rmatmul__`` -> ``rmatmul``."""
    if isinstance(func, torch._ops.OpOverload):
        return str(func.name())  # onebyone::conv1x1, the registered op
    name = getattr(func, "__name__", None) or type(func).__name__
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        # in-place (__iadd__) and reflected (__radd__) forms count as the plain op;
        # __rmatmul__ keeps its name: its left factor is the second argument
        if name[:1] in ("i", "r") and name[1:] in _ELEMENTWISE_FUNCS | {"matmul"} and name != "rmatmul":
            name = name[1:]
    if name.endswith("_") and not name.startswith("_"):
        name = name[:-1]
    return name


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, key: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(key, default)


def _count_function(name: str, args: Sequence[Any], kwargs: dict[str, Any], inputs: list[Tensor],
                    y: Tensor) -> _Count | None:
    """The rule for a torch function by its base name; None when there is none."""
    x = inputs[0] if inputs else y
    if name == "onebyone::conv1x1":  # (x, weight, bias, stride, groups, activation)
        weight = args[1] if args[1].dim() == 4 else args[1][:, :, None, None]
        stride, groups = _arg(args, kwargs, 3, "stride", 1), _arg(args, kwargs, 4, "groups", 1)
        return _count_conv(weight, int(groups), args[0], y, _arg(args, kwargs, 2, "bias") is not None,
                           False, stride, 0, 1)
    if name in _CONV_FUNCS or name in _CONV_T_FUNCS:
        transposed = name in _CONV_T_FUNCS
        weight = _arg(args, kwargs, 1, "weight")
        bias = _arg(args, kwargs, 2, "bias")
        stride = _arg(args, kwargs, 3, "stride", 1)
        padding = _arg(args, kwargs, 4, "padding", 0)
        # convNd(input, weight, bias, stride, padding, dilation, groups);
        # conv_transposeNd(input, weight, bias, stride, padding, output_padding, groups, dilation)
        if transposed:
            groups, dilation = _arg(args, kwargs, 6, "groups", 1), _arg(args, kwargs, 7, "dilation", 1)
        else:
            groups, dilation = _arg(args, kwargs, 6, "groups", 1), _arg(args, kwargs, 5, "dilation", 1)
        return _count_conv(weight, int(groups), _arg(args, kwargs, 0, "input"), y, bias is not None,
                           transposed, stride, padding, dilation)
    if name == "linear":
        weight = _arg(args, kwargs, 1, "weight")
        return _count_linear(x, y, weight.shape[-1], _arg(args, kwargs, 2, "bias") is not None)
    if name in _MATMUL_FUNCS:
        # the contracted length is the last dim of the left factor (addmm/baddbmm: the 2nd argument)
        left = args[1] if name in ("addmm", "baddbmm", "addmv") else args[0]
        if name == "rmatmul":
            left = args[1]
        k = left.shape[-1] if isinstance(left, Tensor) and left.dim() > 0 else 1
        return _Count(kind="matmul", macs=y.numel() * k,
                      rule=f"MACs = output elements {y.numel()} x contracted length {k}")
    if name in _POOL_FUNCS:
        what = "max pool" if name.startswith("max") else "average pool"
        kernel = _arg(args, kwargs, 1, "kernel_size")
        stride = _arg(args, kwargs, 2, "stride") or kernel
        return _count_pool(x, y, kernel, stride, _arg(args, kwargs, 3, "padding", 0), _POOL_FUNCS[name],
                           False, what)
    if name in _ADAPTIVE_POOL_FUNCS:
        what = "adaptive max pool" if "max" in name else "adaptive average pool"
        return _count_pool(x, y, None, None, None, _ADAPTIVE_POOL_FUNCS[name], True, what)
    if name in _NORM_FUNCS:
        norm = _NORM_FUNCS[name]
        if norm == "lrn":
            return _count_norm(norm, y, False, size=int(_arg(args, kwargs, 1, "size", 1)))
        weight_index = {"batch": 3, "layer": 2, "group": 2, "instance": 3, "rms": 2}[norm]
        return _count_norm(norm, y, _arg(args, kwargs, weight_index, "weight") is not None)
    if name in _SOFTMAX_FUNCS:
        return _per_element("activation", y, 3, f"{name} (exp, sum, divide)")
    if name in _ACTIVATION_FUNCS:
        return _per_element("activation", y, 1, name)
    if name in _DROPOUT_FUNCS:
        return _Count(kind="dropout", rule="identity at inference: 0 ops")
    if name in _COPY_FUNCS or name in _MAYBE_COPY_FUNCS:
        return _Count(kind="concat", rule=f"{name}: a copy, 0 ops")
    if name in _ELEMENTWISE_FUNCS or name in _REDUCTION_FUNCS:
        biggest = max([t.numel() for t in inputs] + [y.numel()])
        kind = "reduction" if y.numel() < biggest else "elementwise"
        return _Count(kind=kind, ops=biggest, rule=f"{name}: 1 op per element ({biggest})")
    return None


# -------------------------------------------------------------------------- tracer


def _tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a (nested) tuple/list/dict, in order."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class _Tracer(TorchFunctionMode):
    """Forward hooks on every module plus a function mode for what runs outside known modules.

    In "trace" mode each layer call becomes a LayerCost; in "time" mode the same calls
    are timed and the seconds appended to ``times[name]``.
    """

    def __init__(self, model: nn.Module, count_bias: bool, device: torch.device) -> None:
        super().__init__()
        self.count_bias = count_bias
        self.device = device
        self.names: dict[int, str] = {}
        self.param_names: dict[int, str] = {}
        self.weight_ids: set[int] = set()  # parameters and buffers: weights, not activations
        for name, p in model.named_parameters():
            self.param_names[id(p)] = name
            self.weight_ids.add(id(p))
        for _, b in model.named_buffers():
            self.weight_ids.add(id(b))
        self.mode = "trace"
        self.rows: list[LayerCost] = []
        self.seen_params: set[int] = set()
        self.excluded_bias: set[int] = set()
        self.not_counted: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.calls: Counter[str] = Counter()
        self.owners: list[str] = []  # module paths being run, innermost last
        self.known_depth = 0  # > 0 while inside a known module: its insides are not looked at
        self.starts: list[float] = []
        self.busy = False  # our own tensor calls inside hooks are not the model's
        # views of weights (w.t(), w.view(...)) made during the pass, kept alive so ids stay unique
        self.aliases: dict[int, tuple[Tensor, Tensor]] = {}
        self.handles: list[Any] = []
        for name, m in model.named_modules():
            self.names[id(m)] = name
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post, with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def start_pass(self, mode: str) -> None:
        self.mode = mode
        self.calls.clear()
        self.owners.clear()
        self.known_depth = 0
        self.starts.clear()
        self.aliases.clear()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _call_name(self, base: str) -> str:
        self.calls[base] += 1
        k = self.calls[base]
        return base if k == 1 else f"{base}#{k}"

    # ---- module hooks

    def _pre(self, m: nn.Module, args: Any, kwargs: Any) -> None:
        self.busy = True
        try:
            self.owners.append(self.names.get(id(m), type(m).__name__))
            if isinstance(m, _KNOWN_MODULES):
                self.known_depth += 1
                if self.known_depth == 1 and self.mode == "time":
                    self._sync()
                    self.starts.append(time.perf_counter())
        finally:
            self.busy = False

    def _post(self, m: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        self.busy = True
        try:
            owner = self.owners.pop()
            if not isinstance(m, _KNOWN_MODULES):
                return
            self.known_depth -= 1
            if self.known_depth > 0:
                return  # a known module inside a known module: the outer one is the row
            name = self._call_name(owner or type(m).__name__)
            if self.mode == "time":
                self._sync()
                self.times.setdefault(name, []).append(time.perf_counter() - self.starts.pop())
                return
            inputs = list(_tensors((args, kwargs)))
            outputs = list(_tensors(output))
            if not inputs or not outputs:
                self.not_counted[f"{name} ({type(m).__name__} without tensor input or output)"] += 1
                return
            count = _count_module(m, inputs[0], outputs[0])
            weights = [(n, t) for n, t in m.named_parameters()] + [(n, t) for n, t in m.named_buffers()]
            is_conv_or_linear = count.kind in ("conv1x1", "conv", "depthwise", "grouped", "conv_transpose",
                                               "linear")
            bias = getattr(m, "bias", None) if is_conv_or_linear else None
            self._record(name, type(m).__name__, count, inputs, [t for _, t in weights], outputs, bias)
        finally:
            self.busy = False

    # ---- functions outside known modules

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if self.busy or self.known_depth > 0:
            return func(*args, **kwargs)
        base = _base_name(func)
        if base in _CREATION_FUNCS:
            return func(*args, **kwargs)
        if base in _VIEW_FUNCS:
            out = func(*args, **kwargs)
            weight = next((w for w in map(self._weight, _tensors((args, kwargs))) if w is not None), None)
            if weight is not None:
                for t in _tensors(out):
                    self.aliases[id(t)] = (t, weight)
            return out
        timing = self.mode == "time"
        if timing:
            self._sync()
            t0 = time.perf_counter()
        out = func(*args, **kwargs)
        if timing:
            self._sync()
            seconds = time.perf_counter() - t0
        outputs = list(_tensors(out))
        if base == "numpy" and not timing:
            # the data leaves PyTorch (onebyone.conv1x1 may multiply with NumPy's BLAS): what
            # NumPy computes is invisible here, so say so rather than count it as nothing
            owner = self.owners[-1] if self.owners else ""
            self.not_counted[f"{owner + '.' if owner else ''}numpy (work done in NumPy)"] += 1
        if not outputs:
            return out  # metadata (size, dim, shape, item...): no tensor, no work
        if base in _MAYBE_COPY_FUNCS and args and outputs[0] is args[0]:
            return out  # already contiguous / of that dtype: nothing was done
        owner = self.owners[-1] if self.owners else ""
        name = self._call_name(f"{owner}.{base}" if owner else base)
        if timing:
            self.times.setdefault(name, []).append(seconds)
            return out
        inputs: list[Tensor] = []
        weights: list[Tensor] = []
        for t in _tensors((args, kwargs)):
            w = self._weight(t)
            if w is None:
                inputs.append(t)
            elif all(w is not seen for seen in weights):
                weights.append(w)
        count = _count_function(base, args, kwargs, inputs, outputs[0])
        if count is None:
            self.not_counted[name] += 1
            return out
        bias = None
        if count.kind in ("conv1x1", "conv", "depthwise", "grouped", "conv_transpose", "linear"):
            bias = _arg(args, kwargs, 2, "bias")
        self._record(name, base, count, inputs, weights, outputs, bias)
        return out

    def _weight(self, t: Tensor) -> Tensor | None:
        """The parameter or buffer ``t`` is, or is a view of; None for an activation."""
        if id(t) in self.weight_ids:
            return t
        alias = self.aliases.get(id(t))
        return alias[1] if alias is not None and alias[0] is t else None

    # ---- one row

    def _record(self, name: str, type_name: str, count: _Count, inputs: list[Tensor], weights: list[Tensor],
                outputs: list[Tensor], bias: Tensor | None) -> None:
        params = unique = 0
        for t in weights:
            if not isinstance(t, nn.Parameter):
                continue
            if t is bias and not self.count_bias:
                self.excluded_bias.add(id(t))
                continue
            params += t.numel()
            if id(t) not in self.seen_params:
                self.seen_params.add(id(t))
                unique += t.numel()
        ops = count.ops + (count.bias_adds if self.count_bias else 0)
        rule = count.rule
        if count.bias_adds:
            rule += "; bias adds: " + ("1 FLOP per output element" if self.count_bias else "not counted")
        row = LayerCost(
            name=name, kind=count.kind, type=type_name,
            input_shapes=[list(t.shape) for t in inputs], output_shape=list(outputs[0].shape),
            kernel=list(count.kernel) if count.kernel is not None else None,
            stride=list(count.stride) if count.stride is not None else None,
            padding=list(count.padding) if count.padding is not None else None,
            dilation=list(count.dilation) if count.dilation is not None else None,
            groups=count.groups, params=params, unique_params=unique, macs=count.macs,
            flops=2 * count.macs + ops, weight_bytes=sum(_nbytes(t) for t in weights),
            input_bytes=sum(_nbytes(t) for t in inputs), output_bytes=sum(_nbytes(t) for t in outputs),
            rule=rule,
        )
        self.rows.append(row)


# -------------------------------------------------------------------------- report


def _si(value: float, unit: str = "") -> str:
    """3 significant digits with a decimal prefix: 1234567 -> '1.23 M'."""
    if value == 0:
        return f"0 {unit}".rstrip()
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"


def _dims(shape: Sequence[int] | None) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"



@dataclass
class CostReport:
    """The cost of one forward pass, per layer call, with totals and a breakdown by kind.

    Attributes:
        model: the model's class name (or the name it was loaded by).
        input_shape: the input, batch first.
        layers: one LayerCost per layer call, in the order they ran.
        not_counted: functions that returned a tensor and have no counting rule, with how
            many times each ran. They are not in any total.
        unattributed_params: parameters of the model that no counted layer used, by name.
        model_params: every distinct parameter of the model.
        forward_seconds: median time of a whole forward pass (``measure=True``).
    """

    model: str
    input_shape: list[int]
    dtype: str
    device: str
    count_bias: bool
    peaks: Peaks
    layers: list[LayerCost]
    not_counted: dict[str, int] = field(default_factory=dict)
    unattributed_params: dict[str, int] = field(default_factory=dict)
    excluded_bias_params: int = 0
    model_params: int = 0
    repeats: int | None = None
    forward_seconds: float | None = None

    # ---- totals

    @property
    def params(self) -> int:
        """Distinct parameters used by counted layers (bias per the switch)."""
        return sum(r.unique_params for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.layers)

    @property
    def activation_bytes(self) -> int:
        """Bytes of all layer outputs: the activation memory written in one forward pass."""
        return sum(r.output_bytes for r in self.layers)

    @property
    def est_seconds(self) -> float:
        return sum(r.est_seconds for r in self.layers)

    @property
    def measured_seconds(self) -> float | None:
        """Sum of the per-layer medians (``measure=True``)."""
        if any(r.measured_seconds is None for r in self.layers) or not self.layers:
            return None
        return sum(r.measured_seconds or 0.0 for r in self.layers)

    def convention(self) -> str:
        """The counting convention in one paragraph, as printed with every report."""
        bias = (
            "bias counted: bias parameters in params, each bias add 1 FLOP per output element (not a MAC)"
            if self.count_bias
            else "bias not counted: bias parameters and bias adds left out"
        )
        return (
            f"{_CONVENTION}; {bias}; pools, norms, activations and element-wise ops are in FLOPs at the "
            "per-element rate each row's rule states; inference (eval mode, no autograd); "
            "bytes = weights + inputs + outputs of each layer; intensity = FLOPs per byte"
        )

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per kind: layer calls, params, MACs, FLOPs, estimated time, and their shares of the totals."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.layers:
            k = out.setdefault(r.kind, {"layers": 0, "params": 0, "macs": 0, "flops": 0, "est_seconds": 0.0,
                                        "measured_seconds": None})
            k["layers"] += 1
            k["params"] += r.unique_params
            k["macs"] += r.macs
            k["flops"] += r.flops
            k["est_seconds"] += r.est_seconds
            if r.measured_seconds is not None:
                k["measured_seconds"] = (k["measured_seconds"] or 0.0) + r.measured_seconds
        tp, tm, tf, te = self.params, self.macs, self.flops, self.est_seconds
        for k in out.values():
            k["params_share"] = k["params"] / tp if tp else 0.0
            k["macs_share"] = k["macs"] / tm if tm else 0.0
            k["flops_share"] = k["flops"] / tf if tf else 0.0
            k["est_share"] = k["est_seconds"] / te if te else 0.0
        return dict(sorted(out.items(), key=lambda kv: (-kv[1]["macs"], -kv[1]["flops"], kv[0])))

    def group(self, depth: int = 1) -> dict[str, dict[str, Any]]:
        """Totals per block: layers grouped by the first ``depth`` parts of their dotted name."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        out: dict[str, dict[str, Any]] = {}
        for r in self.layers:
            key = ".".join(r.name.split("#")[0].split(".")[:depth])
            g = out.setdefault(key, {"layers": 0, "params": 0, "macs": 0, "flops": 0, "est_seconds": 0.0})
            g["layers"] += 1
            g["params"] += r.unique_params
            g["macs"] += r.macs
            g["flops"] += r.flops
            g["est_seconds"] += r.est_seconds
        return out

    # ---- output

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as plain JSON types."""
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "device": self.device,
            "convention": {
                "mac_flops": 2,
                "count_bias": self.count_bias,
                "text": self.convention(),
                "kinds": dict(KINDS),
            },
            "machine": self.peaks.to_dict(),
            "totals": {
                "params": self.params,
                "model_params": self.model_params,
                "excluded_bias_params": self.excluded_bias_params,
                "macs": self.macs,
                "flops": self.flops,
                "activation_bytes": self.activation_bytes,
                "est_seconds": self.est_seconds,
                "measured_seconds": self.measured_seconds,
                "forward_seconds": self.forward_seconds,
                "repeats": self.repeats,
            },
            "by_kind": self.by_kind(),
            "layers": [r.to_dict() for r in self.layers],
            "not_counted": dict(self.not_counted),
            "unattributed_params": dict(self.unattributed_params),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    _CSV_FIELDS = (
        "name", "kind", "type", "input_shapes", "output_shape", "kernel", "stride", "padding", "dilation",
        "groups", "params", "unique_params", "macs", "flops", "weight_bytes", "input_bytes", "output_bytes",
        "intensity", "est_seconds", "measured_seconds", "rule",
    )

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """One row per layer call, raw numbers (MACs, FLOPs, bytes, seconds); written atomically."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self._CSV_FIELDS)
        for r in self.layers:
            d = r.to_dict()
            row = []
            for key in self._CSV_FIELDS:
                v = d[key]
                if key == "input_shapes":
                    v = " ".join(_dims(s) for s in v)
                elif isinstance(v, list):
                    v = _dims(v)
                row.append("" if v is None else v)
            w.writerow(row)
        out = Path(path)
        atomic_write(out, buf.getvalue().encode())
        return out

    def table(self) -> str:
        """The report as text: header with conventions, one line per layer, totals, kinds."""
        measured = any(r.measured_seconds is not None for r in self.layers)
        head = ["#", "layer", "kind", "output", "k/s/g", "params", "MACs", "FLOPs", "out bytes", "FLOP/B",
                "est"] + (["measured"] if measured else [])
        rows: list[list[str]] = []
        for i, r in enumerate(self.layers):
            ksg = "-"
            if r.kernel is not None:
                ksg = _dims(r.kernel)
                if r.stride is not None:
                    ksg += "/" + _dims(r.stride)
                if r.groups is not None:
                    ksg += f"/{r.groups}"
            params = _si(r.params) + ("*" if r.params and not r.unique_params else "")
            rows.append([
                str(i), r.name, r.kind, _dims(r.output_shape), ksg, params, _si(r.macs), _si(r.flops),
                _si(r.output_bytes, "B"), "-" if r.intensity is None else f"{r.intensity:.3g}",
                _seconds(r.est_seconds),
            ] + ([_seconds(r.measured_seconds)] if measured else []))
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        widths[1] = min(widths[1], 44)
        left = {1, 2, 3, 4}

        def line(cells: list[str]) -> str:
            parts = []
            for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
                if len(c) > w:
                    c = "..." + c[-(w - 3):]
                parts.append(c.ljust(w) if i in left else c.rjust(w))
            return "  ".join(parts).rstrip()

        p = self.peaks
        out = [
            f"cost of {self.model} on input {_dims(self.input_shape)} ({self.dtype}, {self.device})",
            f"convention: {self.convention()}",
            f"roofline: {p.gemm_gflops:g} GFLOP/s float32 GEMM peak ({p.gemm_by}), "
            f"{p.bandwidth_gbs:g} GB/s memory bandwidth "
            f"({p.name}, {p.threads} threads, measured {p.measured_at})",
            "",
            line(head),
            line(["-" * w for w in widths]),
        ]
        out += [line(r) for r in rows]
        out.append("")
        out.append(
            f"total: {self.params:,} params ({_si(self.params)}), {self.macs:,} MACs "
            f"({_si(self.macs)} MACs = "
            f"{_si(2 * self.macs)} FLOPs), {_si(self.flops)} FLOPs with other ops, "
            f"{_si(self.activation_bytes, 'B')} of activations written, roofline estimate "
            f"{_seconds(self.est_seconds)}"
        )
        if measured:
            out.append(
                f"measured (median of {self.repeats} runs): layers sum {_seconds(self.measured_seconds)}, "
                f"whole forward pass {_seconds(self.forward_seconds)}"
            )
        if any(r.params and not r.unique_params for r in self.layers):
            out.append("* parameters shared with an earlier row (a module called again), counted once")
        if self.excluded_bias_params:
            out.append(f"bias parameters left out by the switch: {self.excluded_bias_params:,}")
        out.append(f"parameters in the model: {self.model_params:,}")
        if self.unattributed_params:
            items = ", ".join(f"{n} ({v:,})" for n, v in self.unattributed_params.items())
            out.append(f"parameters used by no counted layer (not in the total): {items}")
        out.append("")
        out.append("by kind:       calls    params  share      MACs  share     FLOPs    est  share")
        for kind, k in self.by_kind().items():
            out.append(
                f"  {kind:<14}{k['layers']:>4}  {_si(k['params']):>8}  {k['params_share']:>5.1%}  "
                f"{_si(k['macs']):>8}  {k['macs_share']:>5.1%}  {_si(k['flops']):>8}  {k['est_share']:>5.1%}"
            )
        if self.not_counted:
            items = ", ".join(f"{n}" + (f" (x{c})" if c > 1 else "") for n, c in self.not_counted.items())
            out.append(f"not counted (no rule; not in any total): {items}")
        else:
            out.append("not counted: nothing (every operation that produced a tensor has a rule)")
        return "\n".join(out) + "\n"

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | os.PathLike[str], *, top: int = 40) -> Path:
        """A PNG of where the MACs go: the ``top`` layers by MACs, and the share of each kind."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(path)
        if out.suffix.lower() != ".png":
            raise ValueError(f"plot path must end in .png, got {str(path)!r}")
        kinds = self.by_kind()
        palette = plt.get_cmap("tab10")
        colour = {k: palette(i % 10) for i, k in enumerate(kinds)}
        ranked = sorted((r for r in self.layers if r.macs), key=lambda r: -r.macs)[:top]
        ranked.reverse()  # barh draws bottom up: the biggest on top
        height = max(4.0, 0.22 * len(ranked) + 1.5)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, height), gridspec_kw={"width_ratios": [3, 2]})
        ax1.barh([r.name for r in ranked], [r.macs / 1e6 for r in ranked],
                 color=[colour[r.kind] for r in ranked])
        ax1.set_xlabel("multiply-adds (millions; 1 MAC = 2 FLOPs)")
        shown = f"top {len(ranked)} of {sum(1 for r in self.layers if r.macs)}" if ranked else "no"
        ax1.set_title(f"{shown} layers by MACs")
        ax1.tick_params(axis="y", labelsize=7)
        from matplotlib.patches import Patch

        drawn = list(dict.fromkeys(r.kind for r in reversed(ranked)))
        if drawn:
            ax1.legend(handles=[Patch(color=colour[k], label=k) for k in drawn], loc="lower right")
        names = [k for k, v in kinds.items() if v["macs"] or v["params"]]
        ys = list(range(len(names)))
        macs_pct = [kinds[k]["macs_share"] * 100 for k in names]
        params_pct = [kinds[k]["params_share"] * 100 for k in names]
        ax2.barh([y - 0.2 for y in ys], macs_pct, height=0.4, color=[colour[k] for k in names])
        ax2.barh([y + 0.2 for y in ys], params_pct, height=0.4, color=[colour[k] for k in names], alpha=0.45,
                 hatch="//")
        for y, m, q in zip(ys, macs_pct, params_pct, strict=True):
            ax2.text(m + 1, y - 0.2, f"{m:.1f}% of MACs", va="center", fontsize=8)
            ax2.text(q + 1, y + 0.2, f"{q:.1f}% of params", va="center", fontsize=8)
        ax2.set_yticks(ys, names)
        ax2.invert_yaxis()
        ax2.set_xlim(0, 125)
        ax2.set_xlabel("share of the model's total (%)")
        ax2.set_title("by kind: MACs (solid) and parameters (hatched)")
        bias = "bias counted" if self.count_bias else "bias not counted"
        fig.suptitle(f"{self.model}, input {_dims(self.input_shape)}: {_si(self.macs)} MACs, "
                     f"{_si(self.params)} params ({bias})")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write(out, buf.getvalue())
        return out


# ------------------------------------------------------------------------- cost()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check_size(input_size: Any) -> tuple[int, ...]:
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size,)
    if not isinstance(input_size, (tuple, list, torch.Size)) or not input_size or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_size
    ):
        raise ValueError(
            f"input_size must be a sequence of positive ints such as (3, 224, 224), got {input_size!r}"
        )
    return tuple(int(d) for d in input_size)


def cost(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    batch_size: int = 1,
    count_bias: bool = True,
    measure: bool = False,
    repeats: int = 5,
    device: str | torch.device | None = None,
    limits: Peaks | None = None,
    name: str | None = None,
    progress: bool = False,
) -> CostReport:
    """Count what one forward pass of ``model`` costs, layer call by layer call.

    Args:
        model: any ``nn.Module``; it runs once (``1 + repeats`` more times with ``measure``)
            in eval mode without autograd, and its train/eval flags are restored after.
        input_size: one sample's shape without the batch, e.g. ``(3, 224, 224)``.
        batch_size: samples per forward pass; every count is for the whole batch.
        count_bias: count the bias of convolutions and linear layers (parameters, and one
            FLOP per output element for its adds). MACs never include it.
        measure: also time every layer call (median of ``repeats`` runs, after one warm-up)
            and the whole forward pass.
        repeats: timed runs per layer with ``measure``.
        device: where to run; None means where the model's parameters are. A model on
            another device is refused rather than moved. A model on ``"meta"`` (built
            under ``torch.device("meta")`` or moved with ``model.to("meta")``) is counted
            from shapes alone, in no time and memory, without ``measure``.
        limits: the machine's peaks for the roofline; None reads them from the cache
            (measuring them once, a few seconds, if needed).
        name: the model's name in the report (default: its class name).
        progress: show a progress bar over the timed runs (stderr).

    Returns:
        A :class:`CostReport`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a bad size, batch or device, or the model fails on the input (the
            message carries the model's error in one line).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cost expects an nn.Module, got {type(model).__name__}")
    size = _check_size(input_size)
    for label, value in (("batch_size", batch_size), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    here = _model_device(model)
    dev = here if device is None else torch.device(device)
    other_index = dev.index is not None and here.index is not None and dev.index != here.index
    if dev.type != here.type or other_index:
        raise ValueError(
            f"the model is on {here} but device={str(dev)!r} was asked for; move it with model.to()"
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    dtype = _model_dtype(model)
    if dev.type == "meta":
        # shapes without data: every count is exact, nothing is computed, nothing can be timed
        if measure:
            raise ValueError("measure=True needs a real device; a model on 'meta' has no data to time")
        x = torch.empty((batch_size, *size), device=dev, dtype=dtype)
    else:
        gen = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn((batch_size, *size), generator=gen, device=dev, dtype=dtype)
    label = name or type(model).__name__

    modes = {m: m.training for m in model.modules()}
    tracer = _Tracer(model, count_bias, dev)
    forward_times: list[float] = []
    try:
        model.eval()
        with torch.no_grad():
            try:
                with tracer:
                    model(x)
            except Exception as exc:  # the model's own error, in one line, with the input it got
                raise ValueError(f"{label} failed on input {_dims(x.shape)}: {_one_line(exc)}") from exc
            if measure:
                passes = range(repeats + 1)
                if progress:
                    from tqdm import tqdm

                    passes = tqdm(passes, desc="timing layers", unit="pass", file=sys.stderr, leave=False)
                for i in passes:
                    tracer.start_pass("time")
                    with tracer:
                        model(x)
                    if i == 0:  # warm-up: first calls allocate and pick kernels
                        tracer.times.clear()
                tracer.remove()
                model(x)
                for _ in range(repeats):
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t0 = time.perf_counter()
                    model(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    forward_times.append(time.perf_counter() - t0)
    finally:
        tracer.remove()
        for m, training in modes.items():
            m.train(training)

    lim = limits if limits is not None else peaks(dev if dev.type != "meta" else "cpu")
    for r in tracer.rows:
        moved = r.bytes_moved
        r.intensity = r.flops / moved if moved else None
        r.est_seconds = roofline_seconds(r.flops, moved, lim)
        if measure:
            samples = tracer.times.get(r.name)
            r.measured_seconds = statistics.median(samples) if samples else None

    named = dict(model.named_parameters())
    used = tracer.seen_params | tracer.excluded_bias
    unattributed = {n: p.numel() for n, p in named.items() if id(p) not in used}
    excluded = sum(p.numel() for p in named.values() if id(p) in tracer.excluded_bias)
    return CostReport(
        model=label,
        input_shape=list(x.shape),
        dtype=str(dtype).replace("torch.", ""),
        device=str(dev),
        count_bias=count_bias,
        peaks=lim,
        layers=tracer.rows,
        not_counted=dict(tracer.not_counted),
        unattributed_params=unattributed,
        excluded_bias_params=excluded,
        model_params=sum(p.numel() for p in named.values()),
        repeats=repeats if measure else None,
        forward_seconds=statistics.median(forward_times) if forward_times else None,
    )


# ------------------------------------------------------------------ the bottleneck


@dataclass(frozen=True)
class BottleneckCost:
    """A kxk convolution C -> K, against a 1x1 reduction C -> R followed by the kxk R -> K.

    Both keep H x W ("same" padding); counts are per image, weights only (no bias).
    """

    in_channels: int
    out_channels: int
    reduce_channels: int
    kernel_size: int
    height: int
    width: int

    @property
    def direct_params(self) -> int:
        return self.kernel_size**2 * self.in_channels * self.out_channels

    @property
    def direct_macs(self) -> int:
        return self.height * self.width * self.direct_params

    @property
    def reduce_params(self) -> int:
        return self.in_channels * self.reduce_channels

    @property
    def reduce_macs(self) -> int:
        return self.height * self.width * self.reduce_params

    @property
    def conv_params(self) -> int:
        return self.kernel_size**2 * self.reduce_channels * self.out_channels

    @property
    def conv_macs(self) -> int:
        return self.height * self.width * self.conv_params

    @property
    def bottleneck_params(self) -> int:
        return self.reduce_params + self.conv_params

    @property
    def bottleneck_macs(self) -> int:
        return self.reduce_macs + self.conv_macs

    @property
    def macs_ratio(self) -> float:
        """How many times fewer MACs the bottleneck needs."""
        return self.direct_macs / self.bottleneck_macs

    @property
    def params_ratio(self) -> float:
        return self.direct_params / self.bottleneck_params

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        for key in ("direct_params", "direct_macs", "reduce_params", "reduce_macs", "conv_params",
                    "conv_macs", "bottleneck_params", "bottleneck_macs", "macs_ratio", "params_ratio"):
            d[key] = getattr(self, key)
        d["convention"] = f"{_CONVENTION}; weights only, bias not counted; per image; 'same' padding"
        return d

    def __str__(self) -> str:
        k, c, r, o = self.kernel_size, self.in_channels, self.reduce_channels, self.out_channels
        hw = f"{self.height}x{self.width}"
        rows = [
            (f"{k}x{k} conv {c} -> {o}", self.direct_params, self.direct_macs),
            (f"1x1 reduce {c} -> {r}", self.reduce_params, self.reduce_macs),
            (f"{k}x{k} conv {r} -> {o}", self.conv_params, self.conv_macs),
            ("1x1 reduce + conv", self.bottleneck_params, self.bottleneck_macs),
        ]
        lines = [
            f"the Inception question on a {hw}x{c} input: {k}x{k} convolution to {o} maps, directly or after "
            f"a 1x1 reduction to {r}",
            f"convention: {_CONVENTION}; weights only, bias not counted; per image; padding keeps {hw}",
            "",
            f"{'':<24}{'params':>12}{'MACs':>16}",
        ]
        for label, p, m in rows:
            lines.append(f"{label:<24}{p:>12,}{m:>16,}" + (f"   ({_si(m)} MACs)" if m else ""))
        lines.append("")
        lines.append(
            f"the 1x1 reduction needs {self.macs_ratio:.2f}x fewer MACs "
            f"({_si(self.direct_macs)} -> {_si(self.bottleneck_macs)}) and {self.params_ratio:.2f}x fewer "
            f"parameters ({self.direct_params:,} -> {self.bottleneck_params:,})"
        )
        return "\n".join(lines) + "\n"


def bottleneck_cost(
    in_channels: int, out_channels: int, reduce_channels: int, kernel_size: int, size: int | Sequence[int]
) -> BottleneckCost:
    """Params and MACs of a kxk convolution with and without a 1x1 reduction in front.

    ``bottleneck_cost(192, 32, 16, 5, 28)`` is the Inception example: 5x5 convolutions
    from 192 to 32 maps on 28x28 cost 120 million MACs directly, 12.4 million after a
    1x1 reduction to 16 maps.

    Args:
        in_channels: C, maps coming in.
        out_channels: K, maps the kxk convolution makes.
        reduce_channels: R, maps the 1x1 reduction leaves.
        kernel_size: k, the side of the square kernel.
        size: H x W of the maps (an int for a square, or (H, W)).
    """
    for label, value in (("in_channels", in_channels), ("out_channels", out_channels),
                         ("reduce_channels", reduce_channels), ("kernel_size", kernel_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    hw = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if not isinstance(hw, (list, tuple)) or len(hw) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw
    ):
        raise ValueError(f"size must be a positive int or an (H, W) pair of positive ints, got {size!r}")
    return BottleneckCost(in_channels, out_channels, reduce_channels, kernel_size, int(hw[0]), int(hw[1]))


# ------------------------------------------------------------------ loading models


def _registry() -> tuple[Callable[..., nn.Module] | None, list[str]]:
    try:
        from . import models
    except ImportError:
        return None, []
    return models.create_model, list(models.list_models())


def load_model(spec: str) -> nn.Module:
    """A model from a registered name, ``path/to/file.py:factory`` or ``package.module:factory``.

    The factory is called with no arguments and must return an ``nn.Module``. Loading a
    file runs its code, as importing it would; nothing is unpickled.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unknown name, a module that cannot be imported, a missing factory,
            or a factory that raises.
        TypeError: the factory is not callable or returns something that is not a module.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("model must be a registered name, path/to/file.py:factory or "
                         f"package.module:factory, got {spec!r}")
    create, names = _registry()
    if spec in names and create is not None:
        return create(spec)
    if ":" not in spec:
        known = ", ".join(names) if names else "none registered"
        raise ValueError(f"unknown model {spec!r}: expected a registered name ({known}), "
                         "path/to/file.py:factory or package.module:factory")
    where, factory_name = spec.rsplit(":", 1)
    if not factory_name.isidentifier():
        raise ValueError(f"{factory_name!r} in {spec!r} is not a Python name; expected MODULE:factory")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"model file {where!r} does not exist")
        if path.suffix != ".py":
            raise ValueError(f"model file {where!r} is not a .py file")
        module_name = f"_onebyone_user_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ValueError(f"cannot load {where!r} as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            raise ValueError(f"loading {where!r} failed: {_one_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise ValueError(f"no module named {where!r} (from {spec!r}): {_one_line(exc)}") from exc
        except Exception as exc:
            raise ValueError(f"importing {where!r} failed: {_one_line(exc)}") from exc
    if not hasattr(module, factory_name):
        raise ValueError(f"{where!r} has no {factory_name!r}")
    factory = getattr(module, factory_name)
    if not callable(factory):
        raise TypeError(f"{spec!r} is a {type(factory).__name__}, expected a callable returning an nn.Module")
    try:
        model = factory()
    except Exception as exc:
        raise ValueError(f"{spec}() failed: {_one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec}() returned a {type(model).__name__}, expected an nn.Module")
    return model

