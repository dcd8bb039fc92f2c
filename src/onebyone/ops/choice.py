"""Which library runs each pass: the policy (set_backend), the rule for NCHW float32, and the timing.

For NCHW float32 a rule measured on the shape suite says where onebyone's kernels win (see
_use_native and docs/op.md); for channels_last each candidate (PyTorch's BLAS, the native kernels,
oneDNN's 1x1 kernel) is timed once per shape and the fastest remembered.
"""

from __future__ import annotations

import collections
import functools
import math
import mmap
import statistics
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import Tensor

from .native import (
    _NATIVE_CL_WORKSPACE_MAX_C,
    _NATIVE_LARGE_PIXELS,
    _NATIVE_MIN_PIXELS,
    _forward_native,
    _native_dtype_ok,
    _turned,
    _turned_grad_input,
)
from .pool import MIN_BYTES, _pool

try:
    import resource
except ImportError:  # not on Windows: the choices are then never watched (see _watching)
    resource = None  # type: ignore[assignment]

#: The libraries conv1x1 can run on: "auto" picks among them per shape; the others force one.
BACKENDS = ("auto", "rule", "torch", "numpy", "onednn", "native")
_NUMPY_DTYPES = (torch.float32, torch.float64)

_policy = "auto"
_choices: dict[tuple[object, ...], str] = {}


def set_backend(name: str = "auto") -> str:
    """Choose the library conv1x1 runs on for CPU tensors; returns the previous choice.

    ``"auto"`` (the default) runs float32 NCHW passes on onebyone's own kernels where a rule measured on the
    shape suite says they win (most layers below 1024 channels, down to 7 x 7 images: see ``docs/op.md``), and
    all of them where PyTorch's BLAS is far behind the kernels on this processor (timed once); for
    channels_last it times the candidates that apply (PyTorch's BLAS; the native kernels for float32; oneDNN
    for float32/bfloat16 when its copy of the weights fits) on the first call of each shape and keeps the
    fastest (charging each the page faults its results would pay in a loop, and watching a choice whose
    results come from malloc: one that does pay them gives way to the fastest candidate writing into conv1x1's
    pool of outputs); everything else runs on PyTorch's BLAS. ``"rule"`` is ``"auto"`` without the timing:
    NCHW float32 on the same rule, everything else on PyTorch's BLAS (channels_last float32 on the
    native kernels where BLAS is far behind them), so that two runs on one machine with one thread count
    compute the same bits (training uses it). ``"torch"``, ``"numpy"``, ``"onednn"`` or
    ``"native"`` force one wherever it applies (NumPy: float32 and float64, never chosen by ``"auto"``: its
    threads and PyTorch's fight over the cores after every switch; oneDNN: channels_last float32/bfloat16 with
    weights at most 9% of the input's size; native: float32 on the CPU when the kernels were built, see
    :func:`native_isa`), with PyTorch's BLAS everywhere else. CUDA tensors always run on PyTorch's own
    kernels.
    """
    global _policy
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    before, _policy = _policy, name
    _choices.clear()
    _watched.clear()
    return before


def chosen_backends() -> dict[tuple[object, ...], str]:
    """The library picked so far for each (pass, layout, shape, stride, groups, dtype, threads)."""
    return dict(_choices)


def _numpy_ok(t: Tensor) -> bool:
    return t.is_cpu and t.dtype in _NUMPY_DTYPES


# Where the direct kernels beat PyTorch's BLAS (MKL) on NCHW float32, measured pass by pass with
# benchmarks/native_vs_blas.py over the whole shape suite (BENCHMARKS.md, "native kernels against
# BLAS"): they read each pixel once and keep a block of outputs in registers while the channels
# stream past. Forward wins on images of 28 x 28 and more with up to 64 Ki weights (1.1x to 2x at
# batch 1: the seed's 50 -> 20 maps, the early GoogLeNet / ResNet / MobileNet layers), on smaller
# images down to 7 x 7 while the sum runs over at most 960 channels (1.05x to 1.5x), and turned
# around on single images of 7 x 7 to 27 x 27 and on batches of smaller ones over any number of
# channels (see _turned: 1.03x to 1.35x); BLAS's cache blocking keeps the sums over 1024 channels
# and more on batches of 28 x 28 images and larger. grad_input wins from 7 x 7 (1.1x to 2x on
# single images, narrow or wide). grad_weight runs as dot products along the pixels with few
# channels (K + C <= 100) and as outer products on transposed tiles otherwise, ahead on batches,
# on large images and on smaller ones over at most 960 channels or into at most 512.
# Narrow layers of single images (at most 48 outputs, a few MFLOP) win only since the kernels share
# them out to every thread. Tiny problems (where a BLAS call's own overhead is most of the time)
# always run native.
_NATIVE_TINY_MACS = {"forward": 1 << 16, "grad_input": 1 << 16, "grad_weight": 1 << 17}
_NATIVE_LARGE_MAX_WEIGHTS = 65536  # C x K per group on images of 28 x 28 and more
_NATIVE_FWD_MAX_SUM = 960  # ... for the forward and grad_weight below 28 x 28, over at most 960 channels
_NATIVE_GW_DOT_CHANNELS = 100  # K + C: grad_weight's dot-product form (the C side's own threshold)
_NATIVE_GW_WIDE_MAX_OUT = 512  # grad_weight of small images over more than 960 channels: into <= 512
_NATIVE_MIN_BATCH = 8  # "on batches": measured at 32


def _use_native(pass_: str, x_or_grad: Tensor, c: int, k: int, channels_last: bool) -> bool:
    """Whether this NCHW pass runs on the direct kernels: c inputs and k outputs per group."""
    if channels_last or not _native_dtype_ok(x_or_grad) or _policy not in ("auto", "rule", "native"):
        return False
    if _policy == "native":
        return True
    return _native_by_rule(pass_, x_or_grad, c, k) or _blas_far_behind()


# The rule above was measured on a Zen 4 core, where MKL's AVX2 code and the native AVX-512 kernels reach
# about the same peak (AVX-512 runs there as two 256-bit halves). MKL takes its AVX2 code on every AMD
# processor, and on a core with full-width AVX-512 (Zen 5) that is half of what the native kernels reach: on
# this project's 2-core Zen 5 machine torch.mm ran at 170-200 GFLOP/s, the native kernels at 380-420, and
# native won every NCHW pass of the suite by 1.2-4.8x and the rule's BLAS cases outside it by 1.5-2.2x
# (1024x28x28->256 at batch 8 forward 1.65x, 1024x14x14->2048 at batch 32 forward 1.71x:
# `benchmarks/native_details.py --section blas-lead`). So the first time the rule would leave a pass to BLAS,
# the two are timed once on one compute-bound product (256 x 256 weights over a 32 x 32 image, 134 MFLOP;
# 15-35 ms in all); where MKL takes more than _BLAS_FAR_BEHIND times the native kernel's time, every pass goes
# native.
_BLAS_FAR_BEHIND = 1.5
_blas_behind: bool | None = None


def _blas_far_behind() -> bool:
    """Whether PyTorch's BLAS is far behind the native kernels on this processor (timed once)."""
    global _blas_behind
    if _blas_behind is None:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(256, 256, generator=gen)
        x = torch.randn(1, 256, 32, 32, generator=gen)
        ym = torch.empty(256, 1024)
        runs: dict[str, Callable[[], object]] = {
            "blas": functools.partial(torch.mm, w, x.view(256, 1024), out=ym),
            "native": functools.partial(_forward_native, x, w, None, (1, 1), 1, None, False),
        }
        best = dict.fromkeys(runs, math.inf)
        for r in range(7):  # the first round warms up; the least time of the rest
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                if r:
                    best[name] = min(best[name], time.perf_counter() - t0)
        _blas_behind = best["blas"] > _BLAS_FAR_BEHIND * best["native"]
    return _blas_behind


def _native_by_rule(pass_: str, x_or_grad: Tensor, c: int, k: int) -> bool:
    """The measured rule (above) for an NCHW float32 pass: c inputs and k outputs per group."""
    n, _, h, w = x_or_grad.shape
    pixels = h * w
    if n * pixels * c * k <= _NATIVE_TINY_MACS[pass_]:
        return True
    large = pixels >= _NATIVE_LARGE_PIXELS and c * k <= _NATIVE_LARGE_MAX_WEIGHTS
    if pass_ == "forward":  # c: the channels summed over, k: the outputs
        # images under 64 pixels in batches that give each thread groups of them: the kernels put
        # a group's pixels side by side, where MKL tiles each 7 x 7 image on its own
        panels = pixels < 64 and n >= 8 * torch.get_num_threads()
        turned = _turned(n, pixels, (1, 1), c, k) and c <= _NATIVE_CL_WORKSPACE_MAX_C  # see _turned
        return large or panels or turned or (pixels >= _NATIVE_MIN_PIXELS and c <= _NATIVE_FWD_MAX_SUM)
    if pass_ == "grad_input":  # c: the channels summed over (the outputs' K)
        return pixels >= _NATIVE_MIN_PIXELS or _turned_grad_input(n, pixels, c)
    if c + k <= _NATIVE_GW_DOT_CHANNELS:
        return True
    if pixels >= _NATIVE_MIN_PIXELS and (c <= _NATIVE_FWD_MAX_SUM or k <= _NATIVE_GW_WIDE_MAX_OUT):
        return True  # few images of 7 x 7 to 14 x 14: 1.0-1.6x at batch 1; over 1024+ channels into
        # at most 512 too since its transposes are in registers (MKL ahead into 1024)
    return max(c, k) >= 32 and (n >= _NATIVE_MIN_BATCH or pixels >= _NATIVE_LARGE_PIXELS)


R = TypeVar("R")


def _choice_key(pass_: str, like: Tensor, *shape: object) -> tuple[object, ...]:
    return (pass_, *shape, like.dtype, torch.get_num_threads())


# A result that malloc hands out (oneDNN's, say) above glibc's largest mmap threshold, 32 MiB on
# 64-bit, is mapped afresh on every call and faulted in page by page as it is written: in a loop,
# oneDNN's ResNet-50 64x56x56->256 channels_last forward at batch 32 took 45 ms (25,089 page faults
# a call) against 22 ms for the native kernel writing into a pooled block. The first-call timing
# cannot see this: blocks just freed by the other candidates are at hand then, and oneDNN timed 18 ms.
# So each candidate is charged what faulting its fresh results would cost, at the page-fault price
# measured once on this machine.
_FRESH_BYTES = 32 << 20
_fault_price: float | None = None  # seconds per byte of fresh memory written, measured on first need


def _fault_seconds_per_byte() -> float:
    """What writing a fresh anonymous mapping costs beyond writing it again: the page faults."""
    global _fault_price
    if _fault_price is None:
        size, spans = 16 << 20, []
        for _ in range(2):
            with mmap.mmap(-1, size) as block:
                view = memoryview(block)
                t = torch.frombuffer(view, dtype=torch.uint8)
                t0 = time.perf_counter()
                t.fill_(1)  # every page faults in
                t1 = time.perf_counter()
                t.fill_(2)  # mapped now
                spans.append((t1 - t0) - (time.perf_counter() - t1))
                del t
                view.release()
        _fault_price = max(0.0, min(spans)) / size
    return _fault_price


def _malloced(result: object) -> list[int]:
    """The sizes of the result(s) big enough for the pool (>= MIN_BYTES) that malloc handed out instead."""
    tensors = [t for t in (result if isinstance(result, tuple) else (result,)) if isinstance(t, Tensor)]
    sizes = [(t, t.untyped_storage().nbytes()) for t in tensors if t.is_cpu]
    return [size for t, size in sizes if size >= MIN_BYTES and not _pool.lent(t)]


def _fresh_cost(malloced: list[int]) -> float:
    """Seconds of page faults a loop pays for each call's malloc'd results that malloc maps afresh
    every time (see _FRESH_BYTES)."""
    fresh = sum(size for size in malloced if size > _FRESH_BYTES)
    return fresh * _fault_seconds_per_byte() if fresh else 0.0


# Below that line malloc may or may not hand a result out in fresh pages, depending on what the
# calls around it freed: GoogLeNet's 64x56x56->64 at batch 32 channels_last runs every pass on
# oneDNN (4.5-5 ms each), whose 25.7 MB forward and grad_input results never fault in a loop of
# forwards and fault in every step of a forward+backward loop (12,512 faults, about 12 ms a step).
# So a choice whose results come from malloc is watched in the caller's own loop, for as long as
# it stays the choice (a loop of forwards may turn into training): the page faults of each call
# are counted (getrusage, about 1 us), and once the last _WATCH_CALLS calls' faults would cost
# more on average than the lead the choice had over the fastest candidate with pooled results,
# that one takes its place for good. The average, not the median: between other layers' calls,
# or after a different call of this one (a forward after a backward), it may be only the first of
# a few calls that faults (GoogLeNet's 64x56x56->64 forward in the benchmark's rounds: 7.4 ms on
# oneDNN against 4.7 ms for the same oneDNN call in F.conv2d, which came next); eight calls, so
# that one stray burst alone does not decide.
_WATCH_CALLS = 8
# key -> (the pooled candidate, seconds it was behind, page faults of the last calls)
_watched: dict[tuple[object, ...], tuple[str, float, collections.deque[int]]] = {}


def _watching(key: tuple[object, ...], call: Callable[[], R]) -> R:
    """call(), the choice for key, with the page faults it pays counted (see _WATCH_CALLS)."""
    watch = _watched.get(key)
    if watch is None or resource is None:
        return call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    result = call()
    fallback, behind, faults = watch
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    if len(faults) == _WATCH_CALLS:
        paid = statistics.fmean(faults) * mmap.PAGESIZE * _fault_seconds_per_byte()
        if paid > behind and _watched.pop(key, None) is not None:
            _choices[key] = fallback
    return result


def _untimed(names: list[str]) -> str:
    """Which of the libraries named runs when nothing is timed: the one forced where it applies;
    under "rule", the native kernels where BLAS is far behind them (see _blas_far_behind); else
    PyTorch's BLAS."""
    if _policy in names:
        return _policy
    if _policy == "rule" and "native" in names and _blas_far_behind():
        return "native"
    return "torch"


def _fastest(key: tuple[object, ...], candidates: Mapping[str, Callable[[], R]]) -> R:
    """Run the fastest candidate for this key (see _choice_key): all timed on first sight, the winner
    remembered."""
    if _policy != "auto":
        return candidates[_untimed(list(candidates))]()
    if len(candidates) == 1:
        return candidates["torch"]()
    chosen = _choices.get(key)
    if chosen is not None:
        return _watching(key, candidates[chosen])  # another thread chose in the meantime
    names = list(candidates)
    if "native" in names and _blas_far_behind():
        # half the native kernels' speed here (see _blas_far_behind): not worth timing, and a stray
        # slow sample of the others must not hand it the choice through the tie rule below (MobileNet's
        # pw5 at batch 1 channels_last went to MKL so, at 2.2x the time)
        names.remove("torch")
    result = None
    best: dict[str, float] = {}
    for name in names:  # a warm-up run each: thread pools start, pages fault in
        t0 = time.perf_counter()
        result = candidates[name]()
        best[name] = time.perf_counter() - t0
    # then at least 3 timed runs each, interleaved (more for small problems, up to ~5 ms each);
    # the minimum is the estimate least disturbed by whatever else the machine is doing
    rounds = min(10, max(3, math.ceil(5e-3 / max(min(best.values()), 1e-6))))
    best = dict.fromkeys(names, math.inf)
    bare = dict.fromkeys(names, math.inf)  # without the charge for fresh pages
    malloced: dict[str, list[int]] = {}
    for r in range(rounds):
        for name in names if r % 2 else reversed(names):
            t0 = time.perf_counter()
            result = candidates[name]()
            took = time.perf_counter() - t0
            malloced[name] = _malloced(result)
            bare[name] = min(bare[name], took)
            best[name] = min(best[name], took + _fresh_cost(malloced[name]))
    # a tie goes to PyTorch's own kernels: they share one thread pool with everything around them
    fastest = min(best, key=best.__getitem__)
    chosen = _choices[key] = "torch" if best.get("torch", math.inf) <= 1.05 * best[fastest] else fastest
    pooled = [name for name in names if not malloced[name]]
    if malloced[chosen] and pooled:
        fallback = min(pooled, key=best.__getitem__)
        _watched[key] = (fallback, bare[fallback] - bare[chosen], collections.deque(maxlen=_WATCH_CALLS))
    return result  # type: ignore[return-value]  # every candidate computes the same thing


def _native_cl_ok(t: Tensor) -> bool:
    """The channels_last kernels are a candidate ("auto" times them, "rule" takes them where BLAS is
    far behind) or forced ("native")."""
    return _native_dtype_ok(t) and _policy in ("auto", "rule", "native")
