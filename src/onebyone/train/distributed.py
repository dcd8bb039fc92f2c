"""The multi-process parts: under ``torchrun``, which process this is, the process group
(gloo on CPU, nccl on GPU) and its teardown, the sums over all processes, and the device each
process trains on."""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# The tensors of the last all-reduces, kept referenced from Python. When gloo's worker thread drops
# its own reference to a finished all-reduce after Python has let go of the tensor, it hands the
# tensor's Python object back through the GIL from that thread; if the interpreter is shutting down
# by then, the thread is ended inside a C++ destructor and the process aborts
# ("terminate called without an active exception"). gloo's threads keep their last piece of work
# until the process group is destroyed, so the tensors are kept here until after that (the end of
# `train`), and released by the main thread.
_REDUCED: collections.deque[Tensor] = collections.deque(maxlen=8)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values: Sequence[float] | Tensor) -> Tensor:
        t = torch.as_tensor(values, dtype=torch.float64)
        if self.active:
            import torch.distributed as dist

            moved = t.to(_reduce_device())
            dist.all_reduce(moved)
            _REDUCED.append(moved)  # see _REDUCED
            t = moved.cpu().clone()
        return t


def _reduce_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _dist_from_env() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return _Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def _device_for(requested: str | None, dist: _Dist) -> torch.device:
    if requested not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank % torch.cuda.device_count())


@contextlib.contextmanager
def _process_group(device: str | None, dist: _Dist) -> Iterator[None]:
    """Under ``torchrun``, the process group for a run (made unless one exists), torn down after it."""
    if dist.active:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if _device_for(device, dist).type == "cuda" else "gloo")
    try:
        yield
    finally:
        if dist.active:
            import gc

            import torch.distributed as tdist

            if tdist.is_initialized():
                # the process group lives as long as the DDP wrapper, which sits in reference cycles:
                # collected now, the group's worker threads are joined here, while every tensor they
                # still hold is owned by Python (see _REDUCED), not during the interpreter's shutdown
                gc.collect()
                tdist.destroy_process_group()
            _REDUCED.clear()  # the group's threads are gone: the main thread lets the tensors go
