"""The passes on onebyone's own float32 CPU kernels (``_native.c``).

A block of outputs is kept in registers while the channels stream past, the bias and activation
applied before the store, on PyTorch's own OpenMP threads. Two kernels: the NCHW one (vectors of
pixels) and the channels_last one (micro-tiles of pixels x output channels), which also runs NCHW
problems turned around (y^T = x^T W^T) where an image has too few pixels for the first.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
from torch import Tensor

from . import workspace
from .checks import ACTIVATIONS
from .gemm import _finished, _forward_gemm, _mm_torch
from .onednn import _ONEDNN_WEIGHT_SHARE
from .pool import _allocator, _new_output
from .views import _block_rows, _blocks, _matrix, _pack

try:
    from onebyone import _native
except ImportError:  # not built (no C compiler when it was installed): the BLAS libraries alone
    _native = None  # type: ignore[assignment]

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


def _forward_native(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
    turned: bool = False,
    flat: bool = False,
) -> Tensor:
    """float32 on the direct kernels, either layout, bias and activation fused into the stores.
    ``turned`` runs NCHW images turned around, y^T = x^T W^T, on the channels_last kernel (pixels as
    rows: what suits images too small for the NCHW kernel's vectors of pixels; a candidate of its
    own, see passes.py); otherwise an NCHW batch with a stride goes by the gathered blocks of
    _forward_gemm and the epilogue after (its kept pixels are not contiguous), a channels_last
    input is read where it lies. ``flat``: at stride 1, the channels_last kernel's micro-tiles run
    on across rows and images (every pixel of the batch one row), where they otherwise end at each
    row's end (see _flat_ok)."""
    run = _native_forward_runner(tuple(x.shape), x.dtype, tuple(w.shape[:2]), stride, groups, activation,
                                 channels_last, turned, flat, torch.get_num_threads())
    if run is None:  # an NCHW batch with a stride: its kept pixels gathered block by block
        y = _forward_gemm(_mm_native, x, w, stride, groups, channels_last)
        return _finished(y, bias, activation, channels_last)
    if bias is not None and not bias.is_contiguous():
        bias = bias.contiguous()
    return run(x, w, bias)


#: A forward worked out for one call's shapes: ``run(x, w, bias) -> y``.
Runner = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


@functools.lru_cache(maxsize=1024)
def _native_forward_runner(
    x_shape: tuple[int, ...],
    dtype: torch.dtype,
    w_shape: tuple[int, int],
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
    turned: bool,
    flat: bool,
    threads: int,
) -> Runner | None:
    """_forward_native for tensors of these shapes and dtype packed in their layout, everything but
    their addresses worked out once: ``run(x, w, bias)`` allocates y and calls the kernels (w:
    K x C/G with contiguous rows, or the same memory as K x C/G x 1 x 1; bias contiguous or None).
    None where the forward does not go straight to the kernels (an NCHW batch with a stride, not
    turned). A call seen before runs its runner (ops/operator.py) with no shape arithmetic, views or
    checks: microseconds a call, what the seed's small layers take in all."""
    n, c, h, wd = x_shape
    k, cg = w_shape
    ho, wo = -(-h // stride[0]), -(-wd // stride[1])
    kg, p = k // groups, ho * wo
    # NCHW 1 x 1 images lie in memory as channels_last ones (a row of channels each): the batch is one
    # product on the channels_last kernel, where the NCHW kernel took it an image (one pixel) at a time
    # (64x512x1x1 -> 1000: 0.6 against 10.7 ms on a Zen 4; BENCHMARKS.md)
    numel = n * c * h * wd
    rows_of_channels = not channels_last and h * wd == 1 and _cl_forward_fits(numel, k // groups, cg)
    turned = turned and not channels_last and not rows_of_channels
    if stride != (1, 1) and not channels_last and not turned and not rows_of_channels:
        return None
    alloc = _allocator((n, k, ho, wo), dtype, channels_last)
    act = 0 if activation is None else ACTIVATIONS.index(activation) + 1
    size = dtype.itemsize
    budget = max(1, int(_NATIVE_CL_PACK_SHARE * numel))  # channels_last kernel: a copy of all of W^T
    # per group: the kernel's name, the byte offsets of X_g, Y_g, W_g and b_g, and the arguments after them
    calls: list[tuple[str, int, int, int, int, tuple[int, ...], tuple[int, ...],
                      tuple[int, ...], tuple[int, ...]]] = []
    for g in range(groups):
        w_at, b_at = g * kg * cg * size, g * kg * size
        if turned:  # NCHW images as y^T = x^T W^T: the channels_last kernel, channels h*wd apart
            if stride == (1, 1):  # an image is one row of p pixels, 1 apart; images c*p and k*p apart
                images = (p, 1, 1, 0, c * p, h * wd, p, k * p)
            else:  # ho rows of wo kept pixels, stride[1] apart, the rows stride[0] * wd apart
                images = (wo, ho, stride[1], stride[0] * wd, c * h * wd, h * wd, p, k * p)
            calls.append(("forward_cl", g * cg * h * wd * size, g * kg * p * size, w_at, b_at,
                          (1,), (1,), (1, cg), (n * p, cg, kg, act, threads, budget, *images)))
        elif channels_last or rows_of_channels:  # X_g (kept pixels x C/G) @ W_g^T: W_g^T[i, j] = w[g*kg+j, i]
            # rows of wo kept pixels, stride[1] * c floats apart; ho rows per image
            rows = () if flat else (wo, ho, stride[1] * c, stride[0] * wd * c, h * wd * c)
            calls.append(("forward_cl", g * cg * size, g * kg * size, w_at, b_at,
                          (c,), (k,), (1, cg), (n * p, cg, kg, act, threads, budget, *rows)))
        else:  # per image W_g (K/G x C/G) @ X[n, g] (C/G x pixels)
            calls.append(("forward", g * cg * p * size, g * kg * p * size, w_at, b_at,
                          (c * p, p), (k * p, p), (cg, 1), (n, cg, kg, p, act, threads)))

    def run(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        y = alloc()
        xp, yp, wp, bp = x.data_ptr(), y.data_ptr(), w.data_ptr(), 0 if bias is None else bias.data_ptr()
        for kernel, x_at, y_at, w_at, b_at, after_x, after_y, after_w, rest in calls:
            getattr(_native, kernel)(xp + x_at, *after_x, yp + y_at, *after_y, wp + w_at, *after_w,
                                     bp and bp + b_at, *rest)
        return y

    return run


# The channels_last kernel packs W^T into blocks of 32 columns (one group at a time), all of them
# at once while that copy stays within the same 9% of the input as oneDNN's weight reorder.
_NATIVE_CL_PACK_SHARE = _ONEDNN_WEIGHT_SHARE


# Beyond that the kernel packs W^T block by block into a workspace of its own (up to 2048 input
# channels: 32 columns x C floats per thread, kept between calls, as BLAS keeps its buffers).
_NATIVE_CL_WORKSPACE_MAX_C = 2048


def _native_cl_forward_ok(x: Tensor, w: Tensor, groups: int) -> bool:
    """The channels_last native forward can run within the memory budget: block by block, or whole."""
    return _cl_forward_fits(x.numel(), w.shape[0] // groups, w.shape[1])


def _cl_forward_fits(numel: int, kg: int, cg: int) -> bool:
    return cg <= _NATIVE_CL_WORKSPACE_MAX_C or -(-kg // 32) * 32 * cg <= _NATIVE_CL_PACK_SHARE * numel


def _flat_ok(x: Tensor, stride: tuple[int, int]) -> bool:
    """The channels_last kernel can take a stride-1 batch as one row of pixels as well as row by row
    of its images, and the two differ: micro-tiles that end at a row's end are short on small images
    (one pixel each on 1 x 1 ones), and tiles running on across rows put up to 12 rows of input into
    one cache set when those rows are a multiple of 4 KiB apart. Which is faster is measured (the
    candidates "native" and "native_flat", passes.py)."""
    return stride == (1, 1) and x.shape[0] * x.shape[2] > 1


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
    buf = workspace.gathered(rows * wo * c, x.dtype)
    for i, blk in enumerate(blocks):
        xb = _pack(x, buf, blk, stride, wo, True)  # pixels x C
        add(_block_rows(gm, blk, ho, wo, True).data_ptr(), xb.data_ptr(), c, xb.shape[0], int(i > 0))
    return gw


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
    grad: Tensor,
    w: Tensor,
    in_shape: tuple[int, ...],
    groups: int,
    channels_last: bool,
    turned: bool = False,
    flat: bool = False,
) -> Tensor:
    """grad_x for float32 at stride 1 on the direct kernels, straight from the tensors' pointers: per
    group W_g^T (C/G x K/G) @ dY[n, g] (NCHW) or dY_g (pixels x K/G) @ W_g (channels_last); ``turned``
    runs NCHW images as gx^T = grad^T W_g on the channels_last kernel, image after image; ``flat``
    as in _forward_native."""
    n, k, h, wd = grad.shape
    c = in_shape[1]
    cg, kg, p = c // groups, k // groups, h * wd
    gx = _new_output(in_shape, grad, channels_last)
    if gx.numel() == 0:
        return gx
    size, threads = grad.element_size(), torch.get_num_threads()
    gp, xp, wp = grad.data_ptr(), gx.data_ptr(), w.data_ptr()
    rows_of_channels = not channels_last and p == 1  # 1 x 1 images: as channels_last (see _forward_native)
    turned = turned and not channels_last and not rows_of_channels
    for g in range(groups):
        wg = wp + g * kg * cg * size  # W_g: K/G x C/G, rows cg apart
        if turned:  # gx^T = grad^T W_g on the channels_last kernel, channels p apart, image after
            # image: grad's images k * p apart, gx's c * p
            budget = max(1, int(_NATIVE_CL_PACK_SHARE * n * p * min(kg, cg)))
            _native.forward_cl(
                gp + g * kg * p * size, 1, xp + g * cg * p * size, 1, wg, cg, 1, 0,
                n * p, kg, cg, 0, threads, budget, p, 1, 1, 0, k * p, p, p, c * p,
            )  # fmt: skip
        elif channels_last or rows_of_channels:  # W_g's packed copy bounded as in _mm_native_cl
            budget = max(1, int(_NATIVE_CL_PACK_SHARE * n * p * min(kg, cg)))
            # row by row of the images, as the forward goes, or with flat every pixel as one row
            rows = () if flat or rows_of_channels else (wd, h, k, wd * k, p * k)
            _native.forward_cl(
                gp + g * kg * size, k, xp + g * cg * size, c, wg, cg, 1, 0,
                n * p, kg, cg, 0, threads, budget, *rows,
            )  # fmt: skip
        else:  # W_g^T[i, j] = w[g*kg + j, i]: element strides (1, cg)
            _native.forward(
                gp + g * kg * p * size, k * p, p, xp + g * cg * p * size, c * p, p,
                wg, 1, cg, 0, n, kg, cg, p, 0, threads, n * cg * p,
            )  # fmt: skip
    return gx

