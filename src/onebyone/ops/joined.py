"""NCHW images joined side by side: W (M x R) @ X[i] (R x P) for every image i as one GEMM a run of
images, W @ [X[i0] ... X[i1]] (R x run*P), in the workspace (workspace.py).

PyTorch's batched product runs one small GEMM an image: on 7 x 7 images, P = 49 columns, where
MKL runs far from its peak (NCHW 2048x7x7->512 at batch 32: 28.3 ms batched, 20.5 ms in joined runs
of 8 images, on the Zen 3 VM). The joining copies the run's images into the workspace and the
run's product out of it; float16 / bfloat16 are widened to float32 on the way (widened.py).
grad_W joins dY's and X's images alike, and sums one product a run. A candidate of its own for
float32 ("joined", passes.py): timed, so it runs only where it wins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import workspace
from .gemm import _grad_weight_gemm, _mm_torch
from .pool import _new_output


def joined_ok(x: Tensor, channels_last: bool) -> bool:
    """The joined product applies: a float32 NCHW batch of images of more than one pixel, on the CPU."""
    return x.is_cpu and x.dtype is torch.float32 and not channels_last and x.shape[0] > 1 \
        and x.shape[2] * x.shape[3] > 1


def _mm_joined(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out = a @ b: batches of images (a shared) joined side by side, anything else on PyTorch's BLAS."""
    if out.dim() != 3 or a.dim() != 2 or not _joined(a, b, out):
        _mm_torch(a, b, out)


def _joined(a: Tensor, b: Tensor, out: Tensor) -> bool:
    """out[i] = a @ b[i] for every image, in runs joined side by side; False (nothing done) where
    one image does not fit the workspace. a other than float32 is widened block by block too."""
    m, r = a.shape
    images, _, p = b.shape
    cap = workspace.floats()
    widen = a.dtype is not torch.float32
    mb = m if not widen or m * r <= cap // 2 else max(1, cap // 2 // r)  # a's rows widened a block
    room = cap - (mb * r if widen else 0)
    run = min(images, room // (r * p + mb * p))  # images a run: joined, and their product
    if run < 1 or p == 0:
        return False
    for m0 in range(0, m, mb):
        m1 = min(m, m0 + mb)
        for i0 in range(0, images, run):
            i1 = min(images, i0 + run)
            shapes = [(r, i1 - i0, p), (m1 - m0, i1 - i0, p)] + [(m1 - m0, r)] * widen
            xw, prod, *aw = workspace.parts(*shapes)
            xw.copy_(b[i0:i1].transpose(0, 1))
            if aw:
                aw[0].copy_(a[m0:m1])  # again each run: the workspace holds one run at a time
            torch.mm(aw[0] if aw else a[m0:m1], xw.view(r, -1), out=prod.view(m1 - m0, -1))
            out[i0:i1, m0:m1].copy_(prod.transpose(0, 1))
    return True


def _grad_weight_joined(grad: Tensor, x: Tensor, groups: int) -> Tensor:
    """grad_W = sum over images of dY[i] @ X[i]^T at stride 1, as [dY[i0] ... dY[i1]] @ [X[i0] ...
    X[i1]]^T a run: one GEMM a run and group, summed into grad_W (the sum runs over run*P pixels,
    not P)."""
    n, k, ho, wo = grad.shape
    c, p = x.shape[1], ho * wo
    cg, kg = c // groups, k // groups
    run = min(n, workspace.floats() // ((k + c) * p)) if p else 0
    if run < 1:  # an image too large for the workspace: image by image
        return _grad_weight_gemm(_mm_torch, grad, x, (1, 1), groups, False)
    gw = _new_output((k, cg), grad, False)
    g3, x3 = grad.view(n, k, p), x.view(n, c, p)
    for i0 in range(0, n, run):
        i1 = min(n, i0 + run)
        gj, xj = workspace.parts((k, i1 - i0, p), (c, i1 - i0, p))
        gj.copy_(g3[i0:i1].transpose(0, 1))
        xj.copy_(x3[i0:i1].transpose(0, 1))
        gm, xm = gj.view(k, -1), xj.view(c, -1)
        for g in range(groups):
            a, b, out = gm[g * kg : (g + 1) * kg], xm[g * cg : (g + 1) * cg], gw[g * kg : (g + 1) * kg]
            if i0 == 0:
                torch.mm(a, b.t(), out=out)
            else:
                out.addmm_(a, b.t())
    return gw
