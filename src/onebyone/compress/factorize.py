"""The factorizations: a k x k convolution as Tucker-2, a 1x1 convolution or a Linear as two through rank R.

Tucker-2 (Kim et al. 2016, "Compression of deep convolutional neural networks for fast and low power
mobile applications", arXiv 1511.06530) writes the K x C x kh x kw kernel W as a core G of
R2 x R1 x kh x kw between two matrices, U_in (C x R1) and U_out (K x R2):

    W[k, c] = sum over r2, r1 of U_out[k, r2] G[r2, r1] U_in[c, r1]

which is three layers: a 1x1 reduction C -> R1 (``reduce``, U_in transposed), the k x k core
R1 -> R2 with the original stride, padding and dilation (``core``), and a 1x1 expansion
R2 -> K (``restore``, U_out, carrying the bias). It is exactly the Inception bottleneck: a 1x1
reduction before the expensive spatial convolution. The factors come from the higher-order SVD
(the leading left singular vectors of the kernel's two channel unfoldings) refined by a few
sweeps of higher-order orthogonal iteration. A mode kept at full rank needs no factor (it would
be an orthogonal C x C matrix: cost and nothing else), so it is left out: the first layer of an
image network (C = 1 or 3) gets only its output mode reduced, as in Kim et al.

A 1x1 convolution or a Linear layer is a K x C matrix: its truncated SVD U S V^T gives two
layers through rank R, ``reduce`` = S^1/2 V^T (with the stride) and ``restore`` = U S^1/2
(with the bias and a fused activation).

Every new 1x1 layer is an :class:`onebyone.Conv1x1`, so it runs on the op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import Conv1x1

__all__ = ["LowRank", "Tucker2", "factorize", "full_ranks", "plan", "skeleton"]

#: Sweeps of higher-order orthogonal iteration after the HOSVD (each lowers the fit's error a
#: little; two are most of what more would give on trained kernels).
HOOI_SWEEPS = 2


class Tucker2(nn.Sequential):
    """A k x k convolution as ``reduce`` (1x1, C -> R1), ``core`` (k x k, R1 -> R2), ``restore``
    (1x1, R2 -> K, with the bias); ``reduce`` or ``restore`` is absent where its rank is full."""

    def __init__(self, conv: nn.Conv2d, ranks: Sequence[int]) -> None:
        super().__init__()
        r1, r2 = (int(r) for r in ranks)
        c, k = conv.in_channels, conv.out_channels
        self.ranks = (r1, r2)
        self.in_channels, self.out_channels = c, k
        dev, dt = conv.weight.device, conv.weight.dtype
        bias = conv.bias is not None
        if r1 < c:
            self.add_module("reduce", Conv1x1(c, r1, bias=False, device=dev, dtype=dt))
        self.add_module("core", nn.Conv2d(
            r1, r2, conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
            bias=bias and r2 == k, padding_mode=conv.padding_mode, device=dev, dtype=dt))
        if r2 < k:
            self.add_module("restore", Conv1x1(r2, k, bias=bias, device=dev, dtype=dt))


class LowRank(nn.Sequential):
    """A 1x1 convolution or Linear layer C -> K as ``reduce`` (C -> R) and ``restore`` (R -> K)."""

    def __init__(self, layer: Any, rank: int) -> None:
        super().__init__()
        r = int(rank)
        self.ranks = (r,)
        has_bias = getattr(layer, "bias", None) is not None
        weight: Tensor = layer.weight
        dev, dt = weight.device, weight.dtype
        if isinstance(layer, nn.Linear):
            self.in_channels, self.out_channels = layer.in_features, layer.out_features
            self.add_module("reduce", nn.Linear(layer.in_features, r, bias=False, device=dev, dtype=dt))
            self.add_module("restore", nn.Linear(r, layer.out_features, bias=has_bias, device=dev, dtype=dt))
            return
        c, k = int(layer.in_channels), int(layer.out_channels)
        self.in_channels, self.out_channels = c, k
        stride: Any = layer.stride if isinstance(layer, (Conv1x1, nn.Conv2d)) else 1
        activation = layer.activation if isinstance(layer, Conv1x1) else None
        self.add_module("reduce", Conv1x1(c, r, bias=False, stride=stride, device=dev, dtype=dt))
        self.add_module("restore", Conv1x1(r, k, bias=has_bias, activation=activation, device=dev, dtype=dt))


# --------------------------------------------------------------- what can be factorized


def plan(m: Any) -> tuple[str | None, str]:
    """``(method, why)``: "tucker2", "svd", or None with the reason the layer is left alone."""
    if type(m) is nn.Linear:
        return "svd", "linear layer"
    if type(m) is Conv1x1 or type(m) is nn.Conv2d:
        groups, c = int(m.groups), int(m.in_channels)
        if groups > 1:
            what = "depthwise" if groups == c else f"grouped (groups={groups})"
            return None, f"{what} convolution: its groups are too thin to factorize"
        if type(m) is Conv1x1:
            return "svd", "1x1 convolution"
        conv: nn.Conv2d = m  # type: ignore[assignment]
        if tuple(conv.kernel_size) == (1, 1):
            if conv.padding not in ((0, 0), 0, "valid"):
                return None, f"1x1 convolution with padding {conv.padding}: not factorized"
            return "svd", "1x1 convolution"
        return "tucker2", f"{conv.kernel_size[0]}x{conv.kernel_size[1]} convolution"
    return None, f"{type(m).__name__}: not a convolution or linear layer"


def full_ranks(m: Any, method: str) -> tuple[int, ...]:
    """The ranks at which the factorization is exact: (C, K) for Tucker-2 (less where the kernel's
    unfoldings are narrower), (min(C, K),) for SVD."""
    if isinstance(m, nn.Linear):
        return (min(m.in_features, m.out_features),)
    c, k = int(m.in_channels), int(m.out_channels)
    if method == "tucker2":
        area = int(m.weight[0, 0].numel())
        # a mode's rank cannot exceed the other dimension of its unfolding
        return min(c, k * area), min(k, c * area)
    return (min(c, k),)


def matrix_of(m: Any) -> Tensor:
    """The weight of a 1x1 convolution or Linear as the K x C matrix it is (float64)."""
    w: Tensor = m.weight
    return w.detach().double().reshape(w.shape[0], -1)


def unfoldings(weight: Tensor) -> tuple[Tensor, Tensor]:
    """A K x C x kh x kw kernel's channel unfoldings: input mode C x (K kh kw), output mode K x (C kh kw)."""
    w = weight.detach().double()
    return w.transpose(0, 1).reshape(w.shape[1], -1), w.reshape(w.shape[0], -1)


def _leading(a: Tensor, r: int) -> Tensor:
    u, _, _ = torch.linalg.svd(a, full_matrices=False)
    return u[:, :r]


def tucker2_factors(weight: Tensor, r1: int, r2: int,
                    sweeps: int = HOOI_SWEEPS) -> tuple[Tensor, Tensor, Tensor]:
    """``(u_in C x R1, core R2 x R1 x kh x kw, u_out K x R2)`` in float64, by HOSVD then HOOI."""
    w = weight.detach().double()
    k, c = w.shape[:2]
    unfold_in, unfold_out = unfoldings(w)
    u_in, u_out = _leading(unfold_in, r1), _leading(unfold_out, r2)
    for _ in range(sweeps if (r1 < c or r2 < k) else 0):
        # each factor again, from the kernel with the other mode already projected
        u_in = _leading(torch.einsum("kchw,kr->crhw", w, u_out).reshape(c, -1), r1)
        u_out = _leading(torch.einsum("kchw,cs->kshw", w, u_in).reshape(k, -1), r2)
    core = torch.einsum("kchw,kr,cs->rshw", w, u_out, u_in)
    return u_in, core, u_out


@torch.no_grad()
def factorize(m: Any, method: str, ranks: Sequence[int]) -> nn.Module:
    """The factorized replacement of ``m`` at ``ranks`` (new module; ``m`` is not changed)."""
    out: nn.Module
    if method == "tucker2":
        conv: nn.Conv2d = m
        r1, r2 = ranks
        u_in, core, u_out = tucker2_factors(conv.weight, r1, r2)
        t: Any = Tucker2(conv, (r1, r2))
        dt = conv.weight.dtype
        # a mode at full rank has no layer: fold its (orthogonal) factor into the core
        if r1 == conv.in_channels:
            core = torch.einsum("rshw,cs->rchw", core, u_in)
        else:
            t.reduce.weight.copy_(u_in.T.reshape(r1, -1, 1, 1).to(dt))
        if r2 == conv.out_channels:
            core = torch.einsum("rchw,kr->kchw", core, u_out)
        else:
            t.restore.weight.copy_(u_out.reshape(-1, r2, 1, 1).to(dt))
        t.core.weight.copy_(core.to(dt))
        last = t.restore if r2 < conv.out_channels else t.core
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
        out = t
    elif method == "svd":
        (r,) = ranks
        w = matrix_of(m)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:r].sqrt()
        low: Any = LowRank(m, r)
        dt = m.weight.dtype
        reduce_w: Tensor = low.reduce.weight
        restore_w: Tensor = low.restore.weight
        reduce_w.copy_((root[:, None] * vh[:r]).reshape(reduce_w.shape).to(dt))
        restore_w.copy_((u[:, :r] * root).reshape(restore_w.shape).to(dt))
        bias = getattr(m, "bias", None)
        if bias is not None:
            low.restore.bias.copy_(bias)
        out = low
    else:
        raise ValueError(f"method must be 'tucker2' or 'svd', got {method!r}")
    for p in out.parameters():
        p.requires_grad_(any(q.requires_grad for q in m.parameters()))
    return out.train(m.training)


def skeleton(m: Any, method: str, ranks: Sequence[int]) -> nn.Module:
    """The factorized module's shape alone (weights uninitialised): for loading saved weights into."""
    if method == "tucker2":
        return Tucker2(m, ranks)
    if method == "svd":
        return LowRank(m, ranks[0])
    raise ValueError(f"method must be 'tucker2' or 'svd', got {method!r}")
