"""float16 / bfloat16 products computed in float32 on PyTorch's BLAS, block by block ("widened").

A CPU without bfloat16 arithmetic (no AVX512_BF16, no AMX) runs PyTorch's and oneDNN's bfloat16
products emulated: on the Zen 3 VM 19 GFLOP/s, against 150 and more in float32 (BENCHMARKS.md).
Here each block of an operand is widened to float32, multiplied on PyTorch's float32 BLAS into a
float32 scratch and rounded into the output once: float32 sums, as the low-precision GEMMs make
them. The widened blocks and their product live in a workspace of fixed size kept between calls,
so a call allocates nothing of its operands' size. A candidate like the others (passes.py): timed,
so it runs only where it wins.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

_LOW = (torch.float16, torch.bfloat16)
# The widened blocks and their float32 product share one workspace of this size a thread, kept
# between calls as BLAS keeps its buffers: blocks that stay in cache, whatever the call's size (a
# budget of a share of the operand cut the slices the choice is timed on into blocks of a few
# rows, ten times slower than the whole call's, and the slices ranked it last)
_WORKSPACE_BYTES = 2 * 2**20
_local = threading.local()


def widened_ok(x: Tensor) -> bool:
    """The widened products apply: a float16 / bfloat16 tensor on the CPU."""
    return x.is_cpu and x.dtype in _LOW


def _workspace(floats: int) -> Tensor:
    ws: Tensor | None = getattr(_local, "ws", None)
    if ws is None or ws.numel() < floats:
        ws = _local.ws = torch.empty(floats, dtype=torch.float32)
    return ws


def _parts(*shapes: tuple[int, ...]) -> list[Tensor]:
    """Float32 views of the workspace, one a shape, side by side."""
    sizes = [math.prod(s) for s in shapes]
    ws = _workspace(sum(sizes))
    out, at = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(ws[at : at + size].view(shape))
        at += size
    return out


def _mm_widened(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out = a @ b in float32: 2-D, or batches of images in b and out (a shared, or batched too)."""
    if out.dim() == 2:
        _mm2(a, b, out)
    elif a.dim() == 3:  # grad_W's products, image by image
        for i in range(out.shape[0]):
            _mm2(a[i], b[i], out[i])
    else:
        _mm_images(a, b, out)


def _mm_images(a: Tensor, b: Tensor, out: Tensor) -> None:
    """W (M x R) @ X[i] (R x P) for every image i: blocks of W's rows, each over runs of whole images
    (one batched product a run); an image too large for a run goes on its own, in blocks."""
    m, r = a.shape
    images, _, p = b.shape
    cap = _WORKSPACE_BYTES // 4
    mb = m if m * r <= cap // 2 else max(1, cap // 2 // r)
    run = min(images, (cap - mb * r) // (r * p + mb * p))  # images a run: each widened, and its product
    if run < 1:
        for i in range(images):
            _mm2(a, b[i], out[i])
        return
    for m0 in range(0, m, mb):
        m1 = min(m, m0 + mb)
        for i0 in range(0, images, run):
            i1 = min(images, i0 + run)
            aw, xw, prod = _parts((m1 - m0, r), (i1 - i0, r, p), (i1 - i0, m1 - m0, p))
            aw.copy_(a[m0:m1])  # again each run: the workspace holds one run at a time
            xw.copy_(b[i0:i1])
            torch.matmul(aw, xw, out=prod)
            out[i0:i1, m0:m1].copy_(prod)


def _mm2(a: Tensor, b: Tensor, out: Tensor) -> None:
    m, r = a.shape
    n = b.shape[1]
    if out.numel() == 0:
        return
    if r == 0:
        out.zero_()
        return
    cap = _WORKSPACE_BYTES // 4
    if r > max(m, n) and m * n <= cap // 2:  # the sum over the long side (grad_W: pixels), in blocks
        step = max(1, (cap - m * n) // (m + n))
        for r0 in range(0, r, step):
            r1 = min(r, r0 + step)
            acc, aw, bw = _parts((m, n), (m, r1 - r0), (r1 - r0, n))
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
                bw, aw, prod = _parts((r, s1 - s0), (l1 - l0, r), (l1 - l0, s1 - s0))
                if l0 == 0:
                    bw.copy_(b[:, s0:s1])  # stays where it is while the long side's blocks pass
                aw.copy_(a[l0:l1])
                torch.mm(aw, bw, out=prod)
                out[l0:l1, s0:s1].copy_(prod)
            else:
                aw, bw, prod = _parts((s1 - s0, r), (r, l1 - l0), (s1 - s0, l1 - l0))
                if l0 == 0:
                    aw.copy_(a[s0:s1])
                bw.copy_(b[:, l0:l1])
                torch.mm(aw, bw, out=prod)
                out[s0:s1, l0:l1].copy_(prod)
