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

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ACTIVATIONS", "BACKENDS", "chosen_backends", "conv1x1", "set_backend"]

#: Activations conv1x1 can fuse, by name.
ACTIVATIONS = ("relu", "relu6")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- checks


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


def _format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _split(t: Tensor, size: int, dim: int, groups: int) -> tuple[Tensor, ...]:
    """The groups' blocks of t along dim (views); t itself when there is one group."""
    return (t,) if groups == 1 else t.split(size, dim)


# ---------------------------------------------------------------- choosing a library
#
# Every product below is out = a @ b on 2-D (or batched 3-D) views of the caller's tensors,
# written straight into the result: no operand is copied into another layout. On the CPU
# three libraries can do the work: PyTorch's BLAS (MKL), NumPy's BLAS (OpenBLAS, reached
# without a copy through .numpy() on the very same memory) and, for channels_last input,
# oneDNN's own 1x1 convolution kernel (what F.conv2d runs). Which one is fastest depends on
# the shape, so the first call of each shape and pass (forward, grad_input, grad_weight)
# times every candidate and the winner is remembered for that shape from then on.

Matmul = Callable[[Tensor, Tensor, Tensor], None]


def _mm_torch(a: Tensor, b: Tensor, out: Tensor) -> None:
    if out.dim() == 2 or out.is_contiguous():
        torch.matmul(a, b, out=out)
    else:  # a batch of matrices that are not packed back to back: one product each
        for i in range(out.shape[0]):
            torch.mm(a if a.dim() == 2 else a[i], b if b.dim() == 2 else b[i], out=out[i])


def _mm_numpy(a: Tensor, b: Tensor, out: Tensor) -> None:
    # .numpy() shares memory with the tensor; np.matmul hands strided views straight to sgemm
    np.matmul(a.detach().numpy(), b.detach().numpy(), out=out.detach().numpy())


#: The libraries conv1x1 can run on: "auto" picks among them per shape; the others force one.
BACKENDS = ("auto", "torch", "numpy", "onednn")
_NUMPY_DTYPES = (torch.float32, torch.float64)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
# oneDNN reorders the weights into its own blocked layout first: only worth it (and within the
# memory budget) when the weights are small next to the input
_ONEDNN_WEIGHT_SHARE = 0.05

_policy = "auto"
_choices: dict[tuple[object, ...], str] = {}


def set_backend(name: str = "auto") -> str:
    """Choose the library conv1x1 runs on for CPU tensors; returns the previous choice.

    ``"auto"`` (the default) times every candidate on the first call of each shape and keeps the
    fastest; ``"torch"``, ``"numpy"`` or ``"onednn"`` force one wherever it applies (NumPy: float32
    and float64; oneDNN: channels_last float32/bfloat16 with weights small next to the input), with
    PyTorch's BLAS everywhere else. CUDA tensors always run on PyTorch's own kernels.
    """
    global _policy
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    before, _policy = _policy, name
    _choices.clear()
    return before


def chosen_backends() -> dict[tuple[object, ...], str]:
    """The library picked so far for each (pass, layout, shape, stride, groups, dtype, threads)."""
    return dict(_choices)


def _numpy_ok(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in _NUMPY_DTYPES


def _onednn_ok(x: Tensor, w: Tensor, channels_last: bool) -> bool:
    return (
        channels_last
        and x.device.type == "cpu"
        and x.dtype in _ONEDNN_DTYPES
        and torch.backends.mkldnn.is_available()
        and w.numel() <= _ONEDNN_WEIGHT_SHARE * x.numel()
    )


R = TypeVar("R")


def _fastest(key: tuple[object, ...], like: Tensor, candidates: dict[str, Callable[[], R]]) -> R:
    """Run the fastest candidate for this key: all timed on first sight, the winner remembered."""
    if _policy != "auto":
        name = _policy if _policy in candidates else "torch"
        return candidates[name]()
    if len(candidates) == 1:
        return next(iter(candidates.values()))()
    key = (*key, like.dtype, torch.get_num_threads())
    chosen = _choices.get(key)
    if chosen is not None:
        return candidates[chosen]()
    best: dict[str, float] = {}
    result = None
    for name in (*candidates, *candidates):  # twice each, interleaved: the first run warms up
        t0 = time.perf_counter()
        result = candidates[name]()
        best[name] = min(best.get(name, math.inf), time.perf_counter() - t0)
    _choices[key] = min(best, key=best.__getitem__)
    return result  # type: ignore[return-value]  # every candidate computes the same thing


def _gemm_candidates(like: Tensor, run: Callable[[Matmul], R]) -> dict[str, Callable[[], R]]:
    out: dict[str, Callable[[], R]] = {"torch": lambda: run(_mm_torch)}
    if _numpy_ok(like):
        out["numpy"] = lambda: run(_mm_numpy)
    return out


# ---------------------------------------------------------------------- strided input
#
# With stride > 1 the kept pixels are no longer evenly spaced in memory (NCHW) or not one
# matrix (channels_last), so a GEMM cannot read them in place. They are gathered a few
# output rows at a time into a small buffer (at most 1/16 of the input, at most 2 MiB),
# never the whole subsampled input at once.


def _row_blocks(x: Tensor, n: int, ho: int, row_elems: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Buffer rows and the (image, first row, end row) blocks that fill it in turn."""
    budget = min(2 * 2**20, x.numel() * x.element_size() // 16)
    rows = min(ho, max(1, budget // max(1, row_elems * x.element_size())))
    return rows, [(i, r0, min(ho, r0 + rows)) for i in range(n) for r0 in range(0, ho, rows)]


def _strided_rows(x: Tensor, i: int, r0: int, r1: int, stride: tuple[int, int]) -> Tensor:
    """Image i's input rows that feed output rows r0..r1, every stride-th column: C x rows x W'."""
    sh, sw = stride
    return x[i, :, r0 * sh : (r1 - 1) * sh + 1 : sh, ::sw]


# ------------------------------------------------------------------------- forward


def _epilogue_(ym: Tensor, bias: Tensor | None, activation: str | None, channels_last: bool) -> None:
    """The bias and the activation, in place on the finished product: no extra tensor."""
    if bias is not None:
        ym.add_(bias if channels_last else bias.view(-1, 1))  # ym: M x K (NHWC) or N x K x M (NCHW)
    if activation == "relu":
        ym.clamp_(min=0)
    elif activation == "relu6":
        ym.clamp_(min=0, max=6)


def _forward_gemm(
    mm: Matmul, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """The product alone (no bias, no activation) on one BLAS, into a new output tensor."""
    n, c, h, wd = x.shape
    k, cg = w.shape
    kg = k // groups
    ho, wo = -(-h // stride[0]), -(-wd // stride[1])
    y = torch.empty((n, k, ho, wo), dtype=x.dtype, device=x.device, memory_format=_format(channels_last))
    if y.numel() == 0:
        return y
    if channels_last:
        ym = y.permute(0, 2, 3, 1).view(n * ho * wo, k)  # (N*H'*W') x K
        wt = w.t()  # C/G x K
        if stride == (1, 1):
            xm = x.permute(0, 2, 3, 1).view(n * h * wd, c)  # the whole batch is one (N*H*W) x C matrix
            for a, b, out in zip(
                _split(xm, cg, 1, groups), _split(wt, kg, 1, groups), _split(ym, kg, 1, groups), strict=True
            ):
                mm(a, b, out)  # X_g (NHW x C/G) @ W_g^T (C/G x K/G) -> Y_g, a column block
            return y
        rows, blocks = _row_blocks(x, n, ho, c * wo)
        buf = x.new_empty((rows * wo, c))  # channels innermost, as in the input
        for i, r0, r1 in blocks:
            m = (r1 - r0) * wo
            buf[:m].view(r1 - r0, wo, c).copy_(_strided_rows(x, i, r0, r1, stride).permute(1, 2, 0))
            base = (i * ho + r0) * wo
            for a, b, out in zip(
                _split(buf[:m], cg, 1, groups),
                _split(wt, kg, 1, groups),
                _split(ym[base : base + m], kg, 1, groups),
                strict=True,
            ):
                mm(a, b, out)
        return y
    ym = y.view(n, k, ho * wo)  # N x K x H'W'
    if stride == (1, 1):
        xm = x.view(n, c, h * wd)  # each image is already a C x HW matrix
        for a, b, out in zip(
            _split(w, kg, 0, groups), _split(xm, cg, 1, groups), _split(ym, kg, 1, groups), strict=True
        ):
            mm(a, b, out)  # W_g (K/G x C/G) @ X[:, g] (N x C/G x HW) -> Y[:, g] (N x K/G x HW)
        return y
    rows, blocks = _row_blocks(x, n, ho, c * wo)
    buf = x.new_empty((c, rows * wo))
    for i, r0, r1 in blocks:
        m = (r1 - r0) * wo
        buf[:, :m].view(c, r1 - r0, wo).copy_(_strided_rows(x, i, r0, r1, stride))
        out_rows = ym[i, :, r0 * wo : r1 * wo]  # K x m, rows H'W' apart
        for a, b, out in zip(
            _split(w, kg, 0, groups),
            _split(buf[:, :m], cg, 0, groups),
            _split(out_rows, kg, 0, groups),
            strict=True,
        ):
            mm(a, b, out)
    return y


def _forward(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Tensor:
    fmt = _format(channels_last)
    if not x.is_contiguous(memory_format=fmt):
        x = x.contiguous(memory_format=fmt)  # an unusual input (a sliced view, say): packed once
    w = w.contiguous()
    candidates = _gemm_candidates(x, lambda mm: _forward_gemm(mm, x, w, stride, groups, channels_last))
    if _onednn_ok(x, w, channels_last):
        w4 = w.view(*w.shape, 1, 1)
        candidates["onednn"] = lambda: F.conv2d(x, w4, None, stride, 0, 1, groups)
    y = _fastest(("forward", channels_last, *x.shape, w.shape[0], stride, groups), x, candidates)
    n, k, ho, wo = y.shape
    ym = y.permute(0, 2, 3, 1).view(n * ho * wo, k) if channels_last else y.view(n, k, ho * wo)
    _epilogue_(ym, bias, activation, channels_last)
    return y


# ------------------------------------------------------------------------ backward


def _activation_grad(grad: Tensor, y: Tensor, activation: str | None) -> Tensor:
    """grad_y times the activation's derivative, read off the saved output y, in one pass."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad, y, 0.0)
    if activation == "relu6":
        # y lies strictly inside (0, 6) exactly where the input did
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)
    return grad


def _grad_input_gemm(
    mm: Matmul,
    grad: Tensor,
    w: Tensor,
    in_shape: tuple[int, ...],
    stride: tuple[int, int],
    groups: int,
    channels_last: bool,
) -> Tensor:
    """grad_x = W^T applied at every kept pixel; zero at the pixels the stride skipped."""
    n, k, ho, wo = grad.shape
    _, c, h, wd = in_shape
    cg, kg = c // groups, k // groups
    gx = torch.empty(in_shape, dtype=grad.dtype, device=grad.device, memory_format=_format(channels_last))
    if stride != (1, 1):
        gx.zero_()  # the skipped pixels
    if gx.numel() == 0 or grad.numel() == 0:
        return gx
    if channels_last:
        gm = grad.permute(0, 2, 3, 1).view(n * ho * wo, k)  # (N*H'*W') x K
        if stride == (1, 1):
            gxm = gx.permute(0, 2, 3, 1).view(n * h * wd, c)
            for a, b, out in zip(
                _split(gm, kg, 1, groups), _split(w, kg, 0, groups), _split(gxm, cg, 1, groups), strict=True
            ):
                mm(a, b, out)  # dY_g (NHW x K/G) @ W_g (K/G x C/G) -> dX_g
            return gx
        rows, blocks = _row_blocks(gx, n, ho, c * wo)
        buf = gx.new_empty((rows * wo, c))
        for i, r0, r1 in blocks:
            m = (r1 - r0) * wo
            base = (i * ho + r0) * wo
            for a, b, out in zip(
                _split(gm[base : base + m], kg, 1, groups),
                _split(w, kg, 0, groups),
                _split(buf[:m], cg, 1, groups),
                strict=True,
            ):
                mm(a, b, out)
            _strided_rows(gx, i, r0, r1, stride).permute(1, 2, 0).copy_(buf[:m].view(r1 - r0, wo, c))
        return gx
    gm = grad.view(n, k, ho * wo)
    wt = _split(w, kg, 0, groups)
    wt = tuple(t.t() for t in wt)  # C/G x K/G views: the transposed filters
    if stride == (1, 1):
        gxm = gx.view(n, c, h * wd)
        for a, b, out in zip(wt, _split(gm, kg, 1, groups), _split(gxm, cg, 1, groups), strict=True):
            mm(a, b, out)  # W_g^T (C/G x K/G) @ dY[:, g] (N x K/G x H'W') -> dX[:, g]
        return gx
    rows, blocks = _row_blocks(gx, n, ho, c * wo)
    buf = gx.new_empty((c, rows * wo))
    for i, r0, r1 in blocks:
        m = (r1 - r0) * wo
        for a, b, out in zip(
            wt,
            _split(gm[i, :, r0 * wo : r1 * wo], kg, 0, groups),
            _split(buf[:, :m], cg, 0, groups),
            strict=True,
        ):
            mm(a, b, out)
        _strided_rows(gx, i, r0, r1, stride).copy_(buf[:, :m].view(c, r1 - r0, wo))
    return gx


def _grad_weight_gemm(
    mm: Matmul, grad: Tensor, x: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W = sum over every kept pixel of grad_y (K) times x (C), per group: one K/G x C/G block each."""
    n, k, ho, wo = grad.shape
    c = x.shape[1]
    cg, kg = c // groups, k // groups
    gw = torch.empty((k, cg), dtype=grad.dtype, device=grad.device)
    if grad.numel() == 0 or cg == 0:
        return gw.zero_()
    gws = _split(gw, kg, 0, groups)
    if channels_last and stride == (1, 1):
        gm = grad.permute(0, 2, 3, 1).view(n * ho * wo, k)
        xm = x.permute(0, 2, 3, 1).view(n * ho * wo, c)  # the whole batch is one matrix: one GEMM per group
        for a, b, out in zip(_split(gm, kg, 1, groups), _split(xm, cg, 1, groups), gws, strict=True):
            mm(a.t(), b, out)  # dY_g^T (K/G x NHW) @ X_g (NHW x C/G)
        return gw
    if not channels_last and stride == (1, 1) and n == 1:
        for a, b, out in zip(
            _split(grad.view(k, ho * wo), kg, 0, groups),
            _split(x.view(c, ho * wo), cg, 0, groups),
            gws,
            strict=True,
        ):
            mm(a, b.t(), out)  # dY_g (K/G x HW) @ X_g^T (HW x C/G)
        return gw
    # a sum of many products: each lands in a weight-sized scratch (either BLAS can fill it) and is
    # added to the total, which low-precision dtypes keep in float32
    acc = torch.zeros(
        (k, cg),
        dtype=torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else grad.dtype,
        device=grad.device,
    )
    accs = _split(acc, kg, 0, groups)
    tmp = _split(gw, kg, 0, groups)  # gw doubles as the scratch until the end
    if channels_last:
        gm = grad.permute(0, 2, 3, 1).view(n * ho * wo, k)
        rows, blocks = _row_blocks(x, n, ho, c * wo)
        buf = x.new_empty((rows * wo, c))
        for i, r0, r1 in blocks:
            m = (r1 - r0) * wo
            buf[:m].view(r1 - r0, wo, c).copy_(_strided_rows(x, i, r0, r1, stride).permute(1, 2, 0))
            base = (i * ho + r0) * wo
            for a, b, t, s in zip(
                _split(gm[base : base + m], kg, 1, groups),
                _split(buf[:m], cg, 1, groups),
                tmp,
                accs,
                strict=True,
            ):
                mm(a.t(), b, t)
                s.add_(t)
        return gw.copy_(acc)
    gm = grad.view(n, k, ho * wo)
    if stride == (1, 1):
        xm = x.view(n, c, ho * wo)
        for i in range(n):  # image by image: never an N x K x C temporary
            for a, b, t, s in zip(
                _split(gm[i], kg, 0, groups), _split(xm[i], cg, 0, groups), tmp, accs, strict=True
            ):
                mm(a, b.t(), t)
                s.add_(t)
        return gw.copy_(acc)
    rows, blocks = _row_blocks(x, n, ho, c * wo)
    buf = x.new_empty((c, rows * wo))
    for i, r0, r1 in blocks:
        m = (r1 - r0) * wo
        buf[:, :m].view(c, r1 - r0, wo).copy_(_strided_rows(x, i, r0, r1, stride))
        for a, b, t, s in zip(
            _split(gm[i, :, r0 * wo : r1 * wo], kg, 0, groups),
            _split(buf[:, :m], cg, 0, groups),
            tmp,
            accs,
            strict=True,
        ):
            mm(a, b.t(), t)
            s.add_(t)
    return gw.copy_(acc)


def _onednn_backward(
    grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, which: int
) -> Tensor:
    mask = [which == 0, which == 1, False]
    w4 = w.view(*w.shape, 1, 1)
    res = torch.ops.aten.convolution_backward(
        grad, x, w4, None, list(stride), [0, 0], [1, 1], False, [0, 0], groups, mask
    )
    return res[which] if which == 0 else res[1].view(w.shape)


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
        channels_last: bool,
    ) -> Tensor:
        fmt = _format(channels_last)
        if not x.is_contiguous(memory_format=fmt):
            x = x.contiguous(memory_format=fmt)  # an unusual input (a sliced view, say): packed once
        w = w.contiguous()
        y = _forward(x, w, bias, stride, groups, activation, channels_last)
        ctx.save_for_backward(x, w, y if activation is not None else None)
        ctx.conf = (stride, groups, activation, bias is not None, channels_last)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, y = ctx.saved_tensors
        stride, groups, activation, has_bias, channels_last = ctx.conf
        fmt = _format(channels_last)
        grad = _activation_grad(grad, y, activation)
        if not grad.is_contiguous(memory_format=fmt):
            grad = grad.contiguous(memory_format=fmt)
        key = (channels_last, *x.shape, w.shape[0], stride, groups)
        onednn = _onednn_ok(x, w, channels_last)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            shape = tuple(x.shape)
            cands = _gemm_candidates(
                grad, lambda mm: _grad_input_gemm(mm, grad, w, shape, stride, groups, channels_last)
            )
            if onednn:
                cands["onednn"] = lambda: _onednn_backward(grad, x, w, stride, groups, 0)
            gx = _fastest(("grad_input", *key), grad, cands)
        if ctx.needs_input_grad[1]:
            cands = _gemm_candidates(
                grad, lambda mm: _grad_weight_gemm(mm, grad, x, stride, groups, channels_last)
            )
            if onednn:
                cands["onednn"] = lambda: _onednn_backward(grad, x, w, stride, groups, 1)
            gw = _fastest(("grad_weight", *key), grad, cands)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None, None


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
        x.requires_grad or w.requires_grad or (bias is not None and bias.requires_grad)
    )
    if not needs_grad:  # inference: no autograd bookkeeping, nothing saved
        return _forward(x, w, bias, stride_pair, groups, activation, channels_last)
    y: Tensor = _Conv1x1Function.apply(x, w, bias, stride_pair, groups, activation, channels_last)
    return y
