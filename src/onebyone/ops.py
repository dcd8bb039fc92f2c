"""conv1x1: the pointwise convolution as matrix products on views, forward and backward.

A 1x1 convolution never looks at a pixel's neighbours, so it is a matrix product in
disguise. Which product depends on where the channels sit in memory:

* NCHW (contiguous): each image is a C x (H*W) matrix; the output image is
  W (K x C) @ X (C x H*W). One batched product, no im2col, no copy of the input.
* channels_last (NHWC in memory): the whole batch is one (N*H*W) x C matrix; the
  output is X @ W^T, one product whose result is already channels_last.

Groups are blocks of the same matrices; a stride is gathered a few rows at a time into a
small buffer. The products write straight into the output, so a forward pass allocates its
output and nothing of the input's size. Backward reuses the same views: grad_x = W^T @ grad_y,
grad_W = sum over images of grad_y @ X^T, grad_b = sum of grad_y.

On the CPU, float32 products run on onebyone's own kernels (``_native.c``: a block of outputs
kept in registers while the channels stream past, the bias and activation applied before the
store, on PyTorch's own OpenMP threads) or on a BLAS library: for NCHW by a rule measured on the
shape suite (see _use_native and docs/op.md), for channels_last by timing each candidate
(PyTorch's BLAS, the native kernels, oneDNN's 1x1 kernel) once per shape.
Other dtypes run on PyTorch's BLAS (and oneDNN, timed, for channels_last).
"""

from __future__ import annotations

import collections
import functools
import math
import mmap
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._pool import MIN_BYTES, OutputPool, default_max_bytes

try:
    import resource
except ImportError:  # not on Windows: the choices are then never watched (see _watching)
    resource = None  # type: ignore[assignment]

try:
    from onebyone import _native
except ImportError:  # not built (no C compiler when it was installed): the BLAS libraries alone
    _native = None  # type: ignore[assignment]

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "chosen_backends",
    "conv1x1",
    "native_isa",
    "set_backend",
    "set_output_pool",
]

#: Activations conv1x1 can fuse, by name.
ACTIVATIONS = ("relu", "relu6")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- checks


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair


def _check(
    x: Any, weight: Any, bias: Any, stride: Any, groups: Any, activation: Any
) -> tuple[Tensor, Tensor, Tensor | None, tuple[int, int], int, str | None]:
    """Validate every argument; return x, the weight as K x C/groups (detached: the autograd function
    takes the caller's weight as its input, so no view of it joins the graph), bias, stride, groups,
    activation."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if (
        x.dtype not in _FLOAT_DTYPES
        or weight.dtype not in _FLOAT_DTYPES
        or (bias is not None and bias.dtype not in _FLOAT_DTYPES)
    ):
        for name, t in (("x", x), ("weight", weight), ("bias", bias)):
            if t is not None and t.dtype not in _FLOAT_DTYPES:
                raise TypeError(
                    f"{name} has dtype {t.dtype}; expected a floating dtype "
                    "(torch.float32, torch.float64, torch.bfloat16 or torch.float16)"
                )
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        got = f"x {x.dtype}, weight {weight.dtype}" + (f", bias {bias.dtype}" if bias is not None else "")
        raise TypeError(f"x, weight and bias must share one dtype; got {got}")
    if not (x.is_cpu and weight.is_cpu and (bias is None or bias.is_cpu)) and (
        weight.device != x.device or (bias is not None and bias.device != x.device)
    ):
        got = f"x on {x.device}, weight on {weight.device}" + (
            f", bias on {bias.device}" if bias is not None else ""
        )
        raise ValueError(f"x, weight and bias must be on one device; got {got}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N x C x H x W), got {x.dim()}-D with shape {tuple(x.shape)}")
    if weight.dim() == 4:
        if weight.shape[2] != 1 or weight.shape[3] != 1:
            raise ValueError(
                f"weight must hold 1x1 kernels (K x C/groups x 1 x 1), got kernel size "
                f"{tuple(weight.shape[2:])} in weight of shape {tuple(weight.shape)}"
            )
        weight = weight.detach().flatten(1)
    elif weight.dim() == 2:
        weight = weight.detach()
    else:
        raise ValueError(
            f"weight must be K x C/groups x 1 x 1 or K x C/groups, got shape {tuple(weight.shape)}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    channels = x.shape[1]
    k, c_per_group = weight.shape
    if channels % groups:
        raise ValueError(f"groups={groups} must divide the input channels, got {channels} channels")
    if k % groups:
        raise ValueError(f"groups={groups} must divide the output channels, got weight with {k} filters")
    if c_per_group * groups != channels:
        raise ValueError(
            f"weight expects {c_per_group * groups} input channels ({c_per_group} per group x "
            f"{groups} groups) but x has {channels}"
        )
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"bias must have shape ({k},) to match the {k} filters, got {tuple(bias.shape)}")
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")
    pair = (stride, stride) if type(stride) is int and stride >= 1 else _pair(stride, "stride")
    return x, weight, bias, pair, groups, activation


# ------------------------------------------------------------------------- layouts


def _is_channels_last(x: Tensor) -> bool:
    """True when x is laid out channels_last (NHWC in memory).

    A tensor with size-1 dimensions can be contiguous in both formats at once (1 x 1 x 1 x 2,
    say); then its strides say which format made it, as PyTorch's own suggest_memory_format
    decides, so that the output comes back in the format the caller asked for.
    """
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    if not x.is_contiguous():
        return True
    _, c, h, w = x.shape
    return x.stride() == (h * w * c, 1, w * c, c) and x.stride() != (c * h * w, h * w, w, 1)


def _format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _split(t: Tensor, size: int, dim: int, groups: int) -> tuple[Tensor, ...]:
    """The groups' blocks of t along dim (views); t itself when there is one group."""
    return (t,) if groups == 1 else t.split(size, dim)


# ---------------------------------------------------------------- choosing a library
#
# Every product below is out = a @ b on 2-D (or batched 3-D) views of the caller's tensors,
# written straight into the result: no operand is copied into another layout. On the CPU
# PyTorch's BLAS (MKL) does it, or, for channels_last input, oneDNN's own 1x1 convolution
# kernel (what F.conv2d runs). Which one is faster depends on the shape, so the first call of
# each shape and pass (forward, grad_input, grad_weight) times both and the winner is
# remembered for that shape from then on.
#
# NumPy's BLAS (OpenBLAS, reached without a copy through .numpy() on the very same memory) is a
# third way, faster per core on many of these shapes; but its worker threads keep spinning after
# each call, and so do PyTorch's OpenMP threads, so every switch between the two libraries costs
# milliseconds while the pools fight over the cores (a forward on NumPy and a backward on PyTorch
# measured 7.3 ms against 0.6 ms on one library). It runs only when asked for by name.

Matmul = Callable[[Tensor, Tensor, Tensor], None]


def _mm_torch(a: Tensor, b: Tensor, out: Tensor) -> None:
    if out.dim() == 2:
        torch.mm(a, b, out=out)
    elif out.shape[0] == 1 and a.dim() == 2:  # one image: a plain GEMM skips the batched dispatch
        torch.mm(a, b[0], out=out[0])
    elif out.is_contiguous():
        torch.matmul(a, b, out=out)
    else:  # a batch of matrices that are not packed back to back: one product each
        for i in range(out.shape[0]):
            torch.mm(a if a.dim() == 2 else a[i], b if b.dim() == 2 else b[i], out=out[i])


def _mm_numpy(a: Tensor, b: Tensor, out: Tensor) -> None:
    # .numpy() shares memory with the tensor; np.matmul hands strided views straight to sgemm
    np.matmul(a.detach().numpy(), b.detach().numpy(), out=out.detach().numpy())


def _mm_native(a: Tensor, b: Tensor, out: Tensor, *, scratch_of_out: bool = False) -> None:
    """out = a @ b on onebyone's own kernel: a (M x K) any strides, b and out with contiguous rows.

    The kernel's scratch is bounded by a share of b's size (the op's input, in a forward), or of
    out's with ``scratch_of_out`` (grad_input, whose op input is as big as out)."""
    if b.dim() == 2:
        b, out = b.unsqueeze(0), out.unsqueeze(0)
    if b.stride(-1) != 1 or out.stride(-1) != 1 or a.dim() != 2 or not _native_dtype_ok(b):
        _mm_torch(a, b, out)
        return
    _native.forward(
        b.data_ptr(), b.stride(0), b.stride(1),
        out.data_ptr(), out.stride(0), out.stride(1),
        a.data_ptr(), a.stride(0), a.stride(1), 0,
        b.shape[0], b.shape[1], a.shape[0], b.shape[2], 0, torch.get_num_threads(),
        out.numel() if scratch_of_out else 0,
    )  # fmt: skip


def _mm_native_gx(a: Tensor, b: Tensor, out: Tensor) -> None:
    """_mm_native for grad_input: out = W^T @ grad_y, the scratch bounded by out's size."""
    _mm_native(a, b, out, scratch_of_out=True)


#: The libraries conv1x1 can run on: "auto" picks among them per shape; the others force one.
BACKENDS = ("auto", "rule", "torch", "numpy", "onednn", "native")
_NUMPY_DTYPES = (torch.float32, torch.float64)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
# oneDNN often reorders the weights into its own blocked layout first, a copy as big as the
# weights (measured): allowed while that stays within the op's 10% extra-memory budget
_ONEDNN_WEIGHT_SHARE = 0.09  # 9%: the rest of the budget covers the small scratch besides

_HAS_ONEDNN = torch.backends.mkldnn.is_available()

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


def _new_output(shape: tuple[int, ...], like: Tensor, channels_last: bool) -> Tensor:
    """An uninitialised result with like's dtype and device, contiguous in the layout asked for."""
    if like.is_cpu:
        return _pool.empty(shape, like.dtype, channels_last)
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_format(channels_last))


def _numpy_ok(t: Tensor) -> bool:
    return t.is_cpu and t.dtype in _NUMPY_DTYPES


def _onednn_ok(x: Tensor, w: Tensor, channels_last: bool) -> bool:
    return (
        channels_last
        and x.is_cpu
        and x.dtype in _ONEDNN_DTYPES
        and _HAS_ONEDNN
        and w.numel() <= _ONEDNN_WEIGHT_SHARE * x.numel()
    )


def _torch_openmp_runtime() -> str | None:
    """The OpenMP runtime PyTorch loaded (its path), if its threads are OpenMP's; else None."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as f:  # Linux: every mapped library, by path
            paths = {line.split()[-1] for line in f if line.rstrip().endswith((".so", ".so.1", ".so.5"))}
    except OSError:
        return None
    runtimes = [p for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp5", "libomp"))]
    torch_dir = os.path.dirname(torch.__file__)
    runtimes.sort(key=lambda p: not p.startswith(torch_dir))  # the copy PyTorch ships first
    return runtimes[0] if runtimes else None


if _native is not None:  # share PyTorch's worker threads instead of starting our own
    _runtime = _torch_openmp_runtime()
    if _runtime is not None:
        _native.use_openmp(_runtime)


def native_isa() -> str | None:
    """The instruction set onebyone's own CPU kernels run on ("avx512", "avx2" or "base").

    None when they were not built (the package was installed without a C compiler); conv1x1 then
    runs on the BLAS libraries alone.
    """
    return None if _native is None else _native.isa()


def _native_dtype_ok(t: Tensor) -> bool:
    return _native is not None and t.dtype is torch.float32 and t.is_cpu


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
_NATIVE_LARGE_PIXELS, _NATIVE_LARGE_MAX_WEIGHTS = 784, 65536  # 28 x 28 and more, C x K per group
_NATIVE_MIN_PIXELS = 49  # forward, grad_input and grad_weight on images down to 7 x 7
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


# ---------------------------------------------------------------------- strided input
#
# With stride > 1 the kept pixels are no longer evenly spaced in memory (NCHW) or not one
# matrix (channels_last), so a GEMM cannot read them in place. They are gathered block by
# block (whole images when they fit, else a few output rows of one image) into a buffer of at
# most 1/12 of the input and at most 2 MiB: the subsampled input is never copied whole.
# (A bigger buffer makes bigger, faster GEMMs on a single image: 1.34 ms at 1/16, 1.24 ms at
# 1/11 and 1.12 ms at 1/4 for ResNet-50's 256x56x56 -> 512 stride-2 shortcut; 1/12 keeps the
# buffer under the 10% extra memory the op allows itself.)

_PACK_SHARE = 12

Block = tuple[int, int, int, int]  # images i0:i1, output rows r0:r1


def _blocks(x: Tensor, n: int, ho: int, row_elems: int) -> tuple[int, list[Block]]:
    """The buffer's size in output rows, and the blocks that fill it in turn."""
    row = row_elems * x.element_size()
    budget = max(row, min(2 * 2**20, x.numel() * x.element_size() // _PACK_SHARE))
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


# ------------------------------------------------------------------------- forward


def _finished(y: Tensor, bias: Tensor | None, activation: str | None, channels_last: bool) -> Tensor:
    """y with the bias and the activation applied in place (if any): no extra tensor."""
    if bias is not None or activation is not None:
        _epilogue_(_matrix(y, channels_last), bias, activation, channels_last)
    return y


def _epilogue_(ym: Tensor, bias: Tensor | None, activation: str | None, channels_last: bool) -> None:
    """The bias and the activation, in place on the finished product: no extra tensor."""
    if bias is not None:
        ym.add_(bias if channels_last else bias.view(-1, 1))  # ym: M x K (NHWC) or N x K x M (NCHW)
    if activation == "relu":
        ym.clamp_(min=0)
    elif activation == "relu6":
        ym.clamp_(min=0, max=6)


def _matrix(t: Tensor, channels_last: bool) -> Tensor:
    """t (N x C x H x W) as the matrix the GEMMs see: (N*H*W) x C channels_last, N x C x (H*W) NCHW."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(n * h * w, c) if channels_last else t.view(n, c, h * w)


def _forward_gemm(
    mm: Matmul, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """The product alone (no bias, no activation) on one BLAS, into a new output tensor."""
    n, c, h, wd = x.shape
    k, cg = w.shape
    kg = k // groups
    ho, wo = -(-h // stride[0]), -(-wd // stride[1])
    small = n * k * h * wd * x.element_size() < MIN_BYTES  # so its output is not from the pool
    if small and mm is _mm_torch and channels_last and stride == (1, 1) and groups == 1:
        # F.linear's C++ path is the same GEMM with less Python around it (38 against 46 us on
        # 192x28x28->16)
        return F.linear(x.permute(0, 2, 3, 1), w).permute(0, 3, 1, 2)
    y = _new_output((n, k, ho, wo), x, channels_last)
    if y.numel() == 0:
        return y
    if stride == (1, 1) and groups == 1:  # the common case, in one call
        if channels_last or h * wd == 1:  # (1 x 1 images: both layouts are the same N x C matrix)
            mm(_matrix(x, True), w.t(), _matrix(y, True))  # X (NHW x C) @ W^T (C x K)
        elif n == 1:
            mm(w, x.view(c, h * wd), y.view(k, h * wd))  # W (K x C) @ X (C x HW)
        else:
            mm(w, x.view(n, c, h * wd), y.view(n, k, h * wd))  # W (K x C) @ X (N x C x HW)
        return y
    ym = _matrix(y, channels_last)

    def product(xm: Tensor, out: Tensor) -> None:
        if channels_last:  # X_g (pixels x C/G) @ W_g^T (C/G x K/G) -> Y_g, a column block
            for a, b, o in zip(
                _split(xm, cg, 1, groups),
                _split(w.t(), kg, 1, groups),
                _split(out, kg, 1, groups),
                strict=True,
            ):
                mm(a, b, o)
        else:  # W_g (K/G x C/G) @ X[:, g] (images x C/G x pixels) -> Y[:, g]
            for a, b, o in zip(
                _split(w, kg, 0, groups), _split(xm, cg, 1, groups), _split(out, kg, 1, groups), strict=True
            ):
                mm(a, b, o)

    if stride == (1, 1):
        product(_matrix(x, channels_last), ym)  # the input as it lies in memory: no copy
        return y
    rows, blocks = _blocks(x, n, ho, c * wo)
    buf = x.new_empty(rows * wo * c)
    for blk in blocks:
        product(_pack(x, buf, blk, stride, wo, channels_last), _block_rows(ym, blk, ho, wo, channels_last))
    return y


def _forward_native(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Tensor:
    """float32 on the direct kernels, either layout, bias and activation fused into the stores. Small
    NCHW images run turned around on the channels_last kernel (see _turned); an NCHW batch with a
    stride goes by the gathered blocks of _forward_gemm and the epilogue after (its kept pixels are
    not contiguous), a channels_last input or a single NCHW image is read where it lies."""
    n, c, h, wd = x.shape
    k, cg = w.shape
    ho, wo = -(-h // stride[0]), -(-wd // stride[1])
    kg, p = k // groups, ho * wo
    # NCHW 1 x 1 images lie in memory as channels_last ones (a row of channels each): the batch is one
    # product on the channels_last kernel, where the NCHW kernel took it an image (one pixel) at a time
    # (64x512x1x1 -> 1000: 0.6 against 10.7 ms; benchmarks/native_details.py --section blas-lead)
    rows_of_channels = not channels_last and h * wd == 1 and _native_cl_forward_ok(x, w, groups)
    turned = (not channels_last and not rows_of_channels and _turned(n, p, stride, cg, kg)
              and _native_cl_forward_ok(x, w, groups))
    if stride != (1, 1) and not channels_last and not turned and not rows_of_channels:
        y = _forward_gemm(_mm_native, x, w, stride, groups, channels_last)
        return _finished(y, bias, activation, channels_last)
    y = _new_output((n, k, ho, wo), x, channels_last)
    if bias is not None and not bias.is_contiguous():
        bias = bias.contiguous()
    act = 0 if activation is None else ACTIVATIONS.index(activation) + 1
    size, threads = x.element_size(), torch.get_num_threads()
    budget = max(1, int(_NATIVE_CL_PACK_SHARE * x.numel()))  # channels_last kernel: a copy of all of W^T
    for g in range(groups):
        b = 0 if bias is None else bias.data_ptr() + g * kg * size
        wg = w.data_ptr() + g * kg * cg * size
        if turned:  # NCHW images as y^T = x^T W^T: the channels_last kernel, channels h*wd apart
            xg, yg = x.data_ptr() + g * cg * h * wd * size, y.data_ptr() + g * kg * p * size
            if stride == (1, 1):  # an image is one row of p pixels, 1 apart; images c*p and k*p apart
                images = (p, 1, 1, 0, c * p, h * wd, p, k * p)
            else:  # ho rows of wo kept pixels, stride[1] apart, the rows stride[0] * wd apart
                images = (wo, ho, stride[1], stride[0] * wd, c * h * wd, h * wd, p, k * p)
            _native.forward_cl(xg, 1, yg, 1, wg, 1, cg, b, n * p, cg, kg, act, threads, budget, *images)
        elif channels_last or rows_of_channels:  # X_g (kept pixels x C/G) @ W_g^T: W_g^T[i, j] = w[g*kg+j, i]
            xg, yg = x.data_ptr() + g * cg * size, y.data_ptr() + g * kg * size
            # rows of wo kept pixels, stride[1] * c floats apart; ho rows per image
            rows = (wo, ho, stride[1] * c, stride[0] * wd * c, h * wd * c)
            _native.forward_cl(xg, c, yg, k, wg, 1, cg, b, n * p, cg, kg, act, threads, budget, *rows)
        else:  # per image W_g (K/G x C/G) @ X[n, g] (C/G x pixels)
            xg, yg = x.data_ptr() + g * cg * p * size, y.data_ptr() + g * kg * p * size
            _native.forward(xg, c * p, p, yg, k * p, p, wg, cg, 1, b, n, cg, kg, p, act, threads)
    return y


# NCHW images of 7 x 7 to 27 x 27 can go through the forward turned around, y^T = x^T W^T, on the
# channels_last kernel (pixels as rows, 12 at a time; output channels as columns, 32 at a time;
# W^T packed a block at a time and run over every image): a 7 x 7 image's 49 pixels are too few
# for the NCHW kernel's vectors of pixels, and they fill the turned tile's rows. Single images of
# 7 x 7 to 27 x 27: ResNet-50's 2048x7x7->512 and MobileNet's 1024x7x7->1024 0.52 ms against 0.88
# ms on the NCHW kernel and 0.70 ms for MKL, 14 x 14 layers 0.9-1.0x of the NCHW kernel's time; at
# 28 x 28 the NCHW kernel is ahead (0.74-0.76x of the turned time). Batches of images under 14 x 14,
# and of 14 x 14 to 27 x 27 that sum over more channels than they output: MobileNet's 1024x7x7->1024
# at batch 32 15.3 against 20.4 ms on the NCHW kernel's panels (F.conv2d 16-22 ms),
# 1024x14x14->256 16.9 against 18.4 ms for MKL; 256x14x14->1024 18.1 against 17.1 ms, not taken.
# So is a single strided image of any size: the kernel reads the kept pixels where they lie, with
# no gathered blocks (ResNet-50's 256x56x56->512 stride-2 shortcut 1.09 against 1.38 ms; at batch
# 32 image by image was slower than the gathered blocks). `native_details.py --section turned`.
# Images under 7 x 7 (2 to 48 pixels: the last stages of networks on small inputs, NiN's 4 x 4 and
# 2 x 2 maps on the 8 x 8 digits) turn too, single or in batches: the NCHW kernel took them an image
# at a time through a 16-pixel buffer (or side by side in panels where those fit the memory
# budget), MKL as one small product per image. Turned, on the Zen 5 machine, 0.10-0.25x of the
# better of the two on 2 x 2 and 3 x 3 images at batches of 2 to 64 over 64 to 1024 channels,
# 0.5-0.9x on 4 x 4 to 6 x 6 (the narrow 64 -> 64 at batch 32 on 4 x 4 the exception, 25 against
# 44 us), e.g. NiN's 128x2x2->128 at batch 64: 39-41 against 230-244 us (F.conv2d 70-79 us);
# `benchmarks/native_details.py --section tiny`.
def _turned(n: int, pixels: int, stride: tuple[int, int], c: int, k: int) -> bool:
    """Whether an NCHW forward of n images (pixels each, after the stride), c channels into k per
    group, runs turned around."""
    if stride != (1, 1):
        return n == 1
    return _tiny_image(pixels) or (_small_image(pixels) and (n == 1 or pixels < 196 or c > k))


def _tiny_image(pixels: int) -> bool:
    """2 to 48 pixels: under 7 x 7 (1 x 1 images run as one matrix: see _forward_native)."""
    return 1 < pixels < _NATIVE_MIN_PIXELS


def _small_image(pixels: int) -> bool:
    """7 x 7 to 27 x 27: the images the turned-around passes are measured on."""
    return _NATIVE_MIN_PIXELS <= pixels < _NATIVE_LARGE_PIXELS


# grad_input of a single image turned the same way (gx^T = grad^T W): 7 x 7 to 13 x 13 images,
# and up to 27 x 27 when it sums over 256 channels or more (ResNet-50's 2048x7x7->512 0.55
# against 0.67 ms on the NCHW kernel, its 1024x14x14->256 0.53 against 0.58; GoogLeNet's
# 480x14x14->192, summing 192, 0.20 against 0.19); and images under 7 x 7 in batches too, image
# after image as in the forward (Zen 5: 0.10-0.2x of the NCHW kernel's time on 2 x 2 images,
# 0.64-0.94x on 4 x 4, 0.4-0.95x on 6 x 6 with one narrow exception, 64 -> 64 at batch 32; at 7 x 7
# and larger, batches were within 0.55-1.8x either way, so they stay on the NCHW kernel).
def _turned_grad_input(n: int, pixels: int, summed: int) -> bool:
    return _tiny_image(pixels) or (n == 1 and _small_image(pixels) and (pixels < 196 or summed >= 256))


def _native_cl_ok(t: Tensor) -> bool:
    """The channels_last kernels are a candidate ("auto" times them, "rule" takes them where BLAS is
    far behind) or forced ("native")."""
    return _native_dtype_ok(t) and _policy in ("auto", "rule", "native")


# The channels_last kernel packs W^T into blocks of 32 columns (one group at a time), all of them
# at once while that copy stays within the same 9% of the input as oneDNN's weight reorder.
_NATIVE_CL_PACK_SHARE = _ONEDNN_WEIGHT_SHARE


# Beyond that the kernel packs W^T block by block into a workspace of its own (up to 2048 input
# channels: 32 columns x C floats per thread, kept between calls, as BLAS keeps its buffers).
_NATIVE_CL_WORKSPACE_MAX_C = 2048


def _native_cl_forward_ok(x: Tensor, w: Tensor, groups: int) -> bool:
    """The channels_last native forward can run within the memory budget: block by block, or whole."""
    kg, cg = w.shape[0] // groups, w.shape[1]
    return cg <= _NATIVE_CL_WORKSPACE_MAX_C or -(-kg // 32) * 32 * cg <= _NATIVE_CL_PACK_SHARE * x.numel()


def _mm_native_cl(a: Tensor, b: Tensor, out: Tensor) -> None:
    """out = a @ b for channels_last pixel matrices: a (pixels x C) and out with contiguous rows."""
    if a.dim() != 2 or a.stride(1) != 1 or out.stride(1) != 1 or not _native_dtype_ok(a):
        _mm_torch(a, b, out)
        return
    _native.forward_cl(
        a.data_ptr(), a.stride(0), out.data_ptr(), out.stride(0),
        b.data_ptr(), b.stride(0), b.stride(1), 0,
        a.shape[0], a.shape[1], b.shape[1], 0, torch.get_num_threads(),
        max(1, int(_NATIVE_CL_PACK_SHARE * min(a.numel(), out.numel()))),  # the op's input: a's or out's size
    )  # fmt: skip


def _grad_weight_native_cl(grad: Tensor, x: Tensor, stride: tuple[int, int], groups: int) -> Tensor:
    """grad_W for channels_last float32: sums over every kept pixel of the batch, per group. With a
    stride the kept pixels are gathered block by block (as _grad_weight_gemm does) and each block's
    sums are added into grad_W by the kernel itself: no scratch, no separate add."""
    n, k, ho, wo = grad.shape
    c = x.shape[1]
    cg, kg = c // groups, k // groups
    gw = _new_output((k, cg), grad, False)
    size, threads = grad.element_size(), torch.get_num_threads()

    def add(g_ptr: int, x_ptr: int, x_row: int, pixels: int, accumulate: int) -> None:
        for g in range(groups):
            _native.grad_weight_cl(
                g_ptr + g * kg * size, k,
                x_ptr + g * cg * size, x_row,
                gw.data_ptr() + g * kg * cg * size, cg,
                pixels, kg, cg, accumulate, threads,
            )  # fmt: skip

    if stride == (1, 1):
        add(grad.data_ptr(), x.data_ptr(), c, n * ho * wo, 0)
        return gw
    gm = _matrix(grad, True)
    rows, blocks = _blocks(x, n, ho, c * wo)
    if not blocks:  # an empty batch
        return gw.zero_()
    buf = x.new_empty(rows * wo * c)
    for i, blk in enumerate(blocks):
        xb = _pack(x, buf, blk, stride, wo, True)  # pixels x C
        add(_block_rows(gm, blk, ho, wo, True).data_ptr(), xb.data_ptr(), c, xb.shape[0], int(i > 0))
    return gw


def _forward_on(
    name: str,
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Tensor:
    """The forward pass on one named library, bias and activation included."""
    if name == "native":  # fuses them into its stores
        return _forward_native(x, w, bias, stride, groups, activation, channels_last)
    if name == "onednn":
        y = F.conv2d(x, w.view(*w.shape, 1, 1), None, stride, 0, 1, groups)
    else:
        y = _forward_gemm(_mm_numpy if name == "numpy" else _mm_torch, x, w, stride, groups, channels_last)
    return _finished(y, bias, activation, channels_last)


def _contiguous(x: Tensor, w: Tensor, channels_last: bool) -> tuple[Tensor, Tensor]:
    """x packed in its layout and w with contiguous rows, where they are not already (a sliced view,
    say: packed once)."""
    fmt = _format(channels_last)
    if not x.is_contiguous(memory_format=fmt):
        x = x.contiguous(memory_format=fmt)
    if not w.is_contiguous():
        w = w.contiguous()
    return x, w


def _forward(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Tensor:
    """The forward pass of packed x and w (see _contiguous) on the library the rule or the timing picks."""
    k, cg = w.shape
    if not channels_last:  # NCHW: the rule, no timing
        if _use_native("forward", x, cg, k // groups, False):
            return _forward_native(x, w, bias, stride, groups, activation, False)
    else:  # channels_last: the library remembered for this shape, else the fastest timed now
        key = _choice_key("forward", x, True, *x.shape, k, stride, groups)
        chosen = _choices.get(key) if _policy == "auto" else None
        if chosen is not None:  # the common case after the first call: straight there
            if _watched and key in _watched:
                call = functools.partial(_forward_on, chosen, x, w, bias, stride, groups, activation, True)
                return _watching(key, call)
            return _forward_on(chosen, x, w, bias, stride, groups, activation, True)
        native_cl = _native_cl_ok(x) and (_policy == "native" or _native_cl_forward_ok(x, w, groups))
        onednn = _onednn_ok(x, w, True)
        if native_cl or onednn:  # several libraries
            names = ["torch"] + ["numpy"] * (_policy == "numpy" and _numpy_ok(x))
            names += ["onednn"] * onednn + ["native"] * native_cl
            candidates = {
                name: functools.partial(_forward_on, name, x, w, bias, stride, groups, activation, True)
                for name in names
            }
            return _fastest(key, candidates)
    # one library: no bookkeeping on the way (small layers feel every microsecond)
    name = "numpy" if _policy == "numpy" and _numpy_ok(x) else "torch"
    return _forward_on(name, x, w, bias, stride, groups, activation, channels_last)


# ------------------------------------------------------------------------ backward


def _activation_grad(grad: Tensor, y: Tensor, activation: str | None) -> Tensor:
    """grad_y times the activation's derivative, read off the saved output y, in one pass."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad, y, 0.0)
    if activation == "relu6":
        # y lies strictly inside (0, 6) exactly where the input did
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)
    return grad


def _grad_input_gemm(
    mm: Matmul,
    grad: Tensor,
    w: Tensor,
    in_shape: tuple[int, ...],
    stride: tuple[int, int],
    groups: int,
    channels_last: bool,
) -> Tensor:
    """grad_x = W^T applied at every kept pixel; zero at the pixels the stride skipped."""
    n, k, ho, wo = grad.shape
    c = in_shape[1]
    cg, kg = c // groups, k // groups
    if (
        mm is _mm_torch
        and channels_last
        and stride == (1, 1)
        and groups == 1
        and grad.numel()
        and math.prod(in_shape) * grad.element_size() < MIN_BYTES
    ):  # a small result (not from the pool): torch's own allocation, one call, less Python
        return torch.mm(_matrix(grad, True), w).view(n, ho, wo, c).permute(0, 3, 1, 2)
    gx = _new_output(in_shape, grad, channels_last)
    if stride == (1, 1) and groups == 1 and gx.numel():  # the common case, in one call
        if channels_last or ho * wo == 1:  # (1 x 1 images: both layouts are the same N x K matrix)
            mm(_matrix(grad, True), w, _matrix(gx, True))  # dY (NHW x K) @ W (K x C)
        else:
            mm(w.t(), grad.view(n, k, ho * wo), gx.view(n, c, ho * wo))  # W^T (C x K) @ dY (N x K x HW)
        return gx
    if stride != (1, 1):
        gx.zero_()  # the skipped pixels
    if gx.numel() == 0 or grad.numel() == 0:
        return gx
    gm = _matrix(grad, channels_last)

    def product(gmb: Tensor, out: Tensor) -> None:
        if channels_last:  # dY_g (pixels x K/G) @ W_g (K/G x C/G) -> dX_g, a column block
            for a, b, o in zip(
                _split(gmb, kg, 1, groups), _split(w, kg, 0, groups), _split(out, cg, 1, groups), strict=True
            ):
                mm(a, b, o)
        else:  # W_g^T (C/G x K/G) @ dY[:, g] (images x K/G x pixels) -> dX[:, g]
            for a, b, o in zip(
                _split(w, kg, 0, groups), _split(gmb, kg, 1, groups), _split(out, cg, 1, groups), strict=True
            ):
                mm(a.t(), b, o)

    if stride == (1, 1):
        product(gm, _matrix(gx, channels_last))
        return gx
    rows, blocks = _blocks(gx, n, ho, c * wo)
    buf = gx.new_empty(rows * wo * c)
    for blk in blocks:
        i0, i1, r0, r1 = blk
        nb, nr = i1 - i0, r1 - r0
        if channels_last:
            out = buf[: nb * nr * wo * c].view(nb * nr * wo, c)
            product(_block_rows(gm, blk, ho, wo, True), out)
            _strided(gx, blk, stride).permute(0, 2, 3, 1).copy_(out.view(nb, nr, wo, c))
        else:
            out = buf[: nb * c * nr * wo].view(nb, c, nr * wo)
            product(_block_rows(gm, blk, ho, wo, False), out)
            _strided(gx, blk, stride).copy_(out.view(nb, c, nr, wo))
    return gx


def _grad_weight_gemm(
    mm: Matmul, grad: Tensor, x: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W = sum over every kept pixel of grad_y (K) times x (C), per group: one K/G x C/G block each."""
    n, k, ho, wo = grad.shape
    c = x.shape[1]
    cg, kg = c // groups, k // groups
    if (
        mm is _mm_torch
        and stride == (1, 1)
        and groups == 1
        and (channels_last or n == 1)
        and grad.numel()
        and c
        and k * c * grad.element_size() < MIN_BYTES
    ):  # a small result (not from the pool): torch's own allocation, one call, less Python
        if channels_last:
            return torch.mm(_matrix(grad, True).t(), _matrix(x, True))  # dY^T (K x NHW) @ X (NHW x C)
        return torch.mm(grad.view(k, ho * wo), x.view(c, ho * wo).t())  # dY (K x HW) @ X^T (HW x C)
    gw = _new_output((k, cg), grad, False)
    if grad.numel() == 0 or cg == 0:
        return gw.zero_()
    gm = _matrix(grad, channels_last)
    if channels_last and stride == (1, 1):  # the whole batch is one matrix: one GEMM per group
        for a, b, o in zip(
            _split(gm, kg, 1, groups),
            _split(_matrix(x, True), cg, 1, groups),
            _split(gw, kg, 0, groups),
            strict=True,
        ):
            mm(a.t(), b, o)  # dY_g^T (K/G x NHW) @ X_g (NHW x C/G)
        return gw
    if not channels_last and stride == (1, 1) and n == 1:  # one image: one GEMM per group
        for a, b, o in zip(
            _split(gm[0], kg, 0, groups),
            _split(_matrix(x, False)[0], cg, 0, groups),
            _split(gw, kg, 0, groups),
            strict=True,
        ):
            mm(a, b.t(), o)  # dY_g (K/G x HW) @ X_g^T (HW x C/G)
        return gw
    # A sum of products over blocks (and, NCHW, over the images of a block): each product lands in
    # a scratch (either BLAS can fill it) of at most 1/12 of the input, and is added to the total,
    # which float16/bfloat16 keep in float32.
    low = grad.dtype in (torch.float16, torch.bfloat16)
    acc = torch.zeros((k, cg), dtype=torch.float32, device=grad.device) if low else gw.zero_()
    unit = k * cg * grad.element_size()
    per_scratch = max(1, min(n, max(unit, x.numel() * x.element_size() // _PACK_SHARE) // unit))
    scratch = grad.new_empty((per_scratch if not channels_last else 1, k, cg))

    def accumulate(gmb: Tensor, xmb: Tensor) -> None:
        if channels_last:  # pixels x K and pixels x C: dY^T @ X
            for a, b, o in zip(
                _split(gmb, kg, 1, groups),
                _split(xmb, cg, 1, groups),
                _split(scratch[0], kg, 0, groups),
                strict=True,
            ):
                mm(a.t(), b, o)
            acc.add_(scratch[0])
            return
        for s0 in range(0, gmb.shape[0], per_scratch):  # images x K x P and images x C x P: dY @ X^T
            s1 = min(gmb.shape[0], s0 + per_scratch)
            part = scratch[: s1 - s0]
            for a, b, o in zip(
                _split(gmb[s0:s1], kg, 1, groups),
                _split(xmb[s0:s1], cg, 1, groups),
                _split(part, kg, 1, groups),
                strict=True,
            ):
                mm(a, b.transpose(1, 2), o)
            acc.add_(part.sum(0) if s1 - s0 > 1 else part[0])

    if stride == (1, 1):
        accumulate(gm, _matrix(x, channels_last))
    else:
        rows, blocks = _blocks(x, n, ho, c * wo)
        buf = x.new_empty(rows * wo * c)
        for blk in blocks:
            accumulate(
                _block_rows(gm, blk, ho, wo, channels_last), _pack(x, buf, blk, stride, wo, channels_last)
            )
    return gw.copy_(acc) if low else gw


def _grad_weight_native(grad: Tensor, x: Tensor, groups: int) -> Tensor:
    """grad_W for NCHW float32, stride 1, on the direct kernel: each group's sums over images and pixels."""
    n, k, h, wd = grad.shape
    c = x.shape[1]
    cg, kg, p = c // groups, k // groups, h * wd
    gw = _new_output((k, cg), grad, False)
    size, threads = grad.element_size(), torch.get_num_threads()
    for g in range(groups):
        _native.grad_weight(
            grad.data_ptr() + g * kg * p * size, k * p, p,
            x.data_ptr() + g * cg * p * size, c * p, p,
            gw.data_ptr() + g * kg * cg * size, cg,
            n, kg, cg, p, 0, threads,
        )  # fmt: skip
    return gw


def _grad_input_native(
    grad: Tensor, w: Tensor, in_shape: tuple[int, ...], groups: int, channels_last: bool
) -> Tensor:
    """grad_x for float32 at stride 1 on the direct kernels, straight from the tensors' pointers: per
    group W_g^T (C/G x K/G) @ dY[n, g] (NCHW) or dY_g (pixels x K/G) @ W_g (channels_last)."""
    n, k, h, wd = grad.shape
    c = in_shape[1]
    cg, kg, p = c // groups, k // groups, h * wd
    gx = _new_output(in_shape, grad, channels_last)
    if gx.numel() == 0:
        return gx
    size, threads = grad.element_size(), torch.get_num_threads()
    gp, xp, wp = grad.data_ptr(), gx.data_ptr(), w.data_ptr()
    rows_of_channels = not channels_last and p == 1  # 1 x 1 images: as channels_last (see _forward_native)
    turned = not channels_last and not rows_of_channels and _turned_grad_input(n, p, kg)
    for g in range(groups):
        wg = wp + g * kg * cg * size  # W_g: K/G x C/G, rows cg apart
        if turned:  # gx^T = grad^T W_g on the channels_last kernel, channels p apart (see _turned),
            # image after image: grad's images k * p apart, gx's c * p
            budget = max(1, int(_NATIVE_CL_PACK_SHARE * n * p * min(kg, cg)))
            _native.forward_cl(
                gp + g * kg * p * size, 1, xp + g * cg * p * size, 1, wg, cg, 1, 0,
                n * p, kg, cg, 0, threads, budget, p, 1, 1, 0, k * p, p, p, c * p,
            )  # fmt: skip
        elif channels_last or rows_of_channels:  # W_g's packed copy bounded as in _mm_native_cl
            budget = max(1, int(_NATIVE_CL_PACK_SHARE * n * p * min(kg, cg)))
            _native.forward_cl(
                gp + g * kg * size, k, xp + g * cg * size, c, wg, cg, 1, 0,
                n * p, kg, cg, 0, threads, budget,
            )  # fmt: skip
        else:  # W_g^T[i, j] = w[g*kg + j, i]: element strides (1, cg)
            _native.forward(
                gp + g * kg * p * size, k * p, p, xp + g * cg * p * size, c * p, p,
                wg, 1, cg, 0, n, kg, cg, p, 0, threads, n * cg * p,
            )  # fmt: skip
    return gx


def _onednn_backward(
    grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, which: int
) -> Tensor:
    mask = [which == 0, which == 1, False]
    w4 = w.view(*w.shape, 1, 1)
    res = torch.ops.aten.convolution_backward(
        grad, x, w4, None, list(stride), [0, 0], [1, 1], False, [0, 0], groups, mask
    )
    return res[which] if which == 0 else res[1].view(w.shape)


def _onednn_backward_both(
    grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int
) -> tuple[Tensor, Tensor]:
    w4 = w.view(*w.shape, 1, 1)
    res = torch.ops.aten.convolution_backward(
        grad, x, w4, None, list(stride), [0, 0], [1, 1], False, [0, 0], groups, [True, True, False]
    )
    return res[0], res[1].view(w.shape)


def _grad_input_on(
    name: str, grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_x on one named library."""
    if name == "onednn":
        return _onednn_backward(grad, x, w, stride, groups, 0)
    if name == "native" and stride == (1, 1):
        return _grad_input_native(grad, w, tuple(x.shape), groups, channels_last)
    if name == "native":  # a strided grad_x: gathered blocks
        mm = _mm_native_cl if channels_last else _mm_native_gx
    else:
        mm = _mm_numpy if name == "numpy" else _mm_torch
    return _grad_input_gemm(mm, grad, w, tuple(x.shape), stride, groups, channels_last)


def _grad_weight_on(
    name: str, grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W on one named library."""
    if name == "onednn":
        return _onednn_backward(grad, x, w, stride, groups, 1)
    if name == "native" and channels_last:
        return _grad_weight_native_cl(grad, x, stride, groups)
    if name == "native":
        return _grad_weight_native(grad, x, groups)
    mm = _mm_numpy if name == "numpy" else _mm_torch
    return _grad_weight_gemm(mm, grad, x, stride, groups, channels_last)


def _pass_on(
    pass_: str,
    run: Callable[..., R],
    names: list[str],
    grad: Tensor,
    x: Tensor,
    w: Tensor,
    stride: tuple[int, int],
    groups: int,
    channels_last: bool,
) -> R:
    """A backward pass on one of the libraries named (PyTorch's BLAS first): the one forced, the one
    remembered for this shape, or the fastest of them timed now."""
    if _policy != "auto" or len(names) == 1:
        return run(_untimed(names), grad, x, w, stride, groups, channels_last)
    key = _choice_key(pass_, grad, channels_last, *x.shape, w.shape[0], stride, groups)
    chosen = _choices.get(key)
    if chosen is not None:
        if _watched and key in _watched:
            return _watching(key, functools.partial(run, chosen, grad, x, w, stride, groups, channels_last))
        return run(chosen, grad, x, w, stride, groups, channels_last)
    cands = {name: functools.partial(run, name, grad, x, w, stride, groups, channels_last) for name in names}
    return _fastest(key, cands)


def _grad_input(
    grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_x on the library the rule (NCHW float32) or the timing picks."""
    k, cg = w.shape
    if _use_native("grad_input", grad, k // groups, cg, channels_last):
        return _grad_input_on("native", grad, x, w, stride, groups, False)
    names = ["torch"] + ["numpy"] * (_policy == "numpy" and _numpy_ok(grad))
    names += ["onednn"] * _onednn_ok(x, w, channels_last)
    names += ["native"] * (channels_last and _native_cl_ok(grad))
    return _pass_on("grad_input", _grad_input_on, names, grad, x, w, stride, groups, channels_last)


def _grad_weight(
    grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> Tensor:
    """grad_W on the library the rule (NCHW float32) or the timing picks."""
    k, cg = w.shape
    if stride == (1, 1) and _use_native("grad_weight", grad, cg, k // groups, channels_last):
        return _grad_weight_native(grad, x, groups)
    names = ["torch"] + ["numpy"] * (_policy == "numpy" and _numpy_ok(grad))
    names += ["onednn"] * _onednn_ok(x, w, channels_last)
    names += ["native"] * (channels_last and _native_cl_ok(grad))
    return _pass_on("grad_weight", _grad_weight_on, names, grad, x, w, stride, groups, channels_last)


def _backward_on(
    name: str, grad: Tensor, x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
) -> tuple[Tensor, Tensor]:
    """grad_x and grad_W: in one oneDNN call, or pass by pass on the libraries each picks."""
    if name == "onednn":
        return _onednn_backward_both(grad, x, w, stride, groups)
    return (
        _grad_input(grad, x, w, stride, groups, channels_last),
        _grad_weight(grad, x, w, stride, groups, channels_last),
    )


class _Conv1x1Function(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        w: Tensor,
        stride: tuple[int, int],
        groups: int,
        activation: str | None,
        channels_last: bool,
    ) -> Tensor:
        # weight: the caller's tensor (K x C/g x 1 x 1 or K x C/g), the input whose gradient is
        # returned; w: the same values as K x C/g with contiguous rows, detached, what is computed
        # with. A view of weight made outside would put a view node into the graph (3 us of the
        # seed's 10x32x32->4 forward+backward here, 70.4 against 67.4 us interleaved).
        y = _forward(x, w, bias, stride, groups, activation, channels_last)
        ctx.save_for_backward(x, w, y if activation is not None else None)
        ctx.conf = (stride, groups, activation, bias is not None, channels_last, weight.shape)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, y = ctx.saved_tensors
        stride, groups, activation, has_bias, channels_last, weight_shape = ctx.conf
        if activation is not None:
            grad = _activation_grad(grad, y, activation)
        fmt = _format(channels_last)
        if not grad.is_contiguous(memory_format=fmt):
            grad = grad.contiguous(memory_format=fmt)
        gx = gw = gb = None
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if want_x and want_w:
            # oneDNN computes both in one call, sharing its reorder of grad: timed against the
            # best of the passes one by one
            names = ["torch"] + ["onednn"] * _onednn_ok(x, w, channels_last)
            gx, gw = _pass_on("backward", _backward_on, names, grad, x, w, stride, groups, channels_last)
        else:
            gx = _grad_input(grad, x, w, stride, groups, channels_last) if want_x else None
            gw = _grad_weight(grad, x, w, stride, groups, channels_last) if want_w else None
        if gw is not None and len(weight_shape) == 4:
            gw = gw.reshape(weight_shape)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


def conv1x1(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
) -> Tensor:
    """Pointwise (1x1) convolution: ``y[n, k] = act(sum_c weight[k, c] * x[n, c] + bias[k])``.

    Args:
        x: input, N x C x H x W, contiguous (NCHW) or channels_last.
        weight: K x C/groups x 1 x 1 (as ``nn.Conv2d`` keeps it) or K x C/groups.
        bias: optional, K values.
        stride: subsample rows and columns (an int or a (row, col) pair), as ResNet's
            1x1 stride-2 shortcut does.
        groups: split channels and filters into this many independent groups
            (ShuffleNet's grouped 1x1).
        activation: ``None``, ``"relu"`` or ``"relu6"``, applied in place on the result.

    Returns:
        N x K x ceil(H/stride) x ceil(W/stride), in the input's memory format.

    Raises:
        TypeError: a non-tensor, an integer or complex dtype, mixed dtypes.
        ValueError: wrong number of dimensions, a kernel that is not 1x1, channels that
            do not match the weight, groups that do not divide the channels, stride < 1,
            tensors on different devices, an unknown activation.
    """
    x, w, bias, stride_pair, groups, activation = _check(x, weight, bias, stride, groups, activation)
    channels_last = _is_channels_last(x)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    x, w = _contiguous(x, w, channels_last)
    if not needs_grad:  # inference: no autograd bookkeeping, nothing saved
        return _forward(x, w, bias, stride_pair, groups, activation, channels_last)
    y: Tensor = _Conv1x1Function.apply(x, weight, bias, w, stride_pair, groups, activation, channels_last)
    return y
