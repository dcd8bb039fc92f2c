"""The torch functions seen outside known modules: which cost nothing (views, creation), which
are copies, and the rule for each of the rest, by base name (``__iadd__`` and ``relu_`` count
as ``add`` and ``relu``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .rows import _Count
from .rules import _count_conv, _count_linear, _count_norm, _count_pool, _per_element

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
