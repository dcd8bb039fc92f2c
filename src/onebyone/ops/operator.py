"""conv1x1, the public entry point: the registered operator, or its kernels called directly in plain
eager mode."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import Tensor
from torch.nn import Parameter

from . import choice, step
from .checks import _check, _is_channels_last, _pair
from .library import _as_convolution, conv1x1_op
from .passes import _activation_grad, _contiguous, _forward_library, _forward_on, backward, forward_runner
from .views import _format


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
        name: str,
        sig: tuple[Any, ...] | None,
    ) -> Tensor:
        # weight: the caller's tensor (K x C/g x 1 x 1 or K x C/g), the input whose gradient is
        # returned; w: the same values as K x C/g with contiguous rows, detached, what is computed
        # with. A view of weight made outside would put a view node into the graph (3 us of the
        # seed's 10x32x32->4 forward+backward here, 70.4 against 67.4 us interleaved). name: the
        # forward's library; sig: the call's signature where the backward's libraries may be
        # remembered (see _eager), else None.
        y = _forward_on(name, x, w, bias, stride, groups, activation, channels_last)
        ctx.save_for_backward(x, w, y if activation is not None else None)
        ctx.conf = (stride, groups, activation, bias is not None, channels_last, weight.shape, sig)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, y = ctx.saved_tensors
        stride, groups, activation, has_bias, channels_last, weight_shape, sig = ctx.conf
        grad = _activation_grad(grad, y, activation)
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        plan = None if sig is None else ("backward", sig, want_x, want_w)
        gx, gw = backward(grad, x, w, stride, groups, channels_last, want_x, want_w, plan)
        if gw is not None and len(weight_shape) == 4:
            gw = gw.reshape(weight_shape)
        gb = grad.sum(dim=(0, 2, 3)) if has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None, None, None, None, None


_PLAIN = (Tensor, Parameter)


def _plain_eager(x: Any, weight: Any, bias: Any) -> bool:
    """True when nothing but eager autograd watches this call: plain tensors (no subclass, no
    FakeTensor, no fx Proxy), no tracer, no dispatch or function mode, no functorch transform, no
    autocast, real data. Then the op's kernels run without the dispatcher's round trip (about
    10 us, what the seed's small layers would otherwise pay twice over)."""
    return (
        type(x) in _PLAIN
        and type(weight) in _PLAIN
        and (bias is None or type(bias) in _PLAIN)
        and not x.is_meta
        and torch._C._get_tracing_state() is None
        and not torch._C._len_torch_dispatch_stack()
        and not torch._C._is_torch_function_mode_enabled()
        and torch._C._functorch.peek_interpreter_stack() is None
        and not torch._C._is_any_autocast_enabled()
    )


def _onnx_exporting() -> bool:
    """True while torch.onnx.export traces; cheap, and imports nothing when torch.onnx is unused."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and bool(onnx.is_in_onnx_export())


def _exported(x: Any, weight: Any, bias: Any, stride: Any, groups: Any, activation: Any) -> Tensor:
    """The op as the convolution it decomposes into, its inputs cast first under autocast as the
    op's autocast kernel casts them (so a bfloat16 activation meets a float32 weight)."""
    if isinstance(x, Tensor) and torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight, bias = (
            t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t for t in (x, weight, bias)
        )
    _, _, _, pair, _, activation = _check(x, weight, bias, stride, groups, activation)
    return _as_convolution(x, weight, bias, pair, groups, activation)


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

    The op is registered with PyTorch as ``torch.ops.onebyone.conv1x1`` (see ops/library.py), so
    that ``torch.compile``, ``torch.export``, ``torch.jit.trace``, FakeTensor, autocast and
    ``torch.onnx.export`` see one operator; in plain eager mode this function runs the op's
    kernels itself, without the dispatcher's round trip.

    Raises:
        TypeError: a non-tensor, an integer or complex dtype, mixed dtypes.
        ValueError: wrong number of dimensions, a kernel that is not 1x1, channels that
            do not match the weight, groups that do not divide the channels, stride < 1,
            tensors on different devices, an unknown activation.
    """
    if torch.compiler.is_compiling():  # the op, checked by its fake kernel
        if _onnx_exporting():  # ONNX knows convolutions, not this op
            return _exported(x, weight, bias, stride, groups, activation)
        return conv1x1_op(x, weight, bias, _pair(stride, "stride"), groups, activation)
    if _plain_eager(x, weight, bias):
        return _eager(x, weight, bias, stride, groups, activation)
    if _onnx_exporting():
        return _exported(x, weight, bias, stride, groups, activation)
    tensors = isinstance(x, Tensor) and isinstance(weight, Tensor)
    tensors = tensors and (bias is None or isinstance(bias, Tensor))
    if not tensors and not isinstance(x, torch.fx.Proxy):
        _check(x, weight, bias, stride, groups, activation)  # the TypeError the schema would hide
    y: Tensor = conv1x1_op(x, weight, bias, _pair(stride, "stride"), groups, activation)
    return y


def _eager(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int | tuple[int, int],
    groups: int,
    activation: str | None,
) -> Tensor:
    """The op's kernels and a lean autograd function, called directly (benchmarks/conv1x1.py
    --overhead times this against conv1x1 itself)."""
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    sig = _signature(x, weight, bias, stride, groups, activation)
    plan = None if sig is None else choice._plans.get(sig)
    if sig is not None and plan is not None:  # a call seen before: checked then, its layout known
        name, pair, channels_last, steps, run = plan
        if needs_grad:
            library = steps[2 * x.requires_grad + weight.requires_grad]
            if library is not None and library != "op":  # the whole step on PyTorch's own ops
                return step.aten_step(library, x, weight, bias, pair, groups, activation, channels_last)
            if library == "op":
                return _function(x, weight, bias, pair, groups, activation, channels_last, name, sig)
            return _training(x, weight, bias, pair, groups, activation, channels_last, name, sig, steps)
        if run is not None:  # worked out when the plan was made: the kernels and an output
            return run(x, weight, bias)
        # no gradient is wanted, so a view of the weight joins no graph: no detach (0.3 us)
        w = weight.view(weight.shape[0], -1) if weight.dim() == 4 else weight
        return _forward_on(name, x, w, bias, pair, groups, activation, channels_last)
    x, w, bias, stride_pair, groups, activation = _check(x, weight, bias, stride, groups, activation)
    channels_last = _is_channels_last(x)
    packed = x.is_contiguous(memory_format=_format(channels_last)) and weight.is_contiguous()
    x, w = _contiguous(x, w, channels_last)
    # a packed CPU call's checks, layout and libraries are remembered under its signature: in
    # training too (the seed's 10x32x32->4 forward+backward spent a fifth of its time on them)
    keep = sig if packed and x.is_cpu else None
    if keep is not None and len(choice._plans) >= _MAX_PLANS:  # ever new sizes: start again
        choice._plans.clear()
    with torch.no_grad():  # a new key's timing runs the candidates: no graph of them
        name = _forward_library(x, w, bias, stride_pair, groups, activation, channels_last)
    if keep is not None and type(name) is str:  # not while the key is on trial (choice.Trial)
        # and, once decided, the library of a training call's whole step, by which gradients it wants
        # and the forward itself where it can be worked out once (onebyone's kernels)
        run = forward_runner(name, x, w, bias, stride_pair, groups, activation, channels_last)
        choice._plans[keep] = (name, stride_pair, channels_last, [None] * 4, run)
    if not needs_grad:  # inference: no autograd bookkeeping, nothing saved
        return _forward_on(name, x, w, bias, stride_pair, groups, activation, channels_last)
    y = _Conv1x1Function.apply(x, weight, bias, w, stride_pair, groups, activation, channels_last,
                               name, keep)
    return y


def _function(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
    name: str,
    sig: tuple[Any, ...] | None,
) -> Tensor:
    """A training call on conv1x1's autograd function, its forward on library ``name``."""
    w = weight.detach()
    w = w.view(w.shape[0], -1) if w.dim() == 4 else w
    y: Tensor = _Conv1x1Function.apply(x, weight, bias, w, stride, groups, activation, channels_last, name,
                                       sig)
    return y


def _training(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    groups: int,
    activation: str | None,
    channels_last: bool,
    name: str,
    sig: tuple[Any, ...],
    steps: list[str | None],
) -> Tensor:
    """A training call seen before whose whole step is not decided yet: on the autograd function,
    and once its passes have settled (the backward's libraries remembered under
    ("backward", sig, ...)), the step timed on the function against PyTorch's own ops
    (ops/step.py) and kept in ``steps``."""
    want_x, want_w = x.requires_grad, weight.requires_grad

    def op(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _function(x, weight, bias, stride, groups, activation, channels_last, name, sig)

    if ("backward", sig, want_x, want_w) not in choice._plans:
        return op(x, weight, bias)  # the passes not yet settled
    t0 = time.perf_counter()
    y = op(x, weight, bias)
    took = time.perf_counter() - t0
    library = step.decide_step(op, took, x, weight, bias, stride, groups, activation, channels_last)
    if library is not None:
        steps[2 * want_x + want_w] = library
    return y


_MAX_PLANS = 4096


def _signature(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, groups: Any, activation: Any
               ) -> tuple[Any, ...] | None:
    """What an inference call's checks and choice depend on: the tensors' shapes, strides, dtypes
    and devices, the arguments, the thread count. None for arguments of other types (a bool
    stride equals 1 in a key, but the checks refuse it)."""
    if type(stride) is tuple and len(stride) == 2 and type(stride[0]) is int and type(stride[1]) is int:
        pass
    elif type(stride) is not int:
        return None
    if type(groups) is not int or not (activation is None or type(activation) is str):
        return None
    b = None if bias is None else (bias.shape, bias.stride(), bias.dtype, bias.is_cpu)
    return (x.shape, x.stride(), x.dtype, x.is_cpu, weight.shape, weight.stride(), weight.dtype,
            weight.is_cpu, b, stride, groups, activation, torch.get_num_threads())
