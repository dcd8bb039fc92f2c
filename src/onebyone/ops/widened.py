"""float16 / bfloat16 products computed in float32 on PyTorch's BLAS, block by block ("widened").

A CPU without bfloat16 arithmetic (no AVX512_BF16, no AMX) runs PyTorch's and oneDNN's bfloat16
products emulated: on the Zen 3 VM 19 GFLOP/s, against 150 and more in float32 (BENCHMARKS.md).
Here each block of an operand is widened to float32, multiplied on PyTorch's float32 BLAS into a
float32 scratch and rounded into the output once: float32 sums, as the low-precision GEMMs make
them. The widened blocks and their product stay within a share of the larger operand's size, so a
forward keeps the op's memory budget. A candidate like the others (passes.py): timed, so it runs
only where it wins.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LOW = (torch.float16, torch.bfloat16)
# The widened blocks and their float32 product at most this share of the larger operand's bytes
# (and at most _MAX_BYTES: blocks that stay in cache), with at least one row or column a block
_SHARE = 1 / 12
_MAX_BYTES = 2 * 2**20


def widened_ok(x: Tensor) -> bool:
    """The widened products apply: a float16 / bfloat16 tensor on the CPU."""
    return x.is_cpu and x.dtype in _LOW


def _mm_widened(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out = a @ b in float32: 2-D, or batches of images in b and out (a shared, or batched too)."""
    cap = _budget(a, b)
    if out.dim() == 2:
        _mm2(a, b, out, cap)
    elif a.dim() == 3:  # grad_W's products, image by image
        for i in range(out.shape[0]):
            _mm2(a[i], b[i], out[i], cap)
    else:
        _mm_images(a, b, out, cap)


def _budget(a: Tensor, b: Tensor) -> int:
    """float32 elements the widened blocks and their product may take together."""
    larger = max(a.numel(), b.numel()) * a.element_size()
    return int(min(_MAX_BYTES, larger * _SHARE)) // 4


def _mm_images(a: Tensor, b: Tensor, out: Tensor, cap: int) -> None:
    """W (M x R) @ X[i] (R x P) for every image i: blocks of W's rows, each over runs of whole images
    (one batched product a run); an image too large for a run goes on its own, in blocks."""
    m, r = a.shape
    images, _, p = b.shape
    mb = m if m * r <= cap // 2 else max(1, cap // 2 // r)
    run = (cap - mb * r) // (r * p + mb * p)  # images a run: each widened, and its product
    if run < 1:
        for i in range(images):
            _mm2(a, b[i], out[i], cap)
        return
    run = min(run, images)
    scratch = torch.empty(run * mb * p, dtype=torch.float32)
    for m0 in range(0, m, mb):
        m1 = min(m, m0 + mb)
        aw = a[m0:m1].float()
        for i0 in range(0, images, run):
            i1 = min(images, i0 + run)
            prod = scratch[: (i1 - i0) * (m1 - m0) * p].view(i1 - i0, m1 - m0, p)
            torch.matmul(aw, b[i0:i1].float(), out=prod)
            out[i0:i1, m0:m1].copy_(prod)


def _mm2(a: Tensor, b: Tensor, out: Tensor, cap: int) -> None:
    m, r = a.shape
    n = b.shape[1]
    if out.numel() == 0:
        return
    if r == 0:
        out.zero_()
        return
    if r > max(m, n) and m * n <= cap // 2:  # the sum over the long side (grad_W: pixels), in blocks
        step = max(1, (cap - m * n) // (m + n))
        acc = torch.zeros((m, n), dtype=torch.float32)
        for r0 in range(0, r, step):
            acc.addmm_(a[:, r0 : r0 + step].float(), b[r0 : r0 + step].float())
        out.copy_(acc)
        return
    # the shorter of a's rows and b's columns whole while its widened copy takes at most half the
    # budget, else in blocks of half of it (the outer loop: each widened once); the longer side in
    # blocks of what is left
    short, long_ = (n, m) if m >= n else (m, n)
    sb = short if short * r <= cap // 2 else max(1, cap // 2 // r)
    lb = max(1, (cap - sb * r) // (r + sb))
    sb, lb = min(sb, short), min(lb, long_)
    scratch = torch.empty(sb * lb, dtype=torch.float32)
    for s0 in range(0, short, sb):
        s1 = min(short, s0 + sb)
        sw = b[:, s0:s1].float() if m >= n else a[s0:s1].float()
        for l0 in range(0, long_, lb):
            l1 = min(long_, l0 + lb)
            if m >= n:  # a's rows are the long side
                prod = scratch[: (l1 - l0) * (s1 - s0)].view(l1 - l0, s1 - s0)
                torch.mm(a[l0:l1].float(), sw, out=prod)
                out[l0:l1, s0:s1].copy_(prod)
            else:
                prod = scratch[: (s1 - s0) * (l1 - l0)].view(s1 - s0, l1 - l0)
                torch.mm(sw, b[:, l0:l1].float(), out=prod)
                out[s0:s1, l0:l1].copy_(prod)
