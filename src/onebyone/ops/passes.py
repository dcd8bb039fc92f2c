"""The three passes (forward, grad_input, grad_weight) on the library chosen for them."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import choice
from .choice import R, _choice_key, _fastest, _native_cl_ok, _numpy_ok, _untimed, _use_native, _watching
from .gemm import _finished, _forward_gemm, _grad_input_gemm, _grad_weight_gemm, _mm_numpy, _mm_torch
from .native import (
    _forward_native,
    _grad_input_native,
    _grad_weight_native,
    _grad_weight_native_cl,
    _mm_native_cl,
    _mm_native_gx,
    _native_cl_forward_ok,
)
from .onednn import _onednn_backward, _onednn_backward_both, _onednn_ok
from .views import _format


def _forward_on(
    name: str,
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Tensor:
    """The forward pass on one named library, bias and activation included."""
    if name == "native":  # fuses them into its stores
        return _forward_native(x, w, bias, stride, groups, activation, channels_last)
    if name == "onednn":
        y = F.conv2d(x, w.view(*w.shape, 1, 1), None, stride, 0, 1, groups)
    else:
        y = _forward_gemm(_mm_numpy if name == "numpy" else _mm_torch, x, w, stride, groups, channels_last)
    return _finished(y, bias, activation, channels_last)


def _contiguous(x: Tensor, w: Tensor, channels_last: bool) -> tuple[Tensor, Tensor]:
    """x packed in its layout and w with contiguous rows, where they are not already (a sliced view,
    say: packed once)."""
    fmt = _format(channels_last)
    if not x.is_contiguous(memory_format=fmt):
        x = x.contiguous(memory_format=fmt)
    if not w.is_contiguous():
        w = w.contiguous()
    return x, w


def _forward(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Tensor:
    """The forward pass of packed x and w (see _contiguous) on the library the rule or the timing picks."""
    k, cg = w.shape
    if not channels_last:  # NCHW: the rule, no timing
        if _use_native("forward", x, cg, k // groups, False):
            return _forward_native(x, w, bias, stride, groups, activation, False)
    else:  # channels_last: the library remembered for this shape, else the fastest timed now
        key = _choice_key("forward", x, True, *x.shape, k, stride, groups)
        chosen = choice._choices.get(key) if choice._policy == "auto" else None
        if chosen is not None:  # the common case after the first call: straight there
            if choice._watched and key in choice._watched:
                call = functools.partial(_forward_on, chosen, x, w, bias, stride, groups, activation, True)
                return _watching(key, call)
            return _forward_on(chosen, x, w, bias, stride, groups, activation, True)
        native_cl = _native_cl_ok(x) and (choice._policy == "native" or _native_cl_forward_ok(x, w, groups))
        onednn = _onednn_ok(x, w, True)
        if native_cl or onednn:  # several libraries
            names = ["torch"] + ["numpy"] * (choice._policy == "numpy" and _numpy_ok(x))
            names += ["onednn"] * onednn + ["native"] * native_cl
            candidates = {
                name: functools.partial(_forward_on, name, x, w, bias, stride, groups, activation, True)
                for name in names
            }
            return _fastest(key, candidates)
    # one library: no bookkeeping on the way (small layers feel every microsecond)
    name = "numpy" if choice._policy == "numpy" and _numpy_ok(x) else "torch"
    return _forward_on(name, x, w, bias, stride, groups, activation, channels_last)


# ------------------------------------------------------------------------ backward


def _activation_grad(grad: Tensor, y: Tensor, activation: str | None) -> Tensor:
    """grad_y times the activation's derivative, read off the saved output y, in one pass."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad, y, 0.0)
    if activation == "relu6":
        # y lies strictly inside (0, 6) exactly where the input did
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)
    return grad

def _grad_input_on(
    name: str, grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_x on one named library."""
    if name == "onednn":
        return _onednn_backward(grad, x, w, stride, groups, 0)
    if name == "native" and stride == (1, 1):
        return _grad_input_native(grad, w, tuple(x.shape), groups, channels_last)
    if name == "native":  # a strided grad_x: gathered blocks
        mm = _mm_native_cl if channels_last else _mm_native_gx
    else:
        mm = _mm_numpy if name == "numpy" else _mm_torch
    return _grad_input_gemm(mm, grad, w, tuple(x.shape), stride, groups, channels_last)


def _grad_weight_on(
    name: str, grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W on one named library."""
    if name == "onednn":
        return _onednn_backward(grad, x, w, stride, groups, 1)
    if name == "native" and channels_last:
        return _grad_weight_native_cl(grad, x, stride, groups)
    if name == "native":
        return _grad_weight_native(grad, x, groups)
    mm = _mm_numpy if name == "numpy" else _mm_torch
    return _grad_weight_gemm(mm, grad, x, stride, groups, channels_last)


def _pass_on(
    pass_: str,
    run: Callable[..., R],
    names: list[str],
    grad: Tensor,
    x: Tensor,
    w: Tensor,
    stride: tuple[int, int],
    groups: int,
    channels_last: bool,
) -> R:
    """A backward pass on one of the libraries named (PyTorch's BLAS first): the one forced, the one
    remembered for this shape, or the fastest of them timed now."""
    if choice._policy != "auto" or len(names) == 1:
        return run(_untimed(names), grad, x, w, stride, groups, channels_last)
    key = _choice_key(pass_, grad, channels_last, *x.shape, w.shape[0], stride, groups)
    chosen = choice._choices.get(key)
    if chosen is not None:
        if choice._watched and key in choice._watched:
            return _watching(key, functools.partial(run, chosen, grad, x, w, stride, groups, channels_last))
        return run(chosen, grad, x, w, stride, groups, channels_last)
    cands = {name: functools.partial(run, name, grad, x, w, stride, groups, channels_last) for name in names}
    return _fastest(key, cands)


def _grad_input(
    grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_x on the library the rule (NCHW float32) or the timing picks."""
    k, cg = w.shape
    if _use_native("grad_input", grad, k // groups, cg, channels_last):
        return _grad_input_on("native", grad, x, w, stride, groups, False)
    names = ["torch"] + ["numpy"] * (choice._policy == "numpy" and _numpy_ok(grad))
    names += ["onednn"] * _onednn_ok(x, w, channels_last)
    names += ["native"] * (channels_last and _native_cl_ok(grad))
    return _pass_on("grad_input", _grad_input_on, names, grad, x, w, stride, groups, channels_last)


def _grad_weight(
    grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W on the library the rule (NCHW float32) or the timing picks."""
    k, cg = w.shape
    if stride == (1, 1) and _use_native("grad_weight", grad, cg, k // groups, channels_last):
        return _grad_weight_native(grad, x, groups)
    names = ["torch"] + ["numpy"] * (choice._policy == "numpy" and _numpy_ok(grad))
    names += ["onednn"] * _onednn_ok(x, w, channels_last)
    names += ["native"] * (channels_last and _native_cl_ok(grad))
    return _pass_on("grad_weight", _grad_weight_on, names, grad, x, w, stride, groups, channels_last)


def _backward_on(
    name: str, grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> tuple[Tensor, Tensor]:
    """grad_x and grad_W: in one oneDNN call, or pass by pass on the libraries each picks."""
    if name == "onednn":
        return _onednn_backward_both(grad, x, w, stride, groups)
    return (
        _grad_input(grad, x, w, stride, groups, channels_last),
        _grad_weight(grad, x, w, stride, groups, channels_last),
    )



def backward(
    grad: Tensor,
    x: Tensor,
    w: Tensor,
    stride: tuple[int, int],
    groups: int,
    channels_last: bool,
    want_x: bool,
    want_w: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """grad_x and grad_W (K x C/g) of packed x and w, each only if wanted."""
    fmt = _format(channels_last)
    if not grad.is_contiguous(memory_format=fmt):
        grad = grad.contiguous(memory_format=fmt)
    if want_x and want_w:
        # oneDNN computes both in one call, sharing its reorder of grad: timed against the best of
        # the passes one by one
        names = ["torch"] + ["onednn"] * _onednn_ok(x, w, channels_last)
        return _pass_on("backward", _backward_on, names, grad, x, w, stride, groups, channels_last)
    gx = _grad_input(grad, x, w, stride, groups, channels_last) if want_x else None
    gw = _grad_weight(grad, x, w, stride, groups, channels_last) if want_w else None
    return gx, gw
