"""The passes (forward, grad_input, grad_weight) on the library chosen for them.

The candidates of each pass are the libraries correct for it (dtype, layout, stride, memory
budget): PyTorch's BLAS on views ("torch"; for NCHW batches also one image at a time,
"torch_images"), oneDNN's convolution ("onednn"), onebyone's kernels in their natural form
("native"; on the channels_last kernel also with every pixel as one row, "native_flat") and, for
NCHW images, turned around on the channels_last kernel ("native_turned"), bfloat16 on onebyone's
AMX kernel ("amx", and for channels_last "amx_turned"; see amx.py), float16 / bfloat16 widened
to float32 block by block on PyTorch's float32 BLAS ("widened"; see widened.py), float32 NCHW
images joined side by side into one GEMM a run ("joined"; see joined.py), NumPy's BLAS when forced
("numpy"). choice.decide picks among them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import choice
from .amx import _amx_ok, _forward_amx, _grad_input_amx, _grad_weight_amx, _grad_weight_amx_cl
from .choice import choice_key, decide
from .gemm import (
    _finished,
    _forward_gemm,
    _grad_input_gemm,
    _grad_weight_gemm,
    _mm_numpy,
    _mm_torch,
    _mm_torch_images,
)
from .joined import _grad_weight_joined, _mm_joined, joined_ok
from .native import (
    Runner,
    _flat_ok,
    _forward_native,
    _grad_input_native,
    _grad_weight_native,
    _grad_weight_native_cl,
    _mm_native_cl,
    _mm_native_gx,
    _native_cl_forward_ok,
    _native_dtype_ok,
    _native_forward_runner,
)
from .onednn import _onednn_backward, _onednn_backward_both, _onednn_backward_ok, _onednn_ok
from .views import _format
from .widened import _mm_widened, widened_ok

_NUMPY_DTYPES = (torch.float32, torch.float64)
_BLAS = {"torch": _mm_torch, "torch_images": _mm_torch_images, "numpy": _mm_numpy, "widened": _mm_widened,
         "joined": _mm_joined}


def _images(x: Tensor, channels_last: bool) -> list[str]:
    """PyTorch's BLAS one image at a time, where "torch" makes one batched call: NCHW batches."""
    return ["torch_images"] * (not channels_last and x.shape[0] > 1 and x.shape[2] * x.shape[3] > 1)


def _numpy(t: Tensor) -> list[str]:
    """NumPy is never timed (its threads and PyTorch's fight over the cores after each switch): a
    candidate only when forced."""
    return ["numpy"] * (choice._policy == "numpy" and t.is_cpu and t.dtype in _NUMPY_DTYPES)


def _if_widened(x: Tensor) -> list[str]:
    return ["widened"] * widened_ok(x)


def _if_joined(x: Tensor, channels_last: bool) -> list[str]:
    return ["joined"] * joined_ok(x, channels_last)


def forward_candidates(x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
                       ) -> list[str]:
    names = ["torch", *_images(x, channels_last), *_if_joined(x, channels_last), *_numpy(x), *_if_widened(x)]
    if _onednn_ok(x, w, channels_last):
        names.append("onednn")
    if _native_dtype_ok(x):
        if not channels_last or _native_cl_forward_ok(x, w, groups):
            names.append("native")
        # on the channels_last kernel (NCHW 1 x 1 images too: rows of channels), every pixel as one row
        on_cl = channels_last or x.shape[2] * x.shape[3] == 1
        if on_cl and _flat_ok(x, stride) and _native_cl_forward_ok(x, w, groups):
            names.append("native_flat")
        # turned takes images of two output pixels or more: strided batches of one-pixel outputs
        # come out wrong on it (tests/test_choice.py keeps every candidate to the definition)
        pixels = -(-x.shape[2] // stride[0]) * -(-x.shape[3] // stride[1])
        if not channels_last and pixels > 1 and _native_cl_forward_ok(x, w, groups):
            names.append("native_turned")
    if _amx_ok(x):
        # a strided channels_last input runs turned only (its kept pixels are not rows a tile can read)
        rows = stride == (1, 1) or not channels_last or x.shape[2] * x.shape[3] == 1
        names += ["amx"] * rows + ["amx_turned"] * channels_last
    return names


def grad_input_candidates(x: Tensor, w: Tensor, stride: tuple[int, int], channels_last: bool) -> list[str]:
    names = ["torch", *_images(x, channels_last), *_if_joined(x, channels_last), *_numpy(x), *_if_widened(x)]
    if _onednn_backward_ok(x, w, stride, channels_last, "grad_input"):
        names.append("onednn")
    if _native_dtype_ok(x):
        names.append("native")
        if not channels_last and stride == (1, 1) and x.shape[2] * x.shape[3] > 1:
            names.append("native_turned")
        if channels_last and _flat_ok(x, stride):
            names.append("native_flat")
    if _amx_ok(x) and (stride == (1, 1) or channels_last):  # strided: the kept pixels' rows, s1 apart
        names += ["amx"] + ["amx_turned"] * (channels_last and stride == (1, 1))
    return names


def grad_weight_candidates(x: Tensor, w: Tensor, stride: tuple[int, int], channels_last: bool) -> list[str]:
    names = ["torch", *_images(x, channels_last), *_numpy(x), *_if_widened(x)]
    if _onednn_backward_ok(x, w, stride, channels_last, "grad_weight"):
        names.append("onednn")
    if stride == (1, 1):
        names += _if_joined(x, channels_last)
    if _native_dtype_ok(x) and (channels_last or stride == (1, 1)):
        names.append("native")
    if _amx_ok(x) and stride == (1, 1):
        names.append("amx")
    return names


# ------------------------------------------------------------------------ forward


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
    if isinstance(name, choice.Trial):  # a Trial: a whole call its key's choice is checked on
        return choice.timed(name, _forward_on, x, w, bias, stride, groups, activation, channels_last)
    if name in _NATIVE_FORWARDS:  # fuses them into its stores
        return _forward_native(x, w, bias, stride, groups, activation, channels_last, name == "native_turned",
                               name == "native_flat")
    if name in ("amx", "amx_turned"):
        return _forward_amx(x, w, bias, stride, groups, activation, channels_last, name == "amx_turned")
    if name == "onednn":
        y = F.conv2d(x, w.view(*w.shape, 1, 1), None, stride, 0, 1, groups)
    else:
        y = _forward_gemm(_BLAS[name], x, w, stride, groups, channels_last)
    return _finished(y, bias, activation, channels_last)


_NATIVE_FORWARDS = ("native", "native_turned", "native_flat")


def forward_runner(
    name: str,
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Runner | None:
    """The forward on library ``name`` worked out once for tensors like these, where the library is
    onebyone's own kernels (see native._native_forward_runner); else None."""
    if name not in _NATIVE_FORWARDS or (bias is not None and not bias.is_contiguous()):
        return None
    return _native_forward_runner(tuple(x.shape), x.dtype, tuple(w.shape[:2]), stride, groups, activation,
                                  channels_last, name == "native_turned", name == "native_flat",
                                  torch.get_num_threads())


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
    """The forward pass of packed x and w (see _contiguous) on the library chosen for its key."""
    name = _forward_library(x, w, bias, stride, groups, activation, channels_last)
    return _forward_on(name, x, w, bias, stride, groups, activation, channels_last)


def _forward_library(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> str:
    """The library the forward pass of this key runs on (timed now if it is new)."""
    names = forward_candidates(x, w, stride, groups, channels_last)
    if len(names) == 1:  # no bookkeeping on the way (small layers feel every microsecond)
        return names[0]
    key = choice_key("forward", channels_last, x.shape, w.shape[0], stride, groups, x.dtype)
    return choice._choices.get(key) or decide(
        key, names, _forward_on, (x, w, bias, stride, groups, activation, channels_last),
        (stride[0], 0, 0, 0, 0, 0, 0), _fresh_output(names, x, w.shape[0], stride),
    )


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
    if isinstance(name, choice.Trial):  # a Trial (see _forward_on)
        return choice.timed(name, _grad_input_on, grad, x, w, stride, groups, channels_last)
    if name == "onednn":
        return _onednn_backward(grad, x, w, stride, groups, 0)
    if name in ("amx", "amx_turned"):  # see grad_input_candidates
        return _grad_input_amx(grad, w, tuple(x.shape), groups, channels_last, name == "amx_turned", stride)
    if name in ("native", "native_turned", "native_flat") and stride == (1, 1):
        return _grad_input_native(grad, w, tuple(x.shape), groups, channels_last, name == "native_turned",
                                  name == "native_flat")
    native = _mm_native_cl if channels_last else _mm_native_gx  # a strided grad_x: gathered blocks
    mm = native if name == "native" else _BLAS[name]
    return _grad_input_gemm(mm, grad, w, tuple(x.shape), stride, groups, channels_last)


def _grad_weight_on(
    name: str, grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W on one named library."""
    if isinstance(name, choice.Trial):  # a Trial (see _forward_on)
        return choice.timed(name, _grad_weight_on, grad, x, w, stride, groups, channels_last)
    if name == "onednn":
        return _onednn_backward(grad, x, w, stride, groups, 1)
    if name == "joined":  # NCHW at stride 1
        return _grad_weight_joined(grad, x, groups)
    if name == "amx":  # stride 1
        return _grad_weight_amx_cl(grad, x, groups) if channels_last else _grad_weight_amx(grad, x, groups)
    if name == "native" and channels_last:
        return _grad_weight_native_cl(grad, x, stride, groups)
    if name == "native":  # NCHW at stride 1 (see grad_weight_candidates)
        return _grad_weight_native(grad, x, groups)
    return _grad_weight_gemm(_BLAS[name], grad, x, stride, groups, channels_last)


def _fresh_output(names: list[str], x: Tensor, channels: int, stride: tuple[int, int]) -> dict[str, int]:
    """The candidates whose output is not from the output pool (oneDNN's: torch allocates it), with
    its bytes: an output of ``channels`` maps of x's images at ``stride``."""
    if "onednn" not in names:
        return {}
    n, _, h, wd = x.shape
    return {"onednn": n * channels * -(-h // stride[0]) * -(-wd // stride[1]) * x.element_size()}


def _grad_steps(stride: tuple[int, int]) -> tuple[int, ...]:
    """grad and x sliced for timing: grad row by row, x its stride's rows a row of grad."""
    return (1, stride[0], 0, 0, 0, 0)


def _grad_input_choice(grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int,
                       channels_last: bool) -> str:
    names = grad_input_candidates(x, w, stride, channels_last)
    if len(names) == 1:
        return names[0]
    key = choice_key("grad_input", channels_last, x.shape, w.shape[0], stride, groups, x.dtype)
    return choice._choices.get(key) or decide(
        key, names, _grad_input_on, (grad, x, w, stride, groups, channels_last), _grad_steps(stride),
        _fresh_output(names, x, x.shape[1], (1, 1)),
    )


def _grad_weight_choice(grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int,
                        channels_last: bool) -> str:
    names = grad_weight_candidates(x, w, stride, channels_last)
    if len(names) == 1:
        return names[0]
    key = choice_key("grad_weight", channels_last, x.shape, w.shape[0], stride, groups, x.dtype)
    return choice._choices.get(key) or decide(
        key, names, _grad_weight_on, (grad, x, w, stride, groups, channels_last), _grad_steps(stride)
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
    plan: tuple[Any, ...] | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """grad_x and grad_W (K x C/g) of packed x and w, each only if wanted: pass by pass on the
    libraries chosen for each, or both in one oneDNN call (sharing its reorder of grad) where that
    was timed faster than the two chosen passes. ``plan``, a key of ``choice._plans``: the
    libraries are remembered under it, and read from it on the next call (no candidates, no keys)."""
    fmt = _format(channels_last)
    if not grad.is_contiguous(memory_format=fmt):
        grad = grad.contiguous(memory_format=fmt)
    known = None if plan is None else choice._plans.get(plan)
    if known is None:
        known = _backward_libraries(grad, x, w, stride, groups, channels_last, want_x, want_w)
        if plan is not None and all(type(name) is str for name in known):  # no key on trial
            choice._plans[plan] = known
    gi, gw = known
    if gi == "both":
        return _onednn_backward_both(grad, x, w, stride, groups)
    gx = _grad_input_on(gi, grad, x, w, stride, groups, channels_last) if want_x else None
    gwt = _grad_weight_on(gw, grad, x, w, stride, groups, channels_last) if want_w else None
    return gx, gwt


def _backward_libraries(
    grad: Tensor,
    x: Tensor,
    w: Tensor,
    stride: tuple[int, int],
    groups: int,
    channels_last: bool,
    want_x: bool,
    want_w: bool,
) -> tuple[str, str]:
    """The libraries of grad_x and grad_W ("" where not wanted), or ("both", "both") for one oneDNN
    call of the two (timed now where a key is new)."""
    gi = _grad_input_choice(grad, x, w, stride, groups, channels_last) if want_x else ""
    gw = _grad_weight_choice(grad, x, w, stride, groups, channels_last) if want_w else ""
    # while a pass is on trial its own library runs, timed (choice.Trial): the choice between the
    # two passes and one oneDNN call for both waits until they are settled
    if type(gi) is not str or type(gw) is not str:
        return gi, gw
    if (gi, gw) == ("onednn", "onednn"):
        return "both", "both"
    if want_x and want_w and _onednn_backward_ok(x, w, stride, channels_last, "both"):
        key = choice_key("backward", channels_last, x.shape, w.shape[0], stride, groups, x.dtype)

        def run(name: str, grad: Tensor, x: Tensor, w: Tensor, *conf: object) -> tuple[Tensor, Tensor]:
            if name == "onednn":
                return _onednn_backward_both(grad, x, w, stride, groups)
            return (_grad_input_on(gi, grad, x, w, stride, groups, channels_last),
                    _grad_weight_on(gw, grad, x, w, stride, groups, channels_last))

        both = choice._choices.get(key) or decide(
            key, ["passes", "onednn"], run, (grad, x, w), (1, stride[0], 0),
            _fresh_output(["onednn"], x, x.shape[1], (1, 1)), trial=False,  # "both" runs untimed
        )
        if both == "onednn":
            return "both", "both"
    return gi, gw
