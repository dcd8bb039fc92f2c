"""float16 / bfloat16 products computed in float32 on PyTorch's BLAS, block by block ("widened").

A CPU without bfloat16 arithmetic (no AVX512_BF16, no AMX) runs PyTorch's and oneDNN's bfloat16
products emulated: on the Zen 3 VM 19 GFLOP/s, against 150 and more in float32 (BENCHMARKS.md).
Here each block of an operand is widened to float32, multiplied on PyTorch's float32 BLAS into a
float32 scratch and rounded into the output once: float32 sums, as the low-precision GEMMs make
them. The widened blocks and their product live in a workspace of fixed size kept between calls
(workspace.py), so a call allocates nothing of its operands' size; NCHW images go joined side by
side (joined.py). A candidate like the others (passes.py): timed,
so it runs only where it wins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import workspace
from .joined import _joined

_LOW = (torch.float16, torch.bfloat16)


def widened_ok(x: Tensor) -> bool:
    """The widened products apply: a float16 / bfloat16 tensor on the CPU."""
    return x.is_cpu and x.dtype in _LOW


def _mm_widened(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out = a @ b in float32: 2-D, or batches of images in b and out (a shared, or batched too)."""
    if out.dim() == 2:
        _mm2(a, b, out)
    elif a.dim() == 3:  # grad_W's products, image by image
        for i in range(out.shape[0]):
            _mm2(a[i], b[i], out[i])
    elif not _joined(a, b, out):
        for i in range(out.shape[0]):  # an image too large for the workspace: on its own, in blocks
            _mm2(a, b[i], out[i])


def _mm2(a: Tensor, b: Tensor, out: Tensor) -> None:
    m, r = a.shape
    n = b.shape[1]
    if out.numel() == 0:
        return
    if r == 0:
        out.zero_()
        return
    cap = workspace.floats()
    if r > max(m, n) and m * n <= cap // 2:  # the sum over the long side (grad_W: pixels), in blocks
        step = max(1, (cap - m * n) // (m + n))
        for r0 in range(0, r, step):
            r1 = min(r, r0 + step)
            acc, aw, bw = workspace.parts((m, n), (m, r1 - r0), (r1 - r0, n))
            aw.copy_(a[:, r0:r1])
            bw.copy_(b[r0:r1])
            if r0:
                acc.addmm_(aw, bw)
            else:
                torch.mm(aw, bw, out=acc)
        out.copy_(acc)
        return
    # the shorter of a's rows and b's columns whole while its widened copy takes at most half the
    # workspace, else in blocks of half of it (the outer loop); the longer side in blocks of the rest
    wide = m >= n  # a's rows are the long side
    short, long_ = (n, m) if wide else (m, n)
    sb = min(short, short if short * r <= cap // 2 else max(1, cap // 2 // r))
    lb = min(long_, max(1, (cap - sb * r) // (r + sb)))
    for s0 in range(0, short, sb):
        s1 = min(short, s0 + sb)
        for l0 in range(0, long_, lb):
            l1 = min(long_, l0 + lb)
            if wide:
                bw, aw, prod = workspace.parts((r, s1 - s0), (l1 - l0, r), (l1 - l0, s1 - s0))
                if l0 == 0:
                    bw.copy_(b[:, s0:s1])  # stays where it is while the long side's blocks pass
                aw.copy_(a[l0:l1])
                torch.mm(aw, bw, out=prod)
                out[l0:l1, s0:s1].copy_(prod)
            else:
                aw, bw, prod = workspace.parts((s1 - s0, r), (r, l1 - l0), (s1 - s0, l1 - l0))
                if l0 == 0:
                    aw.copy_(a[s0:s1])
                bw.copy_(b[:, l0:l1])
                torch.mm(aw, bw, out=prod)
                out[s0:s1, l0:l1].copy_(prod)
