"""The passes on oneDNN, PyTorch's own convolution library (what F.conv2d runs on the CPU)."""

from __future__ import annotations

import torch
from torch import Tensor

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# oneDNN often reorders the weights into its own blocked layout first, a copy as big as the
# weights (measured): allowed while that stays within the op's 10% extra-memory budget
_ONEDNN_WEIGHT_SHARE = 0.09  # 9%: the rest of the budget covers the small scratch besides

_HAS_ONEDNN = torch.backends.mkldnn.is_available()

def _onednn_ok(x: Tensor, w: Tensor, channels_last: bool) -> bool:
    """oneDNN's convolution is a candidate: channels_last on the CPU (on NCHW it copies the whole
    input into its blocked layout first, ten times the op's memory budget; NCHW bfloat16 reaches
    oneDNN anyway, as the matmul under PyTorch's BLAS candidate), a dtype it runs, and its copy of
    the weights within the memory budget."""
    return (
        channels_last
        and x.is_cpu
        and x.dtype in _ONEDNN_DTYPES
        and _HAS_ONEDNN
        and w.numel() <= _ONEDNN_WEIGHT_SHARE * x.numel()
    )


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
