"""conv1x1 registered with PyTorch as the operator ``torch.ops.onebyone.conv1x1``.

What the registration gives, and who needs it:

- the kernels (``CompositeExplicitAutograd``): the passes of passes.py, opaque to every tracer, so
  that ``torch.compile``, ``torch.export`` and ``torch.jit.trace`` record one call instead of
  reading the data pointers the native kernels take;
- the fake kernels: output shapes and strides without data, for FakeTensor, the meta device and
  the compilers;
- autograd, through the library: the backward ops below, so that AOTAutograd sees them too;
- autocast: floating inputs cast to the autocast dtype, as ``F.conv2d`` is, so that
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` reaches the bfloat16 kernels;
- a FLOP formula for ``torch.utils.flop_counter``;
- a decomposition into ``aten.convolution``: what ``torch.onnx.export`` writes as a Conv node,
  and what an exported program becomes under ``run_decompositions(decompositions())``. It is kept
  out of PyTorch's global decomposition table on purpose: inductor refuses to fall back to the
  op's kernels when a global decomposition exists and ``CI`` is set in the environment, and would
  otherwise decompose the op away from them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.flop_counter
from torch import Tensor

from .checks import _check, _is_channels_last
from .passes import _activation_grad, _contiguous, _forward, backward
from .views import _format

_LIB = torch.library.Library("onebyone", "DEF")
_TAGS = (torch.Tag.pt2_compliant_tag,)
_LIB.define(
    "conv1x1(Tensor x, Tensor weight, Tensor? bias=None, int[2] stride=1, int groups=1, "
    "str? activation=None) -> Tensor",
    tags=_TAGS,
)
_GRAD_ARGS = "(Tensor grad, Tensor x, Tensor weight, int[2] stride, int groups)"
_LIB.define(f"conv1x1_grad_input{_GRAD_ARGS} -> Tensor", tags=_TAGS)
_LIB.define(f"conv1x1_grad_weight{_GRAD_ARGS} -> Tensor", tags=_TAGS)
_LIB.define(f"conv1x1_backward{_GRAD_ARGS} -> (Tensor, Tensor)", tags=_TAGS)

conv1x1_op = torch.ops.onebyone.conv1x1.default
_grad_input_op = torch.ops.onebyone.conv1x1_grad_input.default
_grad_weight_op = torch.ops.onebyone.conv1x1_grad_weight.default
_backward_op = torch.ops.onebyone.conv1x1_backward.default


def _out_shape(x: Tensor, k: int, stride: tuple[int, int]) -> tuple[Any, ...]:
    n, _, h, w = x.shape
    return (n, k, (h - 1) // stride[0] + 1, (w - 1) // stride[1] + 1)


def _checked_grad(grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int) -> tuple[Any, ...]:
    """The backward ops' arguments checked as the forward's are, and grad's shape against the output's."""
    if not isinstance(grad, Tensor):
        raise TypeError(f"grad must be a torch.Tensor, got {type(grad).__name__}")
    x, w, _, pair, groups, _ = _check(x, weight, None, stride, groups, None)
    expected = _out_shape(x, w.shape[0], pair)
    if tuple(grad.shape) != expected:
        raise ValueError(f"grad must have the output's shape {expected}, got {tuple(grad.shape)}")
    if grad.dtype != x.dtype:
        raise TypeError(f"grad must have x's dtype {x.dtype}, got {grad.dtype}")
    return x, w, pair, groups


# ------------------------------------------------------------------------ kernels


def forward_kernel(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = (1, 1),
    groups: int = 1,
    activation: str | None = None,
) -> Tensor:
    """The forward on real tensors: what the op runs, and what plain eager calls without it."""
    x, w, bias, pair, groups, activation = _check(x, weight, bias, stride, groups, activation)
    channels_last = _is_channels_last(x)
    x, w = _contiguous(x, w, channels_last)
    return _forward(x, w, bias, pair, groups, activation, channels_last)


def _backward_kernel(
    grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int, want_x: bool, want_w: bool
) -> tuple[Tensor | None, Tensor | None]:
    x, w, pair, groups = _checked_grad(grad, x, weight, stride, groups)
    channels_last = _is_channels_last(x)
    x, w = _contiguous(x, w, channels_last)
    gx, gw = backward(grad, x, w, pair, groups, channels_last, want_x, want_w)
    return gx, None if gw is None else gw.reshape(weight.shape)


def _grad_input_kernel(grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int) -> Tensor:
    gx, _ = _backward_kernel(grad, x, weight, stride, groups, True, False)
    assert gx is not None
    return gx


def _grad_weight_kernel(grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int) -> Tensor:
    _, gw = _backward_kernel(grad, x, weight, stride, groups, False, True)
    assert gw is not None
    return gw


def _both_kernel(grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int) -> tuple[Tensor, Tensor]:
    gx, gw = _backward_kernel(grad, x, weight, stride, groups, True, True)
    assert gx is not None and gw is not None
    return gx, gw


_LIB.impl("conv1x1", forward_kernel, "CompositeExplicitAutograd")
_LIB.impl("conv1x1_grad_input", _grad_input_kernel, "CompositeExplicitAutograd")
_LIB.impl("conv1x1_grad_weight", _grad_weight_kernel, "CompositeExplicitAutograd")
_LIB.impl("conv1x1_backward", _both_kernel, "CompositeExplicitAutograd")


# ------------------------------------------------------------------------ fake kernels
# The real kernels return x's memory format for the output and grad_x, and the weight's shape,
# contiguous, for grad_W: the fakes promise the same strides.


@torch.library.register_fake("onebyone::conv1x1", lib=_LIB)
def _forward_fake(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = (1, 1),
    groups: int = 1,
    activation: str | None = None,
) -> Tensor:
    x, w, _, pair, _, _ = _check(x, weight, bias, stride, groups, activation)
    fmt = _format(_is_channels_last(x))
    return x.new_empty(_out_shape(x, w.shape[0], pair)).contiguous(memory_format=fmt)


@torch.library.register_fake("onebyone::conv1x1_grad_input", lib=_LIB)
def _grad_input_fake(grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int) -> Tensor:
    x, _, _, _ = _checked_grad(grad, x, weight, stride, groups)
    return x.new_empty(x.shape).contiguous(memory_format=_format(_is_channels_last(x)))


@torch.library.register_fake("onebyone::conv1x1_grad_weight", lib=_LIB)
def _grad_weight_fake(grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int) -> Tensor:
    _checked_grad(grad, x, weight, stride, groups)
    return weight.new_empty(weight.shape)


@torch.library.register_fake("onebyone::conv1x1_backward", lib=_LIB)
def _both_fake(grad: Tensor, x: Tensor, weight: Tensor, stride: Any, groups: int) -> tuple[Tensor, Tensor]:
    gx = _grad_input_fake(grad, x, weight, stride, groups)
    return gx, _grad_weight_fake(grad, x, weight, stride, groups)


# ------------------------------------------------------------------------ autograd


# The dispatcher drops trailing arguments left at their defaults: inputs and needs_input_grad may be
# shorter than the schema.
_DEFAULTS: tuple[Any, ...] = (None, [1, 1], 1, None)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    full: tuple[Any, ...] = (*inputs, *_DEFAULTS[len(inputs) - 2 :])
    x, weight, bias, stride, groups, activation = full
    ctx.save_for_backward(x, weight, output if activation is not None else None)
    ctx.conf = (stride, groups, activation, bias is not None, len(inputs))


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, weight, y = ctx.saved_tensors
    stride, groups, activation, has_bias, n_inputs = ctx.conf
    grad = _activation_grad(grad, y, activation)
    want_x, want_w, want_b = (*ctx.needs_input_grad, False)[:3]
    gx = gw = gb = None
    if want_x and want_w:
        gx, gw = _backward_op(grad, x, weight, stride, groups)
    elif want_x:
        gx = _grad_input_op(grad, x, weight, stride, groups)
    elif want_w:
        gw = _grad_weight_op(grad, x, weight, stride, groups)
    if has_bias and want_b:
        gb = grad.sum(dim=(0, 2, 3))
    return (gx, gw, gb, None, None, None)[:n_inputs]


torch.library.register_autograd("onebyone::conv1x1", _backward, setup_context=_setup_context, lib=_LIB)


# ------------------------------------------------------------------------ autocast


def _autocast_kernel(device_type: str) -> Any:
    """Floating inputs on device_type cast to the autocast dtype in force, as F.conv2d's are (not a
    fixed dtype: torch.autocast may ask for float16 as well as bfloat16), then the op below autocast."""
    key = getattr(torch._C.DispatchKey, "Autocast" + torch._C._dispatch_key_for_device(device_type))

    def cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        if t is None or not t.is_floating_point() or t.device.type != device_type or t.dtype == dtype:
            return t
        return t.to(dtype)

    def kernel(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        stride: Any = (1, 1),
        groups: int = 1,
        activation: str | None = None,
    ) -> Tensor:
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            args = (cast(x, dtype), cast(weight, dtype), cast(bias, dtype))
            return conv1x1_op(*args, stride, groups, activation)

    return key, kernel


for _device in ("cpu", "cuda"):
    _key, _kernel = _autocast_kernel(_device)
    _LIB.impl("conv1x1", _kernel, _key.name)
    conv1x1_op.py_impl(_key)(_kernel)  # the same rule when the compilers trace through Python


# ------------------------------------------------------------------------ FLOPs (1 MAC = 2 FLOPs)


def _flops(x_shape: Any, w_shape: Any, out_shape: Any) -> int:
    n, k, ho, wo = out_shape
    return 2 * n * k * ho * wo * w_shape[1]


@torch.utils.flop_counter.register_flop_formula(torch.ops.onebyone.conv1x1)
def _forward_flops(x_shape: Any, w_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return _flops(x_shape, w_shape, out_shape)


@torch.utils.flop_counter.register_flop_formula(
    [torch.ops.onebyone.conv1x1_grad_input, torch.ops.onebyone.conv1x1_grad_weight]
)
def _grad_flops(grad_shape: Any, x_shape: Any, w_shape: Any, *args: Any, **kwargs: Any) -> int:
    return _flops(x_shape, w_shape, grad_shape)


@torch.utils.flop_counter.register_flop_formula(torch.ops.onebyone.conv1x1_backward)
def _both_flops(grad_shape: Any, x_shape: Any, w_shape: Any, *args: Any, **kwargs: Any) -> int:
    return 2 * _flops(x_shape, w_shape, grad_shape)


# ------------------------------------------------------------------------ export to standard operators


def _as_convolution(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = (1, 1),
    groups: int = 1,
    activation: str | None = None,
) -> Tensor:
    """conv1x1 in core ATen: what torch.onnx.export writes (a Conv node, then Relu or Clip; the
    operator function calls it while an ONNX export traces), and what an exported program becomes
    under run_decompositions(decompositions())."""
    aten = torch.ops.aten
    w4 = weight if weight.dim() == 4 else weight[:, :, None, None]
    pair = [stride, stride] if isinstance(stride, int) else list(stride)
    y = aten.convolution.default(x, w4, bias, pair, [0, 0], [1, 1], False, [0, 0], groups)
    if activation == "relu":
        return aten.relu.default(y)
    if activation == "relu6":
        return aten.hardtanh.default(y, 0.0, 6.0)
    return y


def decompositions() -> dict[Any, Any]:
    """The op's decomposition table, for an exported program that should hold core ATen only:
    ``program.run_decompositions({**torch.export.default_decompositions(), **decompositions()})``.
    (Without it the program keeps the op, and its kernels.) ``torch.onnx.export`` of a module needs
    nothing: while it traces, the operator function writes the convolution itself. An
    ExportedProgram given to ``torch.onnx.export`` should be decomposed with this table first."""
    return {conv1x1_op: _as_convolution}
