"""Workspaces a thread, of fixed size, kept between calls (as BLAS keeps its buffers): float32
blocks of the widened and joined products (widened.py, joined.py), and the kept pixels of a
strided input gathered block by block (views.py). A call allocates nothing of its operands' size
for them, and a block's size does not shrink with the slice a choice is timed on."""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

# Blocks of this size stay in the last-level caches of the machines seen (16 MiB and more) and
# are large enough for full-speed GEMMs: on the Zen 3, 2 MiB ran NCHW 2048x7x7->512 at batch 32 in
# runs of 4 images at 24.9 ms, 4 MiB in runs of 8 at 20.5 ms, the batched product 28.3 (BENCHMARKS.md)
WORKSPACE_BYTES = 4 * 2**20
_local = threading.local()


def floats() -> int:
    """The product workspace's size in float32 elements: what one product's blocks take together."""
    return WORKSPACE_BYTES // 4


def _buffer(name: str, nbytes: int) -> Tensor:
    """This thread's workspace ``name``, at least nbytes, allocated whole on first use (a timing
    slice's smaller blocks must not leave the first whole call a larger one to fault in)."""
    ws: Tensor | None = getattr(_local, name, None)
    if ws is None or ws.numel() < nbytes:
        ws = torch.empty(-(-max(nbytes, WORKSPACE_BYTES) // 8) * 8, dtype=torch.uint8)  # any dtype's view
        setattr(_local, name, ws)
    return ws


def parts(*shapes: tuple[int, ...]) -> list[Tensor]:
    """Float32 views of the product workspace, one a shape, side by side."""
    sizes = [math.prod(s) for s in shapes]
    ws = _buffer("ws", 4 * sum(sizes)).view(torch.float32)
    out, at = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(ws[at : at + size].view(shape))
        at += size
    return out


def gathered(elems: int, dtype: torch.dtype) -> Tensor:
    """A flat buffer of elems values of dtype for a strided input's gathered pixels (a workspace of
    its own: the product that reads them may use the product workspace)."""
    size = torch.empty((), dtype=dtype).element_size()
    return _buffer("gather", elems * size).view(dtype)[:elems]
