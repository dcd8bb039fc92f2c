"""The module types counted as one row each (``_KNOWN_MODULES``), and the rule each one takes."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..layers import Conv1x1
from .rows import _Count
from .rules import _count_conv, _count_linear, _count_norm, _count_pool, _per_element

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
