"""The caller's tensors as the matrices the products see, and the gathered blocks a stride needs.

A 1x1 convolution never looks at a pixel's neighbours, so it is a matrix product in disguise.
Which product depends on where the channels sit in memory:

* NCHW (contiguous): each image is a C x (H*W) matrix; the output image is
  W (K x C) @ X (C x H*W). One batched product, no im2col, no copy of the input.
* channels_last (NHWC in memory): the whole batch is one (N*H*W) x C matrix; the
  output is X @ W^T, one product whose result is already channels_last.

Groups are blocks of the same matrices. With stride > 1 the kept pixels are no longer evenly
spaced in memory (NCHW) or not one matrix (channels_last), so they are gathered a few rows at a
time into a small buffer (see _blocks).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import workspace


def _format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _split(t: Tensor, size: int, dim: int, groups: int) -> tuple[Tensor, ...]:
    """The groups' blocks of t along dim (views); t itself when there is one group."""
    return (t,) if groups == 1 else t.split(size, dim)


def _matrix(t: Tensor, channels_last: bool) -> Tensor:
    """t (N x C x H x W) as the matrix the GEMMs see: (N*H*W) x C channels_last, N x C x (H*W) NCHW."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(n * h * w, c) if channels_last else t.view(n, c, h * w)


# With stride > 1 the kept pixels are no longer evenly spaced in memory (NCHW) or not one
# matrix (channels_last), so a GEMM cannot read them in place. They are gathered block by
# block (whole images when they fit, else a few output rows of one image) into a workspace kept
# between calls (workspace.py): the subsampled input is never copied whole, and a call allocates
# nothing for it. (A bigger buffer makes bigger, faster GEMMs on a single image: 1.34 ms at 1/16
# of the input, 1.24 ms at 1/11 and 1.12 ms at 1/4 for ResNet-50's 256x56x56 -> 512 stride-2
# shortcut, where a buffer of 1/12 of the input once kept the op's extra memory under 10%.)

# grad_W's per-image products (gemm.py) land in a scratch of at most 1/12 of the input
_PACK_SHARE = 12

Block = tuple[int, int, int, int]  # images i0:i1, output rows r0:r1


def _blocks(x: Tensor, n: int, ho: int, row_elems: int) -> tuple[int, list[Block]]:
    """The buffer's size in output rows, and the blocks that fill it in turn."""
    row = row_elems * x.element_size()
    budget = max(row, workspace.WORKSPACE_BYTES)
    if ho * row <= budget:  # whole images, as many as fit
        step = budget // (ho * row)
        return step * ho, [(i, min(n, i + step), 0, ho) for i in range(0, n, step)]
    step = budget // row
    return step, [(i, i + 1, r0, min(ho, r0 + step)) for i in range(n) for r0 in range(0, ho, step)]


def _strided(x: Tensor, blk: Block, stride: tuple[int, int]) -> Tensor:
    """The input pixels that feed block blk's outputs: images x C x rows x W' (a view)."""
    (i0, i1, r0, r1), (sh, sw) = blk, stride
    return x[i0:i1, :, r0 * sh : (r1 - 1) * sh + 1 : sh, ::sw]


def _pack(
    x: Tensor, buf: Tensor, blk: Block, stride: tuple[int, int], wo: int, channels_last: bool
) -> Tensor:
    """Block blk's input pixels copied into buf: (pixels x C) channels_last, (images x C x pixels) NCHW."""
    i0, i1, r0, r1 = blk
    nb, rows, c = i1 - i0, r1 - r0, x.shape[1]
    if channels_last:
        packed = buf[: nb * rows * wo * c].view(nb * rows * wo, c)  # pixels x C
        packed.view(nb, rows, wo, c).copy_(_strided(x, blk, stride).permute(0, 2, 3, 1))
        return packed
    packed = buf[: nb * c * rows * wo].view(nb, c, rows * wo)
    packed.view(nb, c, rows, wo).copy_(_strided(x, blk, stride))
    return packed


def _block_rows(ym: Tensor, blk: Block, ho: int, wo: int, channels_last: bool) -> Tensor:
    """Block blk's part of an output matrix: pixels x K (channels_last) or images x K x pixels (NCHW)."""
    i0, i1, r0, r1 = blk
    if channels_last:
        return ym[(i0 * ho + r0) * wo : ((i1 - 1) * ho + r1) * wo]  # consecutive pixels of the batch
    return ym[i0:i1, :, r0 * wo : r1 * wo]

