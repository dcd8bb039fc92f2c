"""NCHW images joined side by side: W (M x R) @ X[i] (R x P) for every image i as one GEMM a run of
images, W @ [X[i0] ... X[i1]] (R x run*P), in the workspace (workspace.py).

PyTorch's batched product runs one small GEMM an image: on 7 x 7 images, P = 49 columns, where
MKL runs far from its peak (NCHW 2048x7x7->512 at batch 32: 28.3 ms batched, 20.5 ms in joined runs
of 8 images, on the Zen 3 VM). The joining copies the run's images into the workspace and the
run's product out of it; float16 / bfloat16 are widened to float32 on the way (widened.py). A
candidate of its own for float32 ("joined", passes.py): timed, so it runs only where it wins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import workspace
from .gemm import _mm_torch


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
