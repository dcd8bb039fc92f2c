"""Output memory that is already mapped: a pool of freed output blocks for conv1x1 on the CPU.

A large new tensor lives in pages the kernel has never handed out (glibc maps every block over its
mmap threshold, 32 MiB at most, afresh and unmaps it on free), and the first write to each 4 KiB
page costs a page fault. On a virtual machine that costs about 1 us a page: writing a fresh
103 MB output (ResNet-50's layer1 expansion at batch 32) took 45 ms of faults on top of a 20 ms
product. A training or inference loop frees such an output and asks for one of the same size on
the next step, so conv1x1 keeps the freed blocks (up to a cap) and hands them out again, mapped.

A block is an anonymous ``mmap``; the tensor borrows it through a ``memoryview`` whose finaliser
gives the block back when the tensor's storage dies (every view of it gone), never earlier. Only
outputs of at least ``MIN_BYTES`` go through the pool: smaller ones are recycled by malloc anyway.
"""

from __future__ import annotations

import collections
import functools
import math
import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable

import torch
from torch import Tensor

from .views import _format

__all__ = ["FRESH_BYTES", "MIN_BYTES", "OutputPool", "default_max_bytes", "fault_seconds"]

#: outputs smaller than this come from torch.empty: malloc's own free lists keep them mapped
MIN_BYTES = 1 << 20

_PAGE = mmap.PAGESIZE

#: glibc's largest mmap threshold on 64-bit systems: a block of at least this size is always a
#: fresh mapping, whose every page faults on first write (a property of the allocator, not of a CPU)
FRESH_BYTES = 32 << 20

_fault: float | None = None


def fault_seconds() -> float:
    """Seconds one page fault of a fresh anonymous mapping costs on this machine: measured once a
    process (best of three runs of 1,024 pages, a few milliseconds), never assumed."""
    global _fault
    if _fault is None:
        import numpy as np

        best = float("inf")
        for _ in range(3):
            block = mmap.mmap(-1, 1024 * _PAGE)
            pages = np.frombuffer(block, dtype=np.uint8)[::_PAGE]
            t0 = time.perf_counter()
            pages[:] = 1  # one write a page: one fault each
            best = min(best, time.perf_counter() - t0)
            del pages
            block.close()
        _fault = best / 1024
    return _fault


def default_max_bytes() -> int:
    """1 GiB, or a sixteenth of the machine's memory where that is less."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return min(1 << 30, ram // 16)


class OutputPool:
    """Freed output blocks by size, least recently freed given up first when over ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: collections.OrderedDict[int, tuple[int, mmap.mmap]] = collections.OrderedDict()
        self._cached = 0
        self._lock = threading.RLock()  # finalisers may run on any thread, even inside empty()
        self.hits = 0  # outputs served from a freed block
        self.misses = 0  # outputs that needed a new block
        self._lent: set[int] = set()  # addresses of the blocks held by live tensors
        if hasattr(os, "register_at_fork"):  # a child must not inherit a lock held by another thread
            os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.RLock()

    @property
    def cached_bytes(self) -> int:
        """Bytes held in freed blocks, waiting for an output of their size."""
        return self._cached

    def set_max_bytes(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            self._trim(max_bytes)

    def clear(self) -> None:
        """Unmap every freed block."""
        self._trim(0)

    def _trim(self, limit: int) -> None:
        with self._lock:
            while self._free and self._cached > limit:
                _, (size, block) = self._free.popitem(last=False)
                self._cached -= size
                block.close()

    def _take(self, size: int) -> mmap.mmap | None:
        with self._lock:
            for key in reversed(self._free):  # the most recently freed block of this size
                if self._free[key][0] == size:
                    _, block = self._free.pop(key)
                    self._cached -= size
                    return block
        return None

    def lent(self, t: Tensor) -> bool:
        """Whether t's memory is one of this pool's blocks (mapped already when it was handed out)."""
        return t.is_cpu and t.untyped_storage().data_ptr() in self._lent

    def _give_back(self, size: int, block: mmap.mmap, address: int) -> None:
        with self._lock:
            self._lent.discard(address)
            if size > self.max_bytes:
                block.close()
                return
            self._trim(self.max_bytes - size)
            self._free[id(block)] = (size, block)
            self._cached += size

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool) -> Tensor:
        """An uninitialised CPU tensor of ``shape`` (N x C x H x W when channels_last), contiguous in
        that memory format, in a block that is already mapped whenever one of its size was freed."""
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * dtype.itemsize
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if nbytes < MIN_BYTES or nbytes > self.max_bytes:
            return torch.empty(shape, dtype=dtype, memory_format=fmt)
        size = -(-nbytes // _PAGE) * _PAGE
        block = self._take(size)
        if block is None:
            try:
                block = mmap.mmap(-1, size)
            except OSError:  # no address space for a new mapping: torch's allocator says why
                return torch.empty(shape, dtype=dtype, memory_format=fmt)
            self.misses += 1
        else:
            self.hits += 1
        view = memoryview(block)
        flat = torch.frombuffer(view, dtype=dtype, count=numel)
        address = flat.data_ptr()
        with self._lock:
            self._lent.add(address)
        done = weakref.finalize(view, self._give_back, size, block, address)
        done.atexit = False
        del view  # the storage holds the only reference now: the block comes back when it dies
        if channels_last:
            n, c, h, w = shape
            return flat.view(n, h, w, c).permute(0, 3, 1, 2)  # N x C x H x W, channels innermost
        return flat.view(shape)


_pool = OutputPool(default_max_bytes())


def set_output_pool(max_bytes: int) -> int:
    """Cap the memory conv1x1 keeps in freed CPU outputs for reuse; returns the previous cap.

    Outputs (and the gradients of the input and of the weights) of at least 1 MiB live in blocks
    that conv1x1 takes back when the tensor's storage is freed and hands out again for the next
    output of the same size, so a loop does not pay the page faults of fresh memory on every step
    (on this project's machine they cost more than the product itself on large outputs: see
    ``docs/op.md``). At most ``max_bytes`` of freed blocks are kept (default: 1 GiB, or a
    sixteenth of the machine's memory where that is less), the least recently freed given back to
    the system first; ``0`` turns the pool off and gives back everything it holds. Such tensors
    cannot be resized in place (``resize_`` to a larger size).
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    before = _pool.max_bytes
    _pool.set_max_bytes(max_bytes)
    return before


def _allocator(shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool) -> Callable[[], Tensor]:
    """_new_output for a CPU result of one shape, as a call without arguments: a small one straight
    from torch.empty_strided with its strides worked out once (its keyword arguments, the memory
    format above all, cost more than the allocation on a layer of microseconds), a large one from
    the pool."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes >= MIN_BYTES:
        return functools.partial(_pool.empty, shape, dtype, channels_last)
    strides = torch.empty(shape, device="meta", memory_format=_format(channels_last)).stride()
    return functools.partial(torch.empty_strided, shape, strides, dtype=dtype)


def _new_output(shape: tuple[int, ...], like: Tensor, channels_last: bool) -> Tensor:
    """An uninitialised result with like's dtype and device, contiguous in the layout asked for."""
    if like.is_cpu:
        return _pool.empty(shape, like.dtype, channels_last)
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_format(channels_last))

