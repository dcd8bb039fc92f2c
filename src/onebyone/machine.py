"""The machine's limits: GEMM peak and memory bandwidth, measured once and cached.

A roofline needs two numbers (three with bfloat16, whose GEMM has its own peak): how fast the
machine multiplies matrices (FLOP/s) and how fast it moves bytes to and from memory (bytes/s). Both
are measured on the device that will run the work and kept in a small JSON cache
(``$XDG_CACHE_HOME/onebyone/machine.json``, or ``~/.cache/...``) keyed by the processor (its name
and, on x86, its family, model and stepping: virtual machines often report one generic name for
several generations), the PyTorch version and the thread count, so that every tool in onebyone
quotes the same figures without measuring again.

The GEMM peak is the fastest of the float32 products at hand, not PyTorch's alone: on the
CPU, ``torch.mm`` (MKL), oneDNN's kernel (a large 1x1 convolution, channels_last) and
onebyone's own kernels (the same product on ``conv1x1``'s native path). They differ by
processor: MKL takes its AVX2 code on AMD processors, which on a Zen 5 core (full-width
AVX-512) reaches about half of what oneDNN's and onebyone's AVX-512 kernels do, so a
roofline on ``torch.mm`` alone would put ordinary layers at 150-200% of it. ``gemm_by``
records which one set the figure.

The memory bandwidth is a copy well beyond the last-level cache; beside it a ladder of copies from
256 KiB up to twice that cache gives the bandwidth of data a cache holds (``cache_bandwidth``), so
that a layer whose tensors stay in a large L3 is measured against the bandwidth it can have.

Conventions: 1 multiply-add (MAC) = 2 FLOPs; bandwidth counts bytes read plus bytes
written; GB and GFLOP are 10^9.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ._files import atomic_write

__all__ = ["Peaks", "cache_path", "peaks", "probe_gemm", "roofline_seconds"]


@dataclass(frozen=True)
class Peaks:
    """Measured limits of one device."""

    gemm_gflops: float  # the fastest float32 GEMM at hand (gemm_by), GFLOP/s (1 MAC = 2 FLOPs)
    bandwidth_gbs: float  # large-buffer copy, GB/s counting bytes read + bytes written
    device: str  # "cpu" or e.g. "cuda:0"
    name: str  # processor or GPU name
    threads: int  # torch.get_num_threads() when measured
    torch_version: str
    measured_at: str  # ISO time
    gemm_by: str = "torch.mm"  # which product set gemm_gflops (see the module's docstring)
    gemm_gflops_bf16: float | None = None  # the fastest bfloat16 GEMM (AMX through oneDNN where present)
    gemm_bf16_by: str = ""
    # (bytes read + written, GB/s) of copies the caches hold, smallest first: a layer whose data
    # stays in a cache moves it faster than bandwidth_gbs (see bandwidth_for)
    cache_bandwidth: tuple[tuple[int, float], ...] = ()

    def gemm_gflops_for(self, dtype: torch.dtype = torch.float32) -> float:
        """The GEMM peak of the tensors' dtype: bfloat16 and float16 have their own (float32's
        where the bfloat16 one was not measured)."""
        if dtype in (torch.bfloat16, torch.float16) and self.gemm_gflops_bf16:
            return self.gemm_gflops_bf16
        return self.gemm_gflops

    def bandwidth_for(self, working_set: float) -> float:
        """The bandwidth (GB/s) of work that touches ``working_set`` bytes: the fastest copy measured
        at that size or larger (the size just below it when it falls between two), the memory's
        beyond the caches. An upper bound, as a roofline needs: a 50 MB layer whose data a 480 MiB
        L3 held ran at 1.3x the memory's bandwidth, over a roofline drawn with that alone."""
        ladder = [(int(size), float(gbs)) for size, gbs in self.cache_bandwidth]
        if not ladder or working_set > 2 * ladder[-1][0]:
            return self.bandwidth_gbs
        at = max([i for i, (size, _) in enumerate(ladder) if size <= working_set] or [0])
        return max([self.bandwidth_gbs] + [gbs for _, gbs in ladder[at:]])

    def to_dict(self) -> dict[str, object]:
        """As JSON keeps it (the ladder's pairs as lists)."""
        return {**asdict(self), "cache_bandwidth": [list(pair) for pair in self.cache_bandwidth]}


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onebyone" / "machine.json"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def _cpu_model() -> str:
    """'family F model M stepping S' from /proc/cpuinfo (x86), or '' where it is not there."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        return ""
    parts = [f"{k.split()[-1]} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    return " ".join(parts)


def _key(device: torch.device) -> str:
    model = _cpu_model() if device.type == "cpu" else ""
    name = _device_name(device) + (f" ({model})" if model else "")
    return f"{device}|{name}|torch {torch.__version__}|{torch.get_num_threads()} threads|v3"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(
    fn: Callable[[], object], device: torch.device, repeats: int, warmups: int = 1, *,
    min_seconds: float = 0.25,
) -> float:
    """The fastest of at least ``repeats`` timed runs, and of as many more as fill ``min_seconds``:
    a peak, which whatever else the machine does can only lower (on a shared virtual machine single
    runs of one product fell to half speed, and a handful of runs left a real layer 2% over it)."""
    for _ in range(warmups):  # first calls allocate, pick kernels, build oneDNN's
        fn()
    _sync(device)
    best = float("inf")
    runs, spent = 0, 0.0
    while runs < repeats or (spent < min_seconds and runs < 50 * repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        sec = time.perf_counter() - t0
        best, runs, spent = min(best, sec), runs + 1, spent + sec
    return best


def _measure_gemm(device: torch.device, repeats: int) -> tuple[float, str]:
    """The fastest float32 GEMM rate (GFLOP/s) of the products at hand, and which product it was."""
    sizes = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    rates: dict[str, float] = {}
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        c = torch.empty(n, n, device=device)
        sec = _best_seconds(functools.partial(torch.mm, a, b, out=c), device, repeats)
        rates["torch.mm"] = max(rates.get("torch.mm", 0.0), 2 * n**3 / sec / 1e9)
    if device.type == "cpu":
        rates.update(_measure_cpu_kernels(repeats))
    by = max(rates, key=rates.__getitem__)
    return rates[by], by


def _measure_cpu_kernels(repeats: int, *, warmups: int = 3, min_seconds: float = 0.25) -> dict[str, float]:
    """oneDNN's and onebyone's own float32 products on two compute-bound 1x1 convolutions,
    channels_last, the faster of the two for each: 4096 pixels x 512 channels -> 512 (2.1 GFLOP,
    128 FLOPs per byte) and 2048 pixels x 1024 -> 1024 (4.3 GFLOP, deeper: some processors reach
    their best only on long dot products, and a layer must not beat the peak)."""
    from . import ops  # the op sits beside this module; only this measurement needs it

    cpu = torch.device("cpu")
    rates: dict[str, float] = {}
    for pixels, c, k in ((4096, 512, 512), (2048, 1024, 1024)):
        x = torch.randn(1, c, 32, pixels // 32).contiguous(memory_format=torch.channels_last)
        w = torch.randn(k, c)
        flops = 2 * pixels * c * k
        runs: dict[str, Callable[[], object]] = {}
        if torch.backends.mkldnn.is_available():
            runs["oneDNN"] = functools.partial(torch.nn.functional.conv2d, x, w.view(k, c, 1, 1))
        if ops.native_isa() is not None:
            runs["onebyone"] = functools.partial(
                ops.native._forward_native, x, w, None, (1, 1), 1, None, True
            )
        for name, run in runs.items():
            rate = flops / _best_seconds(run, cpu, 2 * repeats, warmups, min_seconds=min_seconds) / 1e9
            rates[name] = max(rates.get(name, 0.0), rate)
    return rates


# M x C x K, fewest FLOPs first: squares, then the long, shallow products of 1x1 layers (pixels x
# channels -> filters), which AMX ran fastest (3.9 TFLOP/s at 8192 x 256 x 1024 against 2.8 for
# 2048^3 on a Xeon: a layer of that form ran over a roofline drawn with squares only)
_BF16_PRODUCTS = ((256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (4096, 256, 1024),
                  (8192, 256, 1024), (8192, 512, 512), (4096, 1024, 1024), (16384, 256, 1024),
                  (2048, 2048, 2048))


def _measure_gemm_bf16(repeats: int) -> tuple[float | None, str]:
    """The fastest bfloat16 GEMM rate on the CPU: torch.mm, oneDNN's 1x1 convolution (which runs on
    AMX tiles where the processor has them), onebyone's own AMX kernel where it runs and its
    products widened to float32 block by block (ops/widened.py; a layer on either must not beat
    the peak either), as _measure_cpu_kernels.

    Each grows through larger products while a single run stays short: where the processor has no
    bfloat16 arithmetic, torch.mm emulates it at about 1 GFLOP/s, a run of the largest product takes
    some 17 s and timing it took minutes; there the rate no longer grows with the size anyway."""

    def mm(size: tuple[int, int, int]) -> tuple[Callable[[], object], int]:
        m, c, k = size
        a, b = torch.randn(m, c, dtype=torch.bfloat16), torch.randn(c, k, dtype=torch.bfloat16)
        return functools.partial(torch.mm, a, b, out=torch.empty(m, k, dtype=torch.bfloat16)), 2 * m * c * k

    def conv(size: tuple[int, int]) -> tuple[Callable[[], object], int]:
        pixels, ch = size
        x = torch.randn(1, ch, 32, pixels // 32, dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last)
        w = torch.randn(ch, ch, 1, 1, dtype=torch.bfloat16)
        return functools.partial(torch.nn.functional.conv2d, x, w), 2 * pixels * ch * ch

    def amx(size: tuple[int, int, int]) -> tuple[Callable[[], object], int]:
        m, c, k = size
        x = torch.randn(1, c, 32, m // 32, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        w = torch.randn(k, c, dtype=torch.bfloat16)
        return functools.partial(ops.amx._forward_amx, x, w, None, (1, 1), 1, None, True), 2 * m * c * k

    def widened(size: tuple[int, int, int]) -> tuple[Callable[[], object], int]:
        m, c, k = size
        a, b = torch.randn(m, c, dtype=torch.bfloat16), torch.randn(c, k, dtype=torch.bfloat16)
        out = torch.empty(m, k, dtype=torch.bfloat16)
        return functools.partial(ops.widened._mm_widened, a, b, out), 2 * m * c * k

    from . import ops  # the op sits beside this module; only this measurement needs it

    rates = {"torch.mm": _growing_rate(mm, _BF16_PRODUCTS, repeats, warmups=1),
             "onebyone widened": _growing_rate(widened, _BF16_PRODUCTS, repeats, warmups=1)}
    if torch.backends.mkldnn.is_available():
        sizes = ((1024, 256), (4096, 512), (16384, 1024))
        rates["oneDNN"] = _growing_rate(conv, sizes, 2 * repeats, warmups=3)
    if ops.amx.amx_available():
        rates["onebyone"] = _growing_rate(amx, _BF16_PRODUCTS, repeats, warmups=1)
    by = max(rates, key=rates.__getitem__)
    return rates[by], by


def _growing_rate(
    make: Callable[[Any], tuple[Callable[[], object], int]], sizes: Sequence[Any], repeats: int,
    warmups: int, *, slow_seconds: float = 0.05,
) -> float:
    """The best GFLOP/s of ``make(size)`` over ``sizes``, smallest first, stopping after the first
    size whose second run (the first builds kernels) took longer than ``slow_seconds``."""
    best = 0.0
    for size in sizes:
        fn, flops = make(size)
        fn()
        t0 = time.perf_counter()
        fn()
        second = time.perf_counter() - t0
        sec = _best_seconds(fn, torch.device("cpu"), repeats, max(warmups - 2, 0))
        best = max(best, flops / sec / 1e9)
        if second > slow_seconds:
            break
    return best


def _last_level_cache_bytes() -> int:
    """The largest CPU cache (sysfs), 0 where it is not known."""
    sizes = [0]
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes)


def _measure_bandwidth(device: torch.device, repeats: int) -> float:
    # a read+write stream well beyond the last-level cache: at least 256 MiB a buffer and 4 times
    # the largest cache (a 300 MiB L3 held a 256 MiB copy and measured the cache, not the memory)
    llc = _last_level_cache_bytes() if device.type == "cpu" else 0
    numel = max(64 * 2**20, 4 * llc // 4)
    src = torch.ones(numel, device=device)
    dst = torch.empty(numel, device=device)
    sec = _best_seconds(lambda: dst.copy_(src), device, repeats)  # a peak, as the GEMM's
    return 2 * numel * src.element_size() / sec / 1e9


def _measure_cache_bandwidth(repeats: int) -> tuple[tuple[int, float], ...]:
    """Copy bandwidth (bytes read + written, GB/s) at working sets from 256 KiB, doubling, up to
    twice the last-level cache, each the fastest of its runs; empty where the cache size is unknown."""
    llc = _last_level_cache_bytes()
    ladder: list[tuple[int, float]] = []
    size = 256 * 2**10
    while llc and size <= 2 * llc:
        numel = size // 8  # two float32 buffers
        copy = functools.partial(torch.empty(numel).copy_, torch.ones(numel))
        sec = _best_seconds(copy, torch.device("cpu"), repeats, 2, min_seconds=0.05)
        ladder.append((size, round(size / sec / 1e9, 2)))
        size *= 2
    return tuple(ladder)


def _read_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(data: dict[str, dict[str, object]]) -> None:
    with contextlib.suppress(OSError):  # a read-only home only costs a re-measurement next time
        atomic_write(cache_path(), json.dumps(data, indent=2).encode())


def peaks(device: str | torch.device = "cpu", *, refresh: bool = False, repeats: int = 5) -> Peaks:
    """The GEMM peak and memory bandwidth of ``device``, from the cache or measured now (a few seconds).

    Args:
        device: where the work will run.
        refresh: measure again even if a cached figure exists; each limit stored is then the
            higher of the new figure and the cached one (a peak that interference lowered
            once is not kept).
        repeats: the fewest timed runs per measurement (more fill a quarter of a second);
            the fastest is kept.
    """
    dev = torch.device(device)
    key = _key(dev)
    cache = _read_cache()
    if not refresh and key in cache:
        try:
            cached = _from_dict(cache[key])
        except TypeError:
            cached = None  # an older cache layout: measure again
        if cached is not None and (cached.cache_bandwidth or dev.type != "cpu"):
            return cached
    with torch.no_grad():
        gemm, gemm_by = _measure_gemm(dev, repeats)
        bf16, bf16_by = _measure_gemm_bf16(repeats) if dev.type == "cpu" else (None, "")
        result = Peaks(
            gemm_gflops=round(gemm, 2),
            bandwidth_gbs=round(_measure_bandwidth(dev, repeats), 2),
            device=str(dev),
            name=_device_name(dev),
            threads=torch.get_num_threads(),
            torch_version=torch.__version__,
            measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            gemm_by=gemm_by,
            gemm_gflops_bf16=None if bf16 is None else round(bf16, 2),
            gemm_bf16_by=bf16_by,
            cache_bandwidth=_measure_cache_bandwidth(repeats) if dev.type == "cpu" else (),
        )
    if key in cache:  # a refresh keeps the best figure yet: interference can only lower a peak
        with contextlib.suppress(TypeError):
            result = _best_of(result, _from_dict(cache[key]))
    cache[key] = result.to_dict()
    _write_cache(cache)
    return result


def _best_of(new: Peaks, old: Peaks) -> Peaks:
    """Each limit the higher of two measurements of one key (with what set it); new's timestamp.

    On a shared virtual machine the float32 peak measured 147 GFLOP/s in one run and 176-183 in
    others minutes apart, and layers then ran over the lower one's roofline."""
    best = new
    if old.gemm_gflops > new.gemm_gflops:
        best = replace(best, gemm_gflops=old.gemm_gflops, gemm_by=old.gemm_by)
    if (old.gemm_gflops_bf16 or 0.0) > (new.gemm_gflops_bf16 or 0.0):
        best = replace(best, gemm_gflops_bf16=old.gemm_gflops_bf16, gemm_bf16_by=old.gemm_bf16_by)
    old_ladder = dict(old.cache_bandwidth)
    ladder = tuple((size, max(gbs, old_ladder.get(size, 0.0))) for size, gbs in new.cache_bandwidth)
    return replace(best, bandwidth_gbs=max(new.bandwidth_gbs, old.bandwidth_gbs), cache_bandwidth=ladder)


def _from_dict(data: dict[str, Any]) -> Peaks:
    """A cached Peaks (JSON keeps the ladder's pairs as lists)."""
    ladder = tuple((int(size), float(gbs)) for size, gbs in data.get("cache_bandwidth", ()))
    return Peaks(**{**data, "cache_bandwidth": ladder})


def probe_gemm(device: str | torch.device = "cpu") -> Peaks:
    """A second look at the float32 peak, about half a second: the CPU kernels' two products run
    twice each, and the stored peak raised where they beat it (measured if there is none).

    On a shared host whose speed drifts by a fifth over minutes, a peak measured in a slow spell
    sits below layers timed in a fast one; a benchmark calls this between its shapes, so that the
    peak is looked for over the same span of time as the layers."""
    limits = peaks(device)
    if torch.device(device).type != "cpu":
        return limits
    with torch.no_grad():
        rates = _measure_cpu_kernels(1, warmups=1, min_seconds=0.0)
    if not rates or max(rates.values()) <= limits.gemm_gflops:
        return limits
    by = max(rates, key=rates.__getitem__)
    better = replace(limits, gemm_gflops=round(rates[by], 2), gemm_by=by,
                     measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    cache = _read_cache()
    cache[_key(torch.device(device))] = better.to_dict()
    _write_cache(cache)
    return better


def roofline_seconds(
    flops: float, bytes_moved: float, limits: Peaks, dtype: torch.dtype = torch.float32
) -> float:
    """The least time the work can take: compute-bound (at the GEMM peak of ``dtype``) or
    memory-bound, whichever is slower; the bytes move at the bandwidth of a working set of their
    size (``Peaks.bandwidth_for``: a cache's where one holds them)."""
    if flops < 0 or bytes_moved < 0:
        raise ValueError(f"flops and bytes must be >= 0, got flops={flops}, bytes={bytes_moved}")
    bandwidth = limits.bandwidth_for(bytes_moved)
    return max(flops / (limits.gemm_gflops_for(dtype) * 1e9), bytes_moved / (bandwidth * 1e9))
