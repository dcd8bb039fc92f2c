"""A float32 workspace a thread, of fixed size, kept between calls (as BLAS keeps its buffers):
where the widened and joined products (widened.py, joined.py) put their blocks, so that a call
allocates nothing of its operands' size, and a block's size does not shrink with the slice a
choice is timed on."""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

# Blocks of this size stay in the last-level caches of the machines seen (16 MiB and more) and
# are large enough for full-speed GEMMs: 2 MiB ran NCHW 2048x7x7->512 at batch 32 in runs of 4
# images at 24.9 ms, 4 MiB in runs of 8 at 20.5 ms, the batched product 28.3 (BENCHMARKS.md)
WORKSPACE_BYTES = 4 * 2**20
_local = threading.local()


def floats() -> int:
    """The workspace's size in float32 elements: what the blocks of one product may take together."""
    return WORKSPACE_BYTES // 4


def parts(*shapes: tuple[int, ...]) -> list[Tensor]:
    """Float32 views of the workspace, one a shape, side by side (it grows if they need more)."""
    sizes = [math.prod(s) for s in shapes]
    ws: Tensor | None = getattr(_local, "ws", None)
    if ws is None or ws.numel() < sum(sizes):  # whole at once: a timing slice's smaller blocks
        # must not leave the first whole call a larger one to allocate and fault in
        ws = _local.ws = torch.empty(max(sum(sizes), floats()), dtype=torch.float32)
    out, at = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(ws[at : at + size].view(shape))
        at += size
    return out
