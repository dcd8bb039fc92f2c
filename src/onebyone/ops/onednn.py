"""The passes on oneDNN, PyTorch's own convolution library (what F.conv2d runs on the CPU)."""

from __future__ import annotations

import torch
from torch import Tensor

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# oneDNN often reorders the weights into its own blocked layout first, a copy as big as the
# weights (measured): allowed while that stays within the op's 10% extra-memory budget
_ONEDNN_WEIGHT_SHARE = 0.09  # 9%: the rest of the budget covers the small scratch besides

_HAS_ONEDNN = torch.backends.mkldnn.is_available()

def _onednn_runs(x: Tensor, channels_last: bool) -> bool:
    """channels_last on the CPU (on NCHW it copies the whole input into its blocked layout first,
    ten times the op's memory budget; NCHW bfloat16 reaches oneDNN anyway, as the matmul under
    PyTorch's BLAS candidate), in a dtype it runs."""
    return channels_last and x.is_cpu and x.dtype in _ONEDNN_DTYPES and _HAS_ONEDNN


def _onednn_ok(x: Tensor, w: Tensor, channels_last: bool) -> bool:
    """oneDNN's convolution is a candidate of the forward: where it runs, and its copy of the
    weights within the forward's memory budget (a share of the input)."""
    return _onednn_runs(x, channels_last) and w.numel() <= _ONEDNN_WEIGHT_SHARE * x.numel()


#: Copies of the weights' size a backward pass on oneDNN adds (measured on 256x14x14->1024,
#: 1024x7x7->1024 and 528x14x14->256 at batch 32: grad_input one, grad_weight and both at once two,
#: its result written blocked and then reordered); docs/op.md.
_BACKWARD_COPIES = {"grad_input": 1, "grad_weight": 2, "both": 2}


def _onednn_backward_ok(x: Tensor, w: Tensor, stride: tuple[int, int], channels_last: bool,
                        which: str) -> bool:
    """oneDNN is a candidate of a backward pass (``which``: grad_input, grad_weight or both): where
    it runs, and its copies of the weights within the budget's share of what the backward holds,
    the upstream gradient and the input."""
    if not _onednn_runs(x, channels_last):
        return False
    n, _, h, wd = x.shape
    grad = n * w.shape[0] * -(-h // stride[0]) * -(-wd // stride[1])
    return _BACKWARD_COPIES[which] * w.numel() <= _ONEDNN_WEIGHT_SHARE * (grad + x.numel())


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
