"""The bfloat16 passes on onebyone's own AMX kernel (``_native_amx.h``).

Where the CPU has AMX-BF16 tiles (and Linux grants them), bfloat16 layers get candidates of their
own besides PyTorch's: "amx" reads the input where it lies (channels_last: the pixels' rows of
channels are the tiles' rows; NCHW: each image's channel-by-pixel matrix is repacked 32 pixels at a
time) and "amx_turned" runs a channels_last layer as y^T = W x^T (the weights' rows are the tiles'
rows, the input repacked 32 pixels at a time, the output stored transposed); grad_input and grad_W
map onto the same product. Only a block of 32 columns (and, for grad_W on channels_last, a tile of
grad_y's rows) is ever copied, into a scratch each thread keeps, so the forward's extra memory
stays a few hundred KiB whatever the batch; oneDNN's bfloat16 matmul, under the "torch"
candidate, packs a whole operand on every call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import ACTIVATIONS
from .pool import _new_output

try:
    from onebyone import _native
except ImportError:  # not built: no AMX candidates
    _native = None  # type: ignore[assignment]


def amx_available() -> bool:
    """Whether onebyone's AMX kernel runs here: built, on a CPU with AMX-BF16 whose tiles Linux grants."""
    return _native is not None and hasattr(_native, "amx") and bool(_native.amx())


_AMX = amx_available()


def _amx_ok(x: Tensor) -> bool:
    return _AMX and x.dtype is torch.bfloat16 and x.is_cpu


def _gemm(a: int, lda: int, an: int, b: int, sbk: int, sbn: int, bn: int, out: int, som: int, son: int,
          on: int, bias: int, bias_rows: bool, images: int, m: int, n: int, kd: int, act: int) -> None:
    """One call of the kernel (see _native.gemm_bf16): a bfloat16 output, PyTorch's thread count."""
    _native.gemm_bf16(a, lda, an, b, sbk, sbn, bn, out, som, son, on, bias, int(bias_rows), images, m, n, kd,
                      act, torch.get_num_threads())


def _forward_amx(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
    turned: bool = False,
) -> Tensor:
    """bfloat16 x (packed in its layout) and w (rows contiguous) on the AMX kernel, bias and
    activation fused into the stores. NCHW 1 x 1 images lie as channels_last ones and run so."""
    n, c, h, wd = x.shape
    k, cg = w.shape
    s0, s1 = stride
    ho, wo = -(-h // s0), -(-wd // s1)
    kg, p = k // groups, ho * wo
    y = _new_output((n, k, ho, wo), x, channels_last)
    if y.numel() == 0:
        return y
    if bias is not None and not bias.is_contiguous():
        bias = bias.contiguous()
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    act = 0 if activation is None else ACTIVATIONS.index(activation) + 1
    rows_of_channels = not channels_last and h * wd == 1
    size = x.element_size()
    # strided images as rows of kept pixels: one "image" of the kernel per output row; the batch
    # is one run of them where the rows of all images are s0 * wd input rows apart (h a multiple of s0)
    row_runs = [(n * ho, 0)] if h % s0 == 0 else [(ho, i) for i in range(n)]
    for g in range(groups):
        wg = w.data_ptr() + g * kg * cg * size
        b = 0 if bias is None else bias.data_ptr() + g * kg * size
        if not (channels_last or rows_of_channels):  # per image W_g (kg x cg) @ X[n, g] (cg x pixels)
            xg, yg = x.data_ptr() + g * cg * h * wd * size, y.data_ptr() + g * kg * p * size
            if stride == (1, 1):
                _gemm(wg, cg, 0, xg, h * wd, 1, c * h * wd, yg, p, 1, k * p, b, True, n, kg, p, cg, act)
                continue
            for i in range(n):  # each output row: its wo kept pixels, s1 apart
                _gemm(wg, cg, 0, xg + i * c * h * wd * size, h * wd, s1, s0 * wd, yg + i * k * p * size, p, 1,
                      wo, b, True, ho, kg, wo, cg, act)
            continue
        xg, yg = x.data_ptr() + g * cg * size, y.data_ptr() + g * kg * size
        if stride == (1, 1) or rows_of_channels:
            if turned:  # y^T (kg x pixels) = W_g x^T: x's pixel rows read as columns, y stored transposed
                _gemm(wg, cg, 0, xg, 1, c, 0, yg, 1, k, 0, b, True, 1, kg, n * h * wd, cg, act)
            else:  # x (pixels x cg) @ W_g^T: W_g^T(i, j) = w[g*kg + j, i]
                _gemm(xg, c, 0, wg, 1, cg, 0, yg, k, 1, 0, b, False, 1, n * h * wd, kg, cg, act)
            continue
        for images, i in row_runs:  # strided channels_last: turned, one output row per kernel image
            x0, y0 = xg + i * h * wd * c * size, yg + i * p * k * size
            _gemm(wg, cg, 0, x0, 1, s1 * c, s0 * wd * c, y0, 1, k, wo * k, b, True, images, kg, wo, cg, act)
    return y


def _grad_input_amx(grad: Tensor, w: Tensor, in_shape: tuple[int, ...], groups: int, channels_last: bool,
                    turned: bool = False, stride: tuple[int, int] = (1, 1)) -> Tensor:
    """bfloat16 grad_x on the AMX kernel, per group: W_g^T (cg x kg) @ dY[n, g] per NCHW image;
    dY_g (pixels x kg) @ W_g for channels_last, or turned, gx^T = W_g^T dY_g^T (the output stored
    transposed). W_g^T is copied with rows contiguous where it is the tiles' rows (weight-sized). A
    strided grad_x (channels_last, not turned) is zero but at the kept pixels, which the kernel
    writes row by row of the output, s1 pixels apart."""
    n, k, h, wd = grad.shape
    c = in_shape[1]
    cg, kg, p = c // groups, k // groups, h * wd
    gx = _new_output(in_shape, grad, channels_last)
    if gx.numel() == 0:
        return gx
    size = grad.element_size()
    if stride != (1, 1):  # channels_last (see grad_input_candidates)
        gx.zero_()
        s0, s1 = stride
        hi, wi = in_shape[2], in_shape[3]
        runs = [(n * h, 0)] if hi % s0 == 0 else [(h, i) for i in range(n)]
        for g in range(groups):
            for images, i in runs:  # kernel image = one output row: wd pixels of dY, K apart
                _gemm(grad.data_ptr() + (i * p * k + g * kg) * size, k, wd * k, w[g * kg].data_ptr(), cg, 1,
                      0, gx.data_ptr() + (i * hi * wi * c + g * cg) * size, s1 * c, 1, s0 * wi * c, 0, False,
                      images, wd, cg, kg, 0)
        return gx
    rows_of_channels = not channels_last and p == 1
    cl = channels_last or rows_of_channels
    for g in range(groups):
        wg = w[g * kg:(g + 1) * kg]
        if cl and not turned:  # B = W_g (kg x cg): rows contiguous
            _gemm(grad.data_ptr() + g * kg * size, k, 0, wg.data_ptr(), cg, 1, 0,
                  gx.data_ptr() + g * cg * size, c, 1, 0, 0, False, 1, n * p, cg, kg, 0)
            continue
        wt = wg.t().contiguous()  # A = W_g^T (cg x kg)
        if cl:  # turned: B(kk, pixel) = dY[pixel, g*kg + kk], gx^T stored transposed
            _gemm(wt.data_ptr(), kg, 0, grad.data_ptr() + g * kg * size, 1, k, 0,
                  gx.data_ptr() + g * cg * size, 1, c, 0, 0, True, 1, cg, n * p, kg, 0)
        else:
            _gemm(wt.data_ptr(), kg, 0, grad.data_ptr() + g * kg * p * size, p, 1, k * p,
                  gx.data_ptr() + g * cg * p * size, p, 1, c * p, 0, True, n, cg, p, kg, 0)
    return gx


def _grad_weight_amx(grad: Tensor, x: Tensor, groups: int) -> Tensor:
    """bfloat16 grad_W for NCHW at stride 1 on the AMX kernel: per group, dY[n, g] (kg x pixels) @
    X[n, g]^T summed over the images in float32 (a weight-sized buffer), rounded once at the end."""
    n, k, h, wd = grad.shape
    c = x.shape[1]
    cg, kg, p = c // groups, k // groups, h * wd
    acc = torch.zeros((k, cg), dtype=torch.float32)
    if n * p == 0:
        return acc.to(grad.dtype)
    size = grad.element_size()
    for g in range(groups):  # B(pixel, channel) = x[n, g*cg + channel, pixel]: pairs of pixels adjacent
        _native.gemm_bf16(grad.data_ptr() + g * kg * p * size, p, k * p, x.data_ptr() + g * cg * p * size, 1,
                          p, c * p, acc.data_ptr() + g * kg * cg * 4, cg, 1, 0, 0, 0, n, kg, cg, p, 0,
                          torch.get_num_threads(), 1, 0, 1)
    return acc.to(grad.dtype)


# Pixels summed per call of the channels_last grad_W: the reduction of one kernel image (each
# image's sums are added to the float32 total in the output's stores).
_GW_PIXELS = 1024


def _grad_weight_amx_cl(grad: Tensor, x: Tensor, groups: int) -> Tensor:
    """bfloat16 grad_W for channels_last at stride 1 on the AMX kernel: per group, dY_g^T @ X_g over
    every pixel of the batch, _GW_PIXELS pixels a kernel image summed in float32 (a weight-sized
    buffer). dY_g^T's rows are dY's columns: the kernel repacks them a tile at a time."""
    n, k, h, wd = grad.shape
    c = x.shape[1]
    cg, kg, p = c // groups, k // groups, n * h * wd
    acc = torch.zeros((k, cg), dtype=torch.float32)
    size, threads = grad.element_size(), torch.get_num_threads()
    chunk = min(p, _GW_PIXELS)
    whole = p // chunk if chunk else 0
    runs = [(0, whole, chunk, 0), (whole * chunk, 1, p - whole * chunk, 1)]
    for g in range(groups):
        for start, images, pixels, accumulate in runs:
            if images == 0 or pixels == 0:
                continue
            # A(k', pixel) = dY[pixel, g*kg + k'] (columns contiguous), B(pixel, c') = x[pixel, g*cg + c']
            _native.gemm_bf16(grad.data_ptr() + (start * k + g * kg) * size, 1, chunk * k,
                              x.data_ptr() + (start * c + g * cg) * size, c, 1, chunk * c,
                              acc.data_ptr() + g * kg * cg * 4, cg, 1, 0, 0, 0, images, kg, cg, pixels, 0,
                              threads, 1, accumulate, 1, k)
    return acc.to(grad.dtype)
