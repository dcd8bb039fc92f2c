"""A training call as one whole: the op's passes through its autograd function, or PyTorch's own
differentiable ops with their C++ autograd nodes.

A pass's choice (passes.py) times the products; what it cannot see is the call around them: a
Python autograd function (its forward, the engine calling back into Python for its backward, the
bias gradient as one more op). On a layer whose products take microseconds that is most of the
step (the seed's 10x32x32->4, BENCHMARKS.md), so once a training call's passes have settled, its
whole step is timed on each candidate, forward and backward, and the faster kept, per key as
every other choice. The candidates:

- ``"op"``: conv1x1's autograd function on the passes chosen for it;
- ``"aten"``: the same product as ``torch.mm`` / ``torch.addmm`` on a single NCHW image's view,
  or ``F.linear`` on the channels_last one (stride 1, one group: a view, no copy; on an NCHW batch
  ``torch.matmul`` turns it around with copies of the input and of the output, twice the input
  beyond the op's memory budget, measured by tests/test_step.py, so it is no candidate there);
- ``"thnn"``: PyTorch's own GEMM convolution (``torch._C._nn.thnn_conv2d``, aten's
  ``_slow_conv2d_forward``; stride 1, one group: a 1x1 kernel there reads the input where it
  lies, with no column copy, and its backward is one node that also sums the bias gradient; that
  backward's own scratch, measured, is 2.5% of the input and upstream gradient at batch 32, up to
  a third of them at batch 1, a few hundred KiB);
- ``"conv2d"``: ``F.conv2d``, where oneDNN's convolution is a candidate of the passes (its
  NCHW path copies the whole input, beyond the op's memory budget).

A step is timed only where a few whole steps of every candidate fit in the timing budget, judged
by the caller's own forward; elsewhere the products dominate the step and the op is kept untimed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import choice
from .choice import choice_key, decide
from .onednn import _onednn_ok
from .views import _format

#: A training step's products, in forward products: the forward, grad_x and grad_W.
_STEP_PRODUCTS = 3
# a sample of every candidate in each of choice's rounds and its warm-up: a step of a few hundred
# microseconds varied by a third from one call to the next on the Zen 3 VM, so a sample holds as many steps as
# the budget allows, and below a warm-up and three rounds of one step each the step is not timed
_SAMPLES = 2 + choice._MAX_ROUNDS
_MIN_SAMPLES = 4
_GATES = 3


def step_pass(want_x: bool, want_w: bool) -> str:
    """The pass name a step's choice is kept under: which gradients the step computes changes it
    (a first layer's input wants none)."""
    if want_x and want_w:
        return "step"
    return "step_weight" if want_w else "step_input" if want_x else "step_bias"


def step_candidates(x: Tensor, w: Tensor, stride: tuple[int, int], groups: int, channels_last: bool
                    ) -> list[str]:
    names = ["op"]
    if x.is_cpu and stride == (1, 1) and groups == 1:
        names += ["aten"] * (channels_last or x.shape[0] == 1) + ["thnn"]
    if _onednn_ok(x, w, channels_last):
        names.append("conv2d")
    return names


def aten_step(
    name: str,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> Tensor:
    """The call on PyTorch's differentiable ops (``name`` "aten", "thnn" or "conv2d"): autograd
    records their own nodes."""
    k = weight.shape[0]
    if name in ("conv2d", "thnn"):
        w4 = weight if weight.dim() == 4 else weight.view(k, -1, 1, 1)
        if name == "thnn":  # stride 1, one group (step_candidates)
            thnn = torch._C._nn.thnn_conv2d  # type: ignore[attr-defined]  # not in the stubs
            return _activated(thnn(x, w4, [1, 1], bias, [1, 1], [0, 0]), activation)
        return _activated(F.conv2d(x, w4, bias, stride, 0, 1, groups), activation)
    # the activation in place on the product itself, before the view to N x K x H x W: in place on
    # a view, autograd would rebase the view's history on every call
    n, c, h, wd = x.shape
    w2 = weight.view(k, c)
    if channels_last:  # N x H x W x C, the memory as it lies
        return _activated(F.linear(x.permute(0, 2, 3, 1), w2, bias), activation).permute(0, 3, 1, 2)
    xm = x.view(c, h * wd)  # a single image (step_candidates)
    y = torch.mm(w2, xm) if bias is None else torch.addmm(bias.view(k, 1), w2, xm)
    return _activated(y, activation).view(n, k, h, wd)


def _activated(y: Tensor, activation: str | None) -> Tensor:
    if activation == "relu":
        return F.relu(y, inplace=True)
    if activation == "relu6":
        return F.relu6(y, inplace=True)
    return y


def decide_step(
    op: Callable[..., Tensor],
    forward_seconds: float,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
) -> str | None:
    """The library of this training call's whole step, timed now (samples of whole steps on
    detached copies of the call's tensors; the seconds kept are a sample's) where they fit in the
    budget. ``op(x, weight, bias)`` runs the call on conv1x1's autograd function;
    ``forward_seconds`` is what the caller's forward took on it.
    None: not decided yet (ask on a later call)."""
    want_x, want_w = x.requires_grad, weight.requires_grad
    names = step_candidates(x, weight, stride, groups, channels_last)
    if len(names) == 1:
        return "op"
    key = choice_key(step_pass(want_x, want_w), channels_last, x.shape, weight.shape[0], stride, groups,
                     x.dtype)
    known = choice.untimed(key) is not None  # pinned (a resumed run), cached, or a policy's
    step_seconds = _STEP_PRODUCTS * forward_seconds
    if not known and step_seconds * _MIN_SAMPLES * len(names) > choice.TIMING_BUDGET:
        # the products are the step, and the function's Python a small share of it; but one slow
        # forward (a page fault, the host busy elsewhere) must not decide it: asked again on the
        # next calls, up to _GATES of them, then kept on the function as a choice of this process
        # (so that a training run records it, and its resumption pins it)
        gated = choice._gated
        gated[key] = gated.get(key, 0) + 1
        if gated[key] < _GATES and len(gated) <= 4096:
            return None
        choice._choices[key] = "op"
        return "op"
    grads: list[Tensor] = []
    reps = 1

    def run(name: str, x: Tensor, weight: Tensor, bias: Tensor | None) -> None:  # reps whole steps
        leaves = (x.detach().requires_grad_(want_x), weight.detach().requires_grad_(want_w),
                  None if bias is None else bias.detach().requires_grad_(bias.requires_grad))
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        for _ in range(reps):
            if name == "op":
                y = op(*leaves)
            else:
                y = aten_step(name, *leaves, stride, groups, activation, channels_last)
            if not grads:  # the upstream gradient in the output's own layout, as a loss gives it
                grads.append(torch.ones_like(y, memory_format=_format(channels_last)))
            torch.autograd.grad(y, wanted, grads[0])

    if not known:
        # one step on the op first: a backward's fixed costs (the engine, the calls into Python)
        # do not scale with the forward, and a sample of reps steps must leave room for them all
        t0 = time.perf_counter()
        run("op", x, weight, bias)
        reps = max(1, int(choice.TIMING_BUDGET / (max(step_seconds, time.perf_counter() - t0) * _SAMPLES
                                                  * len(names))))
    return decide(key, names, run, (x, weight, bias), (0, 0, 0), trial=False)
