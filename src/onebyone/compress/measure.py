"""What compress measures: a module's multiply-adds on its real input, outputs' relative error, and time.

Timings are paired and interleaved (a round times the original, then the replacement, each for
enough calls to last a few milliseconds), so a machine that slows down during the measurement
slows both alike; the median of the rounds is kept. Everything runs in eval mode without autograd.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import Conv1x1

__all__ = ["cpu_name", "macs_of", "paired_seconds", "relative_error"]

#: Each timed block lasts at least this long, so that the clock's resolution and one call's
#: jitter do not matter.
BLOCK_SECONDS = 0.004


@torch.no_grad()
def macs_of(module: nn.Module, x: Tensor) -> int:
    """Multiply-adds of ``module`` on ``x`` (per batch), convolutions and linear layers, no bias:
    output elements x (C / groups x kernel area) or x in_features, as onebyone.cost counts them."""
    total = 0

    def count(m: Any, _args: object, out: Tensor) -> None:
        nonlocal total
        w: Tensor = m.weight
        total += out.numel() * (w[0].numel() if not isinstance(m, nn.Linear) else m.in_features)

    hooks = [m.register_forward_hook(count) for m in module.modules()
             if isinstance(m, (nn.Conv2d, Conv1x1, nn.Linear))]
    try:
        module(x)
    finally:
        for h in hooks:
            h.remove()
    return total


def _first(out: object) -> Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"expected the model to return a tensor, got {type(out).__name__}")
    return out


def relative_error(got: object, want: object) -> float:
    """||got - want|| / ||want|| (Frobenius norms, float64)."""
    g, w = _first(got).double(), _first(want).double()
    return float((g - w).norm() / w.norm().clamp_min(1e-30))


@torch.no_grad()
def paired_seconds(a: nn.Module, b: nn.Module, x: Tensor, rounds: int = 7) -> tuple[float, float]:
    """Median seconds per call of ``a(x)`` and ``b(x)``, timed in interleaved rounds."""
    for m in (a, b):  # warm up: first calls allocate, and conv1x1 picks its kernels per shape
        m(x)
        m(x)
    t0 = time.perf_counter()
    a(x)
    b(x)
    once = max(time.perf_counter() - t0, 1e-7) / 2
    calls = max(1, min(1000, math.ceil(BLOCK_SECONDS / once)))
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for m, out in zip((a, b), times, strict=True):
            start = time.perf_counter()
            for _ in range(calls):
                m(x)
            out.append((time.perf_counter() - start) / calls)
    return statistics.median(times[0]), statistics.median(times[1])


def sample(shape: Sequence[int], batch: int, channels_last: bool, device: torch.device,
           dtype: torch.dtype) -> Tensor:
    """A random input of one sample's ``shape`` at ``batch``, in the layout asked for (4-d only)."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((batch, *shape), generator=gen, device=device, dtype=dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def cpu_name() -> str:
    """The processor's model name as lscpu and /proc/cpuinfo give it, with family and model."""
    try:
        with open("/proc/cpuinfo") as f:
            info: dict[str, str] = {}
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
        family, model = info.get("cpu family", "?"), info.get("model", "?")
        return f"{info.get('model name', '?')} (family {family} model {model})"
    except OSError:
        return platform.processor() or platform.machine()
