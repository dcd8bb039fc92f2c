"""The passes as products on PyTorch's BLAS (or NumPy's, by name), on views of the caller's tensors.

The products write straight into the output, so a forward pass allocates its output and nothing
of the input's size. Backward reuses the same views: grad_x = W^T @ grad_y, grad_W = sum over
images of grad_y @ X^T.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import workspace
from .pool import MIN_BYTES, _new_output
from .views import _PACK_SHARE, _block_rows, _blocks, _matrix, _pack, _split, _strided

# Every product below is out = a @ b on 2-D (or batched 3-D) views of the caller's tensors,
# written straight into the result: no operand is copied into another layout.
#
# NumPy's BLAS (OpenBLAS, reached without a copy through .numpy() on the very same memory) is a
# second way, faster per core on many of these shapes; but its worker threads keep spinning after
# each call, and so do PyTorch's OpenMP threads, so every switch between the two libraries costs
# milliseconds while the pools fight over the cores (a forward on NumPy and a backward on PyTorch
# measured 7.3 ms against 0.6 ms on one library). It runs only when asked for by name.

Matmul = Callable[[Tensor, Tensor, Tensor], None]


_LOW = (torch.float16, torch.bfloat16)
# PyTorch's batched matmul in float16/bfloat16 copies a 2-D left operand once for every matrix of
# the batch (measured: 64 MiB for a 1024 x 1024 bfloat16 weight over 32 images of 1024 x 49, 20
# times the input); the batch is cut into runs of matrices whose copies stay within the op's memory
# budget
_EXPAND_SHARE = 0.1


def _mm_torch(a: Tensor, b: Tensor, out: Tensor) -> None:
    if out.dim() == 2:
        torch.mm(a, b, out=out)
    elif out.shape[0] == 1 and a.dim() == 2:  # one image: a plain GEMM skips the batched dispatch
        torch.mm(a, b[0], out=out[0])
    elif not out.is_contiguous():
        _mm_torch_images(a, b, out)
    elif a.dim() == 2 and a.dtype in _LOW:  # batches of as many matrices as the copies of a allow
        step = int(_EXPAND_SHARE * b.numel() // a.numel())
        if step <= 1:
            _mm_torch_images(a, b, out)
        else:
            for i in range(0, out.shape[0], step):
                torch.matmul(a, b[i : i + step], out=out[i : i + step])
    else:
        torch.matmul(a, b, out=out)


def _mm_torch_images(a: Tensor, b: Tensor, out: Tensor) -> None:
    """One plain GEMM per matrix of the batch (PyTorch's bfloat16 batched product runs a 2048 x 512
    weight over 32 images of 7 x 7 six times slower than 32 GEMMs: a candidate of its own)."""
    if out.dim() == 2:
        torch.mm(a, b, out=out)
        return
    for i in range(out.shape[0]):
        torch.mm(a if a.dim() == 2 else a[i], b if b.dim() == 2 else b[i], out=out[i])


def _mm_numpy(a: Tensor, b: Tensor, out: Tensor) -> None:
    # .numpy() shares memory with the tensor; np.matmul hands strided views straight to sgemm
    np.matmul(a.detach().numpy(), b.detach().numpy(), out=out.detach().numpy())


def _finished(y: Tensor, bias: Tensor | None, activation: str | None, channels_last: bool) -> Tensor:
    """y with the bias and the activation applied in place (if any): no extra tensor."""
    if bias is not None or activation is not None:
        _epilogue_(_matrix(y, channels_last), bias, activation, channels_last)
    return y


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
    small = n * k * h * wd * x.element_size() < MIN_BYTES  # so its output is not from the pool
    if small and mm is _mm_torch and channels_last and stride == (1, 1) and groups == 1:
        # F.linear's C++ path is the same GEMM with less Python around it (38 against 46 us on
        # 192x28x28->16)
        return F.linear(x.permute(0, 2, 3, 1), w).permute(0, 3, 1, 2)
    y = _new_output((n, k, ho, wo), x, channels_last)
    if y.numel() == 0:
        return y
    if stride == (1, 1) and groups == 1:  # the common case, in one call
        if channels_last or h * wd == 1:  # (1 x 1 images: both layouts are the same N x C matrix)
            mm(_matrix(x, True), w.t(), _matrix(y, True))  # X (NHW x C) @ W^T (C x K)
        elif n == 1:
            mm(w, x.view(c, h * wd), y.view(k, h * wd))  # W (K x C) @ X (C x HW)
        else:
            mm(w, x.view(n, c, h * wd), y.view(n, k, h * wd))  # W (K x C) @ X (N x C x HW)
        return y
    ym = _matrix(y, channels_last)

    def product(xm: Tensor, out: Tensor) -> None:
        if channels_last:  # X_g (pixels x C/G) @ W_g^T (C/G x K/G) -> Y_g, a column block
            for a, b, o in zip(
                _split(xm, cg, 1, groups),
                _split(w.t(), kg, 1, groups),
                _split(out, kg, 1, groups),
                strict=True,
            ):
                mm(a, b, o)
        else:  # W_g (K/G x C/G) @ X[:, g] (images x C/G x pixels) -> Y[:, g]
            for a, b, o in zip(
                _split(w, kg, 0, groups), _split(xm, cg, 1, groups), _split(out, kg, 1, groups), strict=True
            ):
                mm(a, b, o)

    if stride == (1, 1):
        product(_matrix(x, channels_last), ym)  # the input as it lies in memory: no copy
        return y
    rows, blocks = _blocks(x, n, ho, c * wo)
    buf = workspace.gathered(rows * wo * c, x.dtype)
    for blk in blocks:
        product(_pack(x, buf, blk, stride, wo, channels_last), _block_rows(ym, blk, ho, wo, channels_last))
    return y

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
    c = in_shape[1]
    cg, kg = c // groups, k // groups
    if (
        mm is _mm_torch
        and channels_last
        and stride == (1, 1)
        and groups == 1
        and grad.numel()
        and math.prod(in_shape) * grad.element_size() < MIN_BYTES
    ):  # a small result (not from the pool): torch's own allocation, one call, less Python
        return torch.mm(_matrix(grad, True), w).view(n, ho, wo, c).permute(0, 3, 1, 2)
    gx = _new_output(in_shape, grad, channels_last)
    if stride == (1, 1) and groups == 1 and gx.numel():  # the common case, in one call
        if channels_last or ho * wo == 1:  # (1 x 1 images: both layouts are the same N x K matrix)
            mm(_matrix(grad, True), w, _matrix(gx, True))  # dY (NHW x K) @ W (K x C)
        else:
            mm(w.t(), grad.view(n, k, ho * wo), gx.view(n, c, ho * wo))  # W^T (C x K) @ dY (N x K x HW)
        return gx
    if stride != (1, 1):
        gx.zero_()  # the skipped pixels
    if gx.numel() == 0 or grad.numel() == 0:
        return gx
    gm = _matrix(grad, channels_last)

    def product(gmb: Tensor, out: Tensor) -> None:
        if channels_last:  # dY_g (pixels x K/G) @ W_g (K/G x C/G) -> dX_g, a column block
            for a, b, o in zip(
                _split(gmb, kg, 1, groups), _split(w, kg, 0, groups), _split(out, cg, 1, groups), strict=True
            ):
                mm(a, b, o)
        else:  # W_g^T (C/G x K/G) @ dY[:, g] (images x K/G x pixels) -> dX[:, g]
            for a, b, o in zip(
                _split(w, kg, 0, groups), _split(gmb, kg, 1, groups), _split(out, cg, 1, groups), strict=True
            ):
                mm(a.t(), b, o)

    if stride == (1, 1):
        product(gm, _matrix(gx, channels_last))
        return gx
    rows, blocks = _blocks(gx, n, ho, c * wo)
    buf = workspace.gathered(rows * wo * c, gx.dtype)
    for blk in blocks:
        i0, i1, r0, r1 = blk
        nb, nr = i1 - i0, r1 - r0
        if channels_last:
            out = buf[: nb * nr * wo * c].view(nb * nr * wo, c)
            product(_block_rows(gm, blk, ho, wo, True), out)
            _strided(gx, blk, stride).permute(0, 2, 3, 1).copy_(out.view(nb, nr, wo, c))
        else:
            out = buf[: nb * c * nr * wo].view(nb, c, nr * wo)
            product(_block_rows(gm, blk, ho, wo, False), out)
            _strided(gx, blk, stride).copy_(out.view(nb, c, nr, wo))
    return gx


def _grad_weight_gemm(
    mm: Matmul, grad: Tensor, x: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W = sum over every kept pixel of grad_y (K) times x (C), per group: one K/G x C/G block each."""
    n, k, ho, wo = grad.shape
    c = x.shape[1]
    cg, kg = c // groups, k // groups
    if (
        mm is _mm_torch
        and stride == (1, 1)
        and groups == 1
        and (channels_last or n == 1)
        and grad.numel()
        and c
        and k * c * grad.element_size() < MIN_BYTES
    ):  # a small result (not from the pool): torch's own allocation, one call, less Python
        if channels_last:
            return torch.mm(_matrix(grad, True).t(), _matrix(x, True))  # dY^T (K x NHW) @ X (NHW x C)
        return torch.mm(grad.view(k, ho * wo), x.view(c, ho * wo).t())  # dY (K x HW) @ X^T (HW x C)
    gw = _new_output((k, cg), grad, False)
    if grad.numel() == 0 or cg == 0:
        return gw.zero_()
    gm = _matrix(grad, channels_last)
    if channels_last and stride == (1, 1):  # the whole batch is one matrix: one GEMM per group
        for a, b, o in zip(
            _split(gm, kg, 1, groups),
            _split(_matrix(x, True), cg, 1, groups),
            _split(gw, kg, 0, groups),
            strict=True,
        ):
            mm(a.t(), b, o)  # dY_g^T (K/G x NHW) @ X_g (NHW x C/G)
        return gw
    if not channels_last and stride == (1, 1) and n == 1:  # one image: one GEMM per group
        for a, b, o in zip(
            _split(gm[0], kg, 0, groups),
            _split(_matrix(x, False)[0], cg, 0, groups),
            _split(gw, kg, 0, groups),
            strict=True,
        ):
            mm(a, b.t(), o)  # dY_g (K/G x HW) @ X_g^T (HW x C/G)
        return gw
    # A sum of products over blocks (and, NCHW, over the images of a block): each product lands in
    # a scratch (either BLAS can fill it) of at most 1/12 of the input, and is added to the total,
    # which float16/bfloat16 keep in float32.
    low = grad.dtype in (torch.float16, torch.bfloat16)
    acc = torch.zeros((k, cg), dtype=torch.float32, device=grad.device) if low else gw.zero_()
    unit = k * cg * grad.element_size()
    per_scratch = max(1, min(n, max(unit, x.numel() * x.element_size() // _PACK_SHARE) // unit))
    scratch = grad.new_empty((per_scratch if not channels_last else 1, k, cg))

    def accumulate(gmb: Tensor, xmb: Tensor) -> None:
        if channels_last:  # pixels x K and pixels x C: dY^T @ X
            for a, b, o in zip(
                _split(gmb, kg, 1, groups),
                _split(xmb, cg, 1, groups),
                _split(scratch[0], kg, 0, groups),
                strict=True,
            ):
                mm(a.t(), b, o)
            acc.add_(scratch[0])
            return
        for s0 in range(0, gmb.shape[0], per_scratch):  # images x K x P and images x C x P: dY @ X^T
            s1 = min(gmb.shape[0], s0 + per_scratch)
            part = scratch[: s1 - s0]
            for a, b, o in zip(
                _split(gmb[s0:s1], kg, 1, groups),
                _split(xmb[s0:s1], cg, 1, groups),
                _split(part, kg, 1, groups),
                strict=True,
            ):
                mm(a, b.transpose(1, 2), o)
            acc.add_(part.sum(0) if s1 - s0 > 1 else part[0])

    if stride == (1, 1):
        accumulate(gm, _matrix(x, channels_last))
    else:
        rows, blocks = _blocks(x, n, ho, c * wo)
        buf = workspace.gathered(rows * wo * c, x.dtype)
        for blk in blocks:
            accumulate(
                _block_rows(gm, blk, ho, wo, channels_last), _pack(x, buf, blk, stride, wo, channels_last)
            )
    return gw.copy_(acc) if low else gw

