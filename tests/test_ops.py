"""conv1x1 against F.conv2d and the float64 definition: values, gradients, layouts, and every bad input."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from onebyone import conv1x1, ops
from onebyone.ops import ACTIVATIONS
from onebyone.reference import conv1x1_reference

# absolute / relative tolerance per dtype, for sums of at most a few dozen products of values ~1
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (6e-2, 3e-2),
}

LAYOUTS = ("nchw", "channels_last")


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t.contiguous()


def _is_layout(t: torch.Tensor, layout: str) -> bool:
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return t.is_contiguous(memory_format=fmt)


def _stride_pair(stride: int | tuple[int, int]) -> tuple[int, int]:
    return (stride, stride) if isinstance(stride, int) else stride


def _expected(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    stride: int | tuple[int, int],
    groups: int,
    activation: str | None,
) -> torch.Tensor:
    """What conv1x1 must compute, said with torch's own conv and activations (in float64)."""
    y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride=stride, groups=groups)
    if activation == "relu":
        y = F.relu(y)
    elif activation == "relu6":
        y = F.relu6(y)
    return y


def _random_case(
    n: int, cg: int, kg: int, groups: int, h: int, w: int, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cg * groups, h, w, generator=gen, dtype=torch.float64).to(dtype)
    weight = torch.randn(kg * groups, cg, 1, 1, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(kg * groups, generator=gen, dtype=torch.float64).to(dtype)
    return x, weight, bias


strides = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))


def given_cases(n: int, cg: int, kg: int, hw: int, **more):
    """hypothesis over conv1x1's arguments: batch, channels per group in and out, groups, image size,
    stride, layout, dtype, bias, activation and a seed, each up to the given bound (plus ``more``)."""
    cases = dict(
        n=st.integers(1, n),
        cg=st.integers(1, cg),
        kg=st.integers(1, kg),
        groups=st.integers(1, 3),
        h=st.integers(1, hw),
        w=st.integers(1, hw),
        stride=strides,
        layout=st.sampled_from(LAYOUTS),
        dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
        with_bias=st.booleans(),
        activation=st.sampled_from([None, *ACTIVATIONS]),
        seed=st.integers(0, 2**16),
    )
    return given(**{**cases, **more})


# ----------------------------------------------------------------------------- values


@settings(max_examples=80, deadline=None)
@given_cases(n=3, cg=5, kg=5, hw=7)
def test_matches_conv2d(n, cg, kg, groups, h, w, stride, layout, dtype, with_bias, activation, seed):
    x, weight, bias = _random_case(n, cg, kg, groups, h, w, dtype, seed)
    x = _layout(x, layout)
    b = bias if with_bias else None
    y = conv1x1(x, weight, b, stride=stride, groups=groups, activation=activation)
    expected = _expected(x, weight, b, stride, groups, activation)
    assert y.dtype == dtype
    assert y.shape == expected.shape
    # the output's memory format is the input's, as F.conv2d's is; where size-1 dimensions make the
    # output contiguous in both formats, either will do
    for fmt in (torch.contiguous_format, torch.channels_last):
        if expected.is_contiguous(memory_format=fmt):
            break
    ambiguous = expected.is_contiguous() and expected.is_contiguous(memory_format=torch.channels_last)
    assert ambiguous or y.is_contiguous(memory_format=fmt)
    if layout == "channels_last" and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.double(), expected, atol=atol, rtol=rtol)


@settings(max_examples=40, deadline=None)
@given_cases(n=2, cg=4, kg=4, hw=5)
def test_matches_the_definition(n, cg, kg, groups, h, w, stride, layout, dtype, with_bias, activation, seed):
    x, weight, bias = _random_case(n, cg, kg, groups, h, w, dtype, seed)
    b = bias if with_bias else None
    y = conv1x1(_layout(x, layout), weight, b, stride=stride, groups=groups, activation=activation)
    ref = conv1x1_reference(
        x.double().numpy(),
        weight.double().numpy(),
        None if b is None else b.double().numpy(),
        stride=stride,
        groups=groups,
        activation=activation,
    )
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.double(), torch.from_numpy(ref), atol=atol, rtol=rtol)


def test_the_seeds_worked_example():
    # the seed's 3 x 6 x 6 maps are not all printed; its two spelled-out cells are, and their inputs
    x = torch.zeros(1, 3, 2, 1, dtype=torch.float64)
    x[0, :, 0, 0] = torch.tensor([1.0, 3.0, 1.0])
    x[0, :, 1, 0] = torch.tensor([4.0, 3.0, 3.0])
    w = torch.tensor([[0.1, 0.2, 0.4]], dtype=torch.float64)
    y = conv1x1(x, w)
    torch.testing.assert_close(y[0, 0, :, 0], torch.tensor([1.1, 2.2], dtype=torch.float64))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_larger_shapes_match_conv2d(layout):
    # big enough that every BLAS path (blocked, batched, NumPy) is taken
    for n, c, k, h, w, groups, stride in [
        (1, 50, 20, 60, 60, 1, 1),
        (3, 64, 32, 17, 13, 1, 1),
        (2, 64, 128, 14, 14, 2, 2),
        (1, 96, 24, 40, 40, 3, (2, 1)),
        (4, 256, 64, 7, 7, 1, 1),
    ]:
        x, weight, bias = _random_case(n, c // groups, k // groups, groups, h, w, torch.float32, n * c + h)
        x = _layout(x, layout)
        for b in (None, bias):
            for act in (None, "relu"):
                y = conv1x1(x, weight, b, stride=stride, groups=groups, activation=act)
                torch.testing.assert_close(
                    y.double(), _expected(x, weight, b, stride, groups, act), atol=2e-4, rtol=1e-4
                )


def test_weight_as_a_matrix_is_the_same_op():
    x, weight, bias = _random_case(2, 6, 4, 1, 5, 5, torch.float64, 0)
    torch.testing.assert_close(conv1x1(x, weight, bias), conv1x1(x, weight[:, :, 0, 0], bias))


def test_non_contiguous_input_is_accepted():
    x, weight, bias = _random_case(2, 4, 3, 1, 8, 9, torch.float64, 1)
    sliced = x[:, :, 1:7, ::2]  # neither NCHW- nor channels_last-contiguous
    assert not sliced.is_contiguous() and not sliced.is_contiguous(memory_format=torch.channels_last)
    y = conv1x1(sliced, weight, bias, stride=(1, 2))
    torch.testing.assert_close(y, _expected(sliced, weight, bias, (1, 2), 1, None))


@pytest.mark.parametrize("weight_dims", [4, 2])
def test_gradients_reach_sliced_and_transposed_tensors(weight_dims):
    # the autograd function takes the caller's weight itself (a 2-D or 4-D leaf, or a transposed
    # view, packed inside): its gradient comes back in the caller's shape, nothing in between
    gen = torch.Generator().manual_seed(5)
    big = torch.randn(2, 6, 8, 9, dtype=torch.float64, generator=gen, requires_grad=True)
    wt = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)  # C x K
    weight = wt.t() if weight_dims == 2 else wt.t()[:, :, None, None]  # neither is contiguous
    x = big[:, :, 1:7, ::2]
    y = conv1x1(x, weight)
    into_weight = y.grad_fn.next_functions[1][0].name()
    assert into_weight == ("TBackward0" if weight_dims == 2 else "UnsqueezeBackward0")
    g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    y.backward(g)
    want_big, want_wt = torch.autograd.grad(F.conv2d(x, wt.t()[:, :, None, None]), (big, wt), g)
    torch.testing.assert_close(big.grad, want_big)
    torch.testing.assert_close(wt.grad, want_wt)
    leaf = torch.randn(4, 6, 1, 1, dtype=torch.float64, generator=gen, requires_grad=True)
    y = conv1x1(x.detach(), leaf)
    assert y.grad_fn.next_functions[1][0].name() == "torch::autograd::AccumulateGrad"  # no view node
    y.backward(g)
    assert leaf.grad.shape == leaf.shape


def test_input_is_left_untouched():
    x, weight, bias = _random_case(2, 4, 3, 1, 5, 5, torch.float32, 2)
    before = (x.clone(), weight.clone(), bias.clone())
    conv1x1(x, weight, bias, activation="relu")
    for after, saved in zip((x, weight, bias), before, strict=True):
        assert torch.equal(after, saved)


@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 1, 3, 3), (1, 3, 1, 1), (2, 1, 1, 1)])
def test_ambiguous_layouts_follow_the_strides(shape):
    # each of these is contiguous in both formats; the strides say channels_last
    x = torch.empty(shape, memory_format=torch.channels_last).normal_()
    w = torch.randn(2, shape[1], 1, 1)
    assert conv1x1(x, w).stride() == F.conv2d(x, w).stride()
    assert conv1x1(x.contiguous(), w).stride() == F.conv2d(x.contiguous(), w).stride()


def test_empty_batch():
    x = torch.randn(0, 4, 3, 3)
    w = torch.randn(5, 4, 1, 1)
    assert conv1x1(x, w).shape == (0, 5, 3, 3)


def test_float16_forward_matches_conv2d_in_float32():
    x, weight, bias = _random_case(2, 8, 4, 1, 5, 5, torch.float16, 3)
    y = conv1x1(x, weight, bias)
    assert y.dtype == torch.float16
    expected = _expected(x, weight, bias, 1, 1, None).float()
    torch.testing.assert_close(y.float(), expected, atol=2e-2, rtol=1e-2)


# -------------------------------------------------------------------------- gradients


GRAD_CASES = [
    # layout, stride, groups, activation, bias
    ("nchw", 1, 1, None, True),
    ("nchw", 1, 1, None, False),
    ("channels_last", 1, 1, None, True),
    ("channels_last", 1, 1, None, False),
    ("nchw", 2, 1, "relu", True),
    ("channels_last", (2, 1), 1, "relu", True),
    ("nchw", 1, 2, None, True),
    ("channels_last", 1, 3, "relu6", False),
    ("nchw", (1, 3), 3, "relu6", True),
    ("channels_last", 2, 2, None, True),
]


@pytest.mark.parametrize(("layout", "stride", "groups", "activation", "with_bias"), GRAD_CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_gradcheck(layout, stride, groups, activation, with_bias, batch):
    gen = torch.Generator().manual_seed(groups * 7 + batch)
    c, k = 2 * groups, 3 * groups
    x = _layout(torch.randn(batch, c, 5, 4, generator=gen, dtype=torch.float64), layout).requires_grad_()
    w = torch.randn(k, c // groups, 1, 1, generator=gen, dtype=torch.float64)
    if activation == "relu6":
        w = w * 4  # put some outputs above 6, where relu6's gradient is zero
    w.requires_grad_()
    b = torch.randn(k, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None

    def fn(x, w, b):
        return conv1x1(x, w, b, stride=stride, groups=groups, activation=activation)

    # the kinks of relu/relu6 sit at measure zero: random inputs land more than eps away
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given_cases(n=3, cg=4, kg=4, hw=6)
@example(  # an output whose exact sum is 0.0027: bfloat16's rounded sum lands at 0, below relu's kink
    n=3, cg=1, kg=1, groups=3, h=5, w=6, stride=1, layout="nchw", dtype=torch.bfloat16, with_bias=True,
    activation="relu", seed=1,
)
def test_gradients_match_conv2d(n, cg, kg, groups, h, w, stride, layout, dtype, with_bias, activation, seed):
    x0, w0, b0 = _random_case(n, cg, kg, groups, h, w, dtype, seed)
    x0 = _layout(x0, layout)
    ours = [t.clone().requires_grad_() for t in (x0, w0, b0)]
    theirs = [t.detach().double().requires_grad_() for t in (x0, w0, b0)]
    b, b_ref = (ours[2], theirs[2]) if with_bias else (None, None)
    y = conv1x1(ours[0], ours[1], b, stride=stride, groups=groups, activation=activation)
    ref = _expected(theirs[0], theirs[1], b_ref, stride, groups, activation)
    gen = torch.Generator().manual_seed(seed + 1)
    # the upstream gradient comes in the layout autograd would hand over: the output's own
    grad = _layout(torch.randn(ref.shape, generator=gen, dtype=torch.float64), layout)
    atol, rtol = TOL[dtype]
    if activation is not None and dtype == torch.bfloat16:
        # where the exact sum lies within bfloat16's rounding of a kink (0, or 6 for relu6), the
        # rounded sum may land on the other side and the activation's gradient with it: those
        # outputs pass no gradient on, in both
        with torch.no_grad():
            pre = _expected(*(t.detach() for t in theirs[:2]), b_ref, stride, groups, None)
            near = (pre.abs() < atol) | ((pre - 6).abs() < atol if activation == "relu6" else False)
        grad = grad.masked_fill(near, 0.0)
    y.backward(grad.to(dtype))
    ref.backward(grad)
    if dtype == torch.bfloat16:
        atol, rtol = 0.15, 0.05  # gradients sum over more terms than the output does
    for got, want in zip(ours[: 2 + with_bias], theirs[: 2 + with_bias], strict=True):
        assert got.grad is not None and got.grad.dtype == dtype
        assert got.grad.shape == want.shape
        torch.testing.assert_close(got.grad.double(), want.grad, atol=atol, rtol=rtol)
    if layout == "channels_last" and ours[0].grad is not None:
        assert ours[0].grad.is_contiguous(memory_format=torch.channels_last)


def test_gradients_only_where_asked():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    w = torch.randn(6, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64)
    conv1x1(x, w, b, activation="relu").sum().backward()
    assert x.grad is None and b.grad is None
    assert w.grad is not None


def test_larger_gradients_match_conv2d():
    # shapes large enough for the blocked and NumPy paths, both layouts
    for layout in LAYOUTS:
        for n, c, k, h, w, groups in [(1, 50, 20, 40, 40, 1), (3, 64, 16, 9, 11, 1), (2, 32, 64, 10, 10, 4)]:
            x0, w0, b0 = _random_case(n, c // groups, k // groups, groups, h, w, torch.float32, c + h)
            x0 = _layout(x0, layout)
            ours = [t.clone().requires_grad_() for t in (x0, w0, b0)]
            theirs = [t.detach().double().requires_grad_() for t in (x0, w0, b0)]
            y = conv1x1(*ours, groups=groups, activation="relu")
            ref = _expected(*theirs, 1, groups, "relu")
            grad = _layout(torch.randn(ref.shape, dtype=torch.float64), layout)
            y.backward(grad.float())
            ref.backward(grad)
            for got, want in zip(ours, theirs, strict=True):
                torch.testing.assert_close(got.grad.double(), want.grad, atol=5e-3, rtol=1e-4)


# -------------------------------------------------------------------------- bad input


def _ok() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(2, 4, 3, 3), torch.randn(6, 4, 1, 1), torch.randn(6)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda x, w, b: conv1x1(x[0], w, b), ValueError, ["4-D", "(4, 3, 3)"]),
        (lambda x, w, b: conv1x1(x[None], w, b), ValueError, ["4-D", "5-D"]),
        (lambda x, w, b: conv1x1(x[:, :3], w, b), ValueError, ["4 input channels", "3"]),
        (lambda x, w, b: conv1x1(x, torch.randn(6, 4, 3, 3), b), ValueError, ["1x1", "(3, 3)"]),
        (lambda x, w, b: conv1x1(x, torch.randn(6, 4, 1), b), ValueError, ["(6, 4, 1)"]),
        (lambda x, w, b: conv1x1(x, torch.randn(6, 4, 1, 1), b, groups=3), ValueError, ["groups=3", "4"]),
        (lambda x, w, b: conv1x1(x, torch.randn(5, 2, 1, 1), b, groups=2), ValueError, ["groups=2", "5"]),
        (lambda x, w, b: conv1x1(x, w, b, groups=0), ValueError, ["groups", "0"]),
        (lambda x, w, b: conv1x1(x, w, b, groups=2.0), TypeError, ["groups", "2.0"]),
        (lambda x, w, b: conv1x1(x.long(), w, b), TypeError, ["torch.int64", "floating"]),
        (lambda x, w, b: conv1x1(x, w.int(), b), TypeError, ["weight", "torch.int32"]),
        (lambda x, w, b: conv1x1(x.to(torch.complex64), w, b), TypeError, ["torch.complex64"]),
        (lambda x, w, b: conv1x1(x > 0, w, b), TypeError, ["torch.bool"]),
        (lambda x, w, b: conv1x1(x, w, b.long()), TypeError, ["bias", "torch.int64"]),
        (lambda x, w, b: conv1x1(x, w.double(), b), TypeError, ["torch.float64", "torch.float32"]),
        (lambda x, w, b: conv1x1(x, w, b.double()), TypeError, ["bias torch.float64"]),
        (lambda x, w, b: conv1x1(x, w.to("meta"), b), ValueError, ["meta", "cpu"]),
        (lambda x, w, b: conv1x1(x, w, b.to("meta")), ValueError, ["bias on meta"]),
        (lambda x, w, b: conv1x1(x, w, b, stride=0), ValueError, ["stride", "0"]),
        (lambda x, w, b: conv1x1(x, w, b, stride=(1, -2)), ValueError, ["stride", "(1, -2)"]),
        (lambda x, w, b: conv1x1(x, w, b, stride=(1, 2, 3)), TypeError, ["stride", "(1, 2, 3)"]),
        (lambda x, w, b: conv1x1(x, w, b, stride=1.5), TypeError, ["stride", "1.5"]),
        (lambda x, w, b: conv1x1(x, w, b, stride=True), TypeError, ["stride", "True"]),
        (lambda x, w, b: conv1x1(x, w, b[:5]), ValueError, ["bias", "(6,)", "(5,)"]),
        (lambda x, w, b: conv1x1(x, w, b[None]), ValueError, ["bias", "(1, 6)"]),
        (lambda x, w, b: conv1x1(x, w, b, activation="gelu"), ValueError, ["activation", "'gelu'"]),
        (lambda x, w, b: conv1x1(x.numpy(), w, b), TypeError, ["x", "ndarray"]),
        (lambda x, w, b: conv1x1(x, [1.0], b), TypeError, ["weight", "list"]),
        (lambda x, w, b: conv1x1(x, w, 0.5), TypeError, ["bias", "float"]),
    ],
)
def test_bad_input_is_named(make, error, words):
    x, w, b = _ok()
    with pytest.raises(error) as info:
        make(x, w, b)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_meta_device_runs_through_the_shapes():
    # all on 'meta': the op's shape logic works on a device with no data at all
    x = torch.empty(2, 8, 6, 6, device="meta")
    y = conv1x1(x, torch.empty(4, 4, 1, 1, device="meta"), torch.empty(4, device="meta"), groups=2, stride=2)
    assert y.shape == (2, 4, 3, 3) and y.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_matches_cpu(layout):
    x, w, b = _random_case(2, 8, 6, 2, 9, 7, torch.float64, 5)
    cpu = [_layout(x, layout).requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()]
    gpu = [t.detach().cuda().requires_grad_() for t in cpu]
    y_cpu = conv1x1(*cpu, stride=2, groups=2, activation="relu")
    y_gpu = conv1x1(*gpu, stride=2, groups=2, activation="relu")
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y_cpu)
    y_cpu.square().sum().backward()
    y_gpu.square().sum().backward()
    for a, g in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(g.grad.cpu(), a.grad)


# ---------------------------------------------------------------------------- backends


@pytest.fixture(params=["fixed", "torch", "numpy", "onednn", "native"])
def backend(request):
    before = ops.set_backend(request.param)
    yield request.param
    ops.set_backend(before)


BACKEND_CASES = [
    # n, c, k, h, w, stride, groups, layout
    (2, 6, 4, 5, 7, 1, 1, "nchw"),
    (2, 6, 4, 5, 7, 1, 1, "channels_last"),
    (3, 6, 9, 7, 6, (2, 3), 3, "nchw"),
    (3, 6, 9, 7, 6, (2, 3), 3, "channels_last"),
    (1, 8, 4, 9, 9, 2, 2, "nchw"),
    (1, 8, 4, 9, 9, 2, 1, "channels_last"),
    (2, 64, 2, 8, 8, 1, 1, "channels_last"),  # weights small next to the input: oneDNN applies
    (2, 64, 4, 9, 9, 2, 2, "channels_last"),
    (8, 16, 8, 10, 10, 2, 1, "nchw"),  # several whole images per packed block
    (8, 16, 8, 10, 10, 2, 2, "channels_last"),
    (6, 16, 8, 12, 12, 1, 1, "nchw"),  # grad_weight sums a batch of images per scratch
]


@pytest.mark.parametrize(("n", "c", "k", "h", "w", "stride", "groups", "layout"), BACKEND_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_every_backend_is_right(backend, n, c, k, h, w, stride, groups, layout, dtype):
    x0, w0, b0 = _random_case(n, c // groups, k // groups, groups, h, w, dtype, n + c + h)
    x0 = _layout(x0, layout)
    # in bfloat16 a few outputs near 0 round to the other side of relu's kink: test relu elsewhere
    act = None if dtype == torch.bfloat16 else "relu"
    ours = [t.clone().requires_grad_() for t in (x0, w0, b0)]
    theirs = [t.detach().double().requires_grad_() for t in (x0, w0, b0)]
    y = conv1x1(*ours, stride=stride, groups=groups, activation=act)
    ref = _expected(*theirs, stride, groups, act)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.double(), ref, atol=atol, rtol=rtol)
    grad = _layout(torch.randn(ref.shape, dtype=torch.float64), layout)
    y.backward(grad.to(dtype))
    ref.backward(grad)
    if dtype == torch.bfloat16:
        atol, rtol = 0.25, 0.05
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=atol, rtol=rtol)
    with torch.no_grad():  # the inference path skips autograd: same numbers
        again = conv1x1(x0, w0, b0, stride=stride, groups=groups, activation=act)
    torch.testing.assert_close(again, y.detach())


@pytest.mark.parametrize("backend", ["fixed", "torch", "numpy", "onednn", "native"])
def test_every_backend_passes_gradcheck(backend):
    before = ops.set_backend(backend)
    try:
        cases = [("nchw", 1, 1), ("channels_last", 1, 1), ("nchw", 2, 2), ("channels_last", 2, 1)]
        for layout, stride, groups in cases:
            gen = torch.Generator().manual_seed(3)
            x = _layout(torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64), layout).requires_grad_()
            w = torch.randn(6, 4 // groups, 1, 1, generator=gen, dtype=torch.float64, requires_grad=True)
            b = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
            assert torch.autograd.gradcheck(
                lambda x, w, b: conv1x1(x, w, b, stride=stride, groups=groups, activation="relu"),  # noqa: B023
                (x, w, b),
            )
    finally:
        ops.set_backend(before)


def test_set_backend_names_the_choices():
    with pytest.raises(ValueError, match="'mkl'"):
        ops.set_backend("mkl")
    assert ops.set_backend("auto") in ops.BACKENDS


# ----------------------------------------------------------------------- native kernels
#
# onebyone's own float32 kernels (src/onebyone/_native.c). Their loop nest has edges everywhere:
# pixels that do not fill a micro-tile (32 on AVX-512), output channels that do not fill a block
# (12), input channels beyond one chunk (256, where the output is re-read and the activation waits
# for the last chunk), images split over threads. The shapes below cross each of them.

needs_native = pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")


def test_native_kernels_are_built_on_linux_x86_64():
    import platform
    import sys

    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the native kernels are only required where they were developed: Linux on x86-64")
    assert ops.native_isa() in ("avx512", "avx2", "base")
    if "OpenMP" in torch.__config__.parallel_info():  # the kernels share PyTorch's worker threads
        assert ops.native._native.threading() == "openmp"


@pytest.fixture
def native():
    before = ops.set_backend("native")
    yield
    ops.set_backend(before)


@pytest.fixture
def native_turned(native, monkeypatch):
    """The native kernels, NCHW images turned around (y^T = x^T W^T on the channels_last kernel)
    wherever that form is a candidate."""
    real = ops.choice._untimed
    monkeypatch.setattr(ops.choice, "_untimed", lambda names: "native_turned" if "native_turned" in names
                        else real(names))


@needs_native
@settings(max_examples=60, deadline=None)
@given_cases(n=3, cg=40, kg=30, hw=13, dtype=st.just(torch.float32), threads=st.integers(1, 3))
def test_native_forward_and_backward_match_conv2d(
    n, cg, kg, groups, h, w, stride, layout, dtype, with_bias, activation, threads, seed
):
    before, threads_before = ops.set_backend("native"), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x0, w0, b0 = _random_case(n, cg, kg, groups, h, w, dtype, seed)
        x0 = _layout(x0, layout)
        b0 = b0 if with_bias else None
        ours = [t.clone().requires_grad_() for t in (x0, w0, b0) if t is not None]
        theirs = [t.detach().double().requires_grad_() for t in (x0, w0, b0) if t is not None]
        y = conv1x1(*ours, stride=stride, groups=groups, activation=activation)
        ref = _expected(*theirs[:2], theirs[2] if with_bias else None, stride, groups, activation)
        torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)
        if not (_is_layout(x0, "nchw") and _is_layout(x0, "channels_last")):  # unambiguous input
            assert _is_layout(y, layout)
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        y.backward(_layout(grad, layout).float())
        ref.backward(grad)
        for got, want in zip(ours, theirs, strict=True):
            torch.testing.assert_close(got.grad.double(), want.grad, atol=2e-4, rtol=1e-4)
    finally:
        ops.set_backend(before)
        torch.set_num_threads(threads_before)


# n, c, k, h, w
NATIVE_EDGES = [
    (1, 300, 13, 9, 11),  # two input-channel chunks; the activation only after the second
    (2, 257, 25, 6, 6),  # one channel past the chunk; three output blocks, the last of one
    (1, 50, 20, 37, 41),  # the seed's channels, pixels that end mid micro-tile
    (1, 3, 130, 17, 2),  # many output blocks over few pixels
    (5, 17, 7, 64, 64),  # several images and whole pixel tiles per thread
    (2, 70, 33, 23, 29),  # channels_last: columns past a block of 32 in both directions
    (1, 1100, 40, 5, 5),  # channels_last: rows longer than a tile's budget
    (2, 19, 16, 28, 28),  # 784 pixels end on one vector (16) past the tiles of 32; 16 output columns
    (3, 64, 48, 7, 7),  # 49 = 32 + 16 + 1 pixels per image, images in groups; 48 = 32 + 16 columns
    (2, 300, 14, 3, 3),  # images smaller than one vector, staged, over two channel chunks
    (1, 260, 30, 5, 7),  # 35 = 32 + 3 pixels: the last 3 from a 16-pixel tile overlapping, two chunks
    (8, 1024, 13, 10, 10),  # weight rows 4 KiB apart: each block copied first; 13 = 12 + 1 rows
    (24, 2048, 5, 7, 7),  # the same over three 7 x 7 images per item, eight channel chunks
    (16, 1024, 30, 7, 7),  # two 7 x 7 images side by side in a panel: tiles inside one, across, partial
    (128, 1024, 20, 3, 3),  # sixteen 3 x 3 images per panel
    (1, 700, 130, 7, 7),  # one 7 x 7 image: threads take slices of 72 + 58 outputs (a part block), 3 chunks
    (1, 2048, 250, 3, 3),  # ... of a staged 3 x 3 image, 250 outputs (and 2048 summed in grad_input)
    (1, 600, 100, 16, 16),  # channels_last: W^T over its copy budget, packed a block at a time
    (4, 64, 200, 24, 24),  # channels_last: W^T over budget on an input too big for L2: by columns
]


def _check_native_case(n, c, k, h, w, activation, layout, stride=1, groups=1):
    """conv1x1 forward and backward on the native kernels against float64 F.conv2d."""
    x0, w0, b0 = _random_case(n, c // groups, k // groups, groups, h, w, torch.float32, n * c + k)
    x0 = _layout(x0, layout)
    x, wt, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
    y = conv1x1(x, wt, b, stride=stride, groups=groups, activation=activation)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x0, w0, b0))
    ref = _expected(xd, wd, bd, stride, groups, activation)
    torch.testing.assert_close(y.double(), ref, atol=2e-4, rtol=1e-4)
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    grad = _layout(grad, layout)
    y.backward(grad.float())
    ref.backward(grad)
    for got, want in ((x, xd), (wt, wd), (b, bd)):
        # grad_weight sums up to 5 x 4096 products in float32
        torch.testing.assert_close(got.grad.double(), want.grad, atol=2e-3, rtol=2e-4)


@needs_native
@pytest.mark.parametrize(("n", "c", "k", "h", "w"), NATIVE_EDGES)
@pytest.mark.parametrize("activation", [None, "relu6"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_native_kernels_at_their_edges(native, n, c, k, h, w, activation, layout):
    _check_native_case(n, c, k, h, w, activation, layout)


@needs_native
@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w", "stride"),
    [(4, 64, 40, 30, 30, 2), (1, 64, 24, 64, 64, (2, 3))],  # whole images a block; rows of one image
)
def test_native_strided_channels_last_gradients_over_many_blocks(native, n, c, k, h, w, stride, monkeypatch):
    # the kept pixels are gathered a block at a time (into a workspace, here of 1/12 of the input)
    # and each block's weight gradient is added in place by the kernel: here 4 blocks each way
    monkeypatch.setattr(ops.workspace, "WORKSPACE_BYTES", n * c * h * w * 4 // 12)
    monkeypatch.setattr(ops.workspace, "_local", threading.local())
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    _, blocks = ops.views._blocks(torch.empty(n, c, h, w), n, -(-h // sh), c * -(-w // sw))
    assert len(blocks) >= 3
    _check_native_case(n, c, k, h, w, None, "channels_last", stride=stride)


@needs_native
@pytest.mark.parametrize(
    ("c", "k", "h", "w", "stride", "groups"),
    [(70, 40, 13, 11, 1, 1), (64, 100, 20, 18, 2, 1), (30, 36, 17, 23, (2, 3), 3), (40, 33, 9, 9, (3, 1), 1)],
)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_native_forward_of_one_nchw_image_turned_around(native_turned, c, k, h, w, stride, groups,
                                                        activation):
    # one NCHW image runs y^T = x^T W^T on the channels_last kernel: 7 x 7 to 27 x 27 at stride 1,
    # any size with a stride (the kept pixels read where they lie, rows stride[0] * w apart)
    _check_native_case(1, c, k, h, w, activation, "nchw", stride=stride, groups=groups)


@needs_native
@pytest.mark.parametrize(("n", "c", "k", "h", "w", "groups"), [(5, 70, 40, 7, 9, 1), (3, 96, 60, 13, 13, 2)])
@pytest.mark.parametrize("activation", [None, "relu6"])
def test_native_forward_of_nchw_batches_turned_around(native_turned, n, c, k, h, w, groups, activation):
    # batches of small images run turned too: the kernel steps from image to image (x's images
    # c*h*w apart, y's k*h*w apart), a micro-tile never crossing one
    _check_native_case(n, c, k, h, w, activation, "nchw", groups=groups)


@needs_native
@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w", "groups"),
    [(64, 128, 128, 2, 2, 1), (3, 40, 70, 1, 5, 1), (9, 300, 30, 3, 3, 3), (1, 64, 40, 4, 4, 2),
     (33, 17, 50, 6, 6, 1)],
)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_tiny_nchw_images_turned_around_forward_and_grad_input(native_turned, n, c, k, h, w, groups,
                                                               activation):
    # images under 7 x 7 (NiN's 2 x 2 and 4 x 4 maps) go turned, single or in batches, forward and
    # grad_input, image after image; a micro-tile never crosses one (2 to 36 pixels here)
    _check_native_case(n, c, k, h, w, activation, "nchw", groups=groups)


@pytest.fixture
def native_flat(native, monkeypatch):
    """The native kernels, the channels_last kernel taking every pixel of the batch as one row
    wherever that form is a candidate."""
    real, taken = ops.choice._untimed, []

    def untimed(names):
        taken.append(("native_flat" if "native_flat" in names else real(names), tuple(names)))
        return taken[-1][0]

    monkeypatch.setattr(ops.choice, "_untimed", untimed)
    return taken  # what each pass was given, among which candidates


@needs_native
@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w", "groups", "layout"),
    [(3, 40, 70, 5, 7, 1, "channels_last"), (2, 1024, 48, 3, 3, 1, "channels_last"),
     (4, 36, 60, 1, 1, 3, "channels_last"), (9, 20, 17, 2, 13, 1, "channels_last"),
     (6, 50, 33, 1, 1, 1, "nchw"), (64, 24, 40, 1, 1, 2, "nchw")],
)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_native_flat_runs_every_pixel_as_one_row_forward_and_grad_input(native_flat, n, c, k, h, w, groups,
                                                                        layout, activation):
    # micro-tiles run on across rows and images (channels_last, and NCHW 1 x 1 images, whose rows of
    # channels are channels_last pixels); the flat form is the one the passes ran on
    _check_native_case(n, c, k, h, w, activation, layout, groups=groups)
    given = [name for name, _ in native_flat]
    # the forward and, on channels_last, grad_input (1 x 1 images count as NCHW, whose grad_input
    # runs them as one product anyway)
    assert given.count("native_flat") == (2 if layout == "channels_last" and h * w > 1 else 1), native_flat


@pytest.mark.parametrize("backend", ["native", "torch"])
@pytest.mark.parametrize(
    ("n", "c", "k", "stride", "groups"), [(64, 40, 70, 1, 1), (5, 12, 9, 2, 3), (1, 30, 8, 1, 2)]
)
def test_nchw_one_by_one_images_are_one_product(backend, n, c, k, stride, groups, monkeypatch):
    # 1 x 1 NCHW images lie in memory as channels_last ones: the batch runs as one N x C product on
    # either library (the native kernels through the channels_last kernel, forward and grad_input),
    # and the output keeps the NCHW strides F.conv2d gives
    if backend == "native" and ops.native_isa() is None:
        pytest.skip("the native kernels were not built")
    calls: list[int] = []
    if backend == "native":
        real = ops.native._native.forward_cl
        monkeypatch.setattr(ops.native._native, "forward_cl", lambda *a: calls.append(a[-1]) or real(*a))
    before = ops.set_backend(backend)
    try:
        _check_native_case(n, c, k, 1, 1, "relu", "nchw", stride=stride, groups=groups)
        # a call per group for the forward, and for grad_input at stride 1 (strided: gathered blocks)
        assert len(calls) == (1 + (stride == 1)) * groups * (backend == "native")
        x, w = torch.randn(n, c, 1, 1), torch.randn(k, c // groups, 1, 1)
        y = conv1x1(x, w, stride=stride, groups=groups)
        assert y.stride() == F.conv2d(x, w, stride=stride, groups=groups).stride()
    finally:
        ops.set_backend(before)


@needs_native
@pytest.mark.parametrize(
    ("n", "c", "k", "p"),
    [(2, 300, 14, 9), (128, 1024, 20, 9), (1, 2048, 250, 9), (16, 1024, 30, 49), (64, 128, 128, 4),
     (5, 70, 33, 1)],
)
def test_nchw_kernel_on_small_images(n, c, k, p):
    # the NCHW kernel's own forms for images under a vector (staged 16 pixels at a time), several
    # small images side by side in a panel, and slices of outputs for one image, called directly:
    # conv1x1 turns these shapes around, but 1 x 1 images, and the forward over more channels than
    # the turned kernel's workspace takes, still come here
    gen = torch.Generator().manual_seed(n + c + k + p)
    x, w = torch.randn(n, c, p, generator=gen), torch.randn(k, c, generator=gen)
    b = torch.randn(k, generator=gen)
    y = torch.full((n, k, p), 7.0)
    kernel = ops.native._native
    kernel.forward(x.data_ptr(), c * p, p, y.data_ptr(), k * p, p, w.data_ptr(), c, 1, b.data_ptr(),
                   n, c, k, p, 1, 2)  # fmt: skip
    want = torch.relu(torch.einsum("kc,ncp->nkp", w.double(), x.double()) + b.double()[:, None])
    torch.testing.assert_close(y.double(), want, atol=1e-3, rtol=1e-4)


@needs_native
@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_every_instruction_set_build_is_right(native, isa):
    """The AVX2 and baseline builds (other machines' kernels) checked here too, where the CPU runs them."""
    before = ops.native._native.isa()
    if not ops.native._native.set_isa(isa):
        pytest.skip(f"this CPU cannot run the {isa} build")
    try:
        for layout in LAYOUTS:
            for n, c, k, h, w in NATIVE_EDGES:
                _check_native_case(n, c, k, h, w, "relu", layout)
            _check_native_case(2, 12, 9, 9, 7, None, layout, stride=2, groups=3)
        _check_native_case(1, 30, 36, 17, 23, None, "nchw", stride=(2, 3), groups=3)  # turned, strided
        _check_native_case(3, 96, 60, 13, 13, "relu", "nchw", groups=2)  # turned, a batch
        _check_native_case(9, 300, 30, 3, 3, "relu", "nchw", groups=3)  # turned, tiny images
        # every grad_weight form; 7 x 7 images on batches go many to a tile, the last tile part-full
        for case in [(2, 50, 20, 999), (3, 300, 40, 700), (1, 40, 300, 70), (45, 256, 256, 49),
                     (100, 300, 40, 49)]:
            n, c, k, p = case
            gen = torch.Generator().manual_seed(p)
            g, x = torch.randn(n, k, p, generator=gen), torch.randn(n, c, p, generator=gen)
            want = torch.einsum("nkp,ncp->kc", g.double(), x.double())
            for method in (0, 1, 2):
                out = torch.empty(k, c)
                ptrs = (g.data_ptr(), k * p, p, x.data_ptr(), c * p, p, out.data_ptr(), c)
                ops.native._native.grad_weight(*ptrs, n, k, c, p, 0, 2, method)
                torch.testing.assert_close(out.double(), want, atol=2e-3, rtol=1e-4)
    finally:
        ops.native._native.set_isa(before)


@needs_native
@pytest.mark.parametrize("layout", LAYOUTS)
def test_native_relu_keeps_nan_as_clamp_does(native, layout):
    x = torch.zeros(1, 2, 4, 8)
    x[0, 0, 1, 3] = float("nan")
    x = _layout(x, layout)
    w = torch.ones(3, 2, 1, 1)
    for activation in ACTIVATIONS:
        y = conv1x1(x, w, activation=activation)
        assert y[0, :, 1, 3].isnan().all()
        assert (y.nan_to_num(0.0) == 0).all()


@needs_native
@pytest.mark.parametrize("layout", LAYOUTS)
def test_native_runs_on_views_with_offsets(native, layout):
    """Groups and strides hand the kernel pointers into the middle of tensors: nothing outside moves."""
    x0, w0, b0 = _random_case(2, 5, 3, 4, 10, 9, torch.float32, 7)
    big = _layout(torch.full((3, 20, 10, 9), 123.0), layout)
    big[1:] = x0
    x = big[1:]
    assert _is_layout(x, layout)
    y = conv1x1(x, w0, b0, groups=4, activation="relu")
    torch.testing.assert_close(y.double(), _expected(x0, w0, b0, 1, 4, "relu"), atol=1e-4, rtol=1e-4)
    assert (big[0] == 123.0).all()


@needs_native
@pytest.mark.parametrize(
    ("n", "c", "k", "p"),
    [
        (2, 50, 20, 999),  # few channels: dot products
        (2, 70, 45, 300),  # outer products on x's transposed tiles
        (3, 300, 40, 700),  # outer products on g's transposed tiles (C > K, many pixels), then transposed
        (1, 40, 300, 70),  # wide output, few pixels: more row blocks than column blocks
    ],
)
@pytest.mark.parametrize("method", [-1, 0, 1, 2])
@pytest.mark.parametrize("accumulate", [0, 1])
def test_native_grad_weight_in_every_form(n, c, k, p, method, accumulate):
    """The NCHW grad_weight kernel's three ways (and its own choice) give the same sums, added or not."""
    gen = torch.Generator().manual_seed(n + c + k + p)
    g = torch.randn(n, k, p, generator=gen)
    x = torch.randn(n, c, p, generator=gen)
    out = torch.randn(k, c + 3, generator=gen)  # a row stride wider than the row: nothing else moves
    before = out.clone()
    ptrs = (g.data_ptr(), k * p, p, x.data_ptr(), c * p, p, out.data_ptr(), c + 3)
    ops.native._native.grad_weight(*ptrs, n, k, c, p, accumulate, 2, method)
    want = torch.einsum("nkp,ncp->kc", g.double(), x.double()) + (before[:, :c].double() if accumulate else 0)
    torch.testing.assert_close(out[:, :c].double(), want, atol=2e-3, rtol=1e-4)
    assert torch.equal(out[:, c:], before[:, c:])


@needs_native
@pytest.mark.parametrize(
    ("c", "k", "p"),
    [
        (192, 16, 2000),  # narrow: the threads split the pixels, each summing into its own K x C
        (37, 29, 1201),  # ... with an odd share each and a last column block staged
        (300, 260, 700),  # wide (K x C over the split's limit): the threads split the blocks of sums
    ],
)
@pytest.mark.parametrize("accumulate", [0, 1])
def test_native_channels_last_grad_weight_added_or_not(c, k, p, accumulate):
    gen = torch.Generator().manual_seed(c + k + p)
    g = torch.randn(p, k, generator=gen)
    x = torch.randn(p, c, generator=gen)
    out = torch.randn(k, c + 3, generator=gen)  # a row stride wider than the row: nothing else moves
    before = out.clone()
    ptrs = (g.data_ptr(), k, x.data_ptr(), c, out.data_ptr(), c + 3)
    ops.native._native.grad_weight_cl(*ptrs, p, k, c, accumulate, 2)
    want = g.double().T @ x.double() + (before[:, :c].double() if accumulate else 0)
    torch.testing.assert_close(out[:, :c].double(), want, atol=2e-3, rtol=1e-4)
    assert torch.equal(out[:, c:], before[:, c:])


# -------------------------------------------------------------------------------- output pool


@pytest.fixture
def fresh_pool():
    """A pool with its default cap and no freed blocks, whatever the tests before left in it; on
    the untimed "fixed" backend, so that no timing run frees outputs of its own in between."""
    import gc

    gc.collect()  # tensors in reference cycles left by earlier tests: freed now, not mid-test
    backend = ops.set_backend("fixed")
    before = ops.set_output_pool(0)  # gives back every freed block
    ops.set_output_pool(before)
    yield ops.pool._pool
    ops.set_output_pool(before)
    ops.set_backend(backend)


# 1 x 64 x 64 x 64 -> 128: a 2 MiB output, over the pool's 1 MiB threshold
BIG = (1, 64, 64, 64, 128)


def _big_case(layout: str, requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, h, w, k = BIG
    gen = torch.Generator().manual_seed(3)
    x = _layout(torch.randn(n, c, h, w, generator=gen), layout).requires_grad_(requires_grad)
    weight = (torch.randn(k, c, 1, 1, generator=gen) / 8).requires_grad_(requires_grad)
    return x, weight


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_freed_output_is_handed_out_again(fresh_pool, layout):
    x, w = _big_case(layout)
    y = conv1x1(x, w)
    ptr = y.data_ptr()
    assert _is_layout(y, layout)
    assert y.stride() == torch.empty(y.shape, memory_format=torch.channels_last if layout == "channels_last"
                                     else torch.contiguous_format).stride()
    assert fresh_pool.misses >= 1
    del y  # its block goes back to the pool...
    assert fresh_pool.cached_bytes >= 128 * 64 * 64 * 4
    hits = fresh_pool.hits
    y = conv1x1(x, w)  # ...and holds the next output of that size, already mapped
    assert y.data_ptr() == ptr and fresh_pool.hits == hits + 1
    torch.testing.assert_close(y, F.conv2d(x, w), atol=1e-4, rtol=1e-4)


def test_a_block_stays_taken_while_any_view_of_it_lives(fresh_pool):
    x, w = _big_case("nchw")
    y = conv1x1(x, w)
    part = y[0, :3]  # a view: the storage lives on without y
    kept = part.clone()
    ptr = y.data_ptr()
    del y
    others = [conv1x1(x * 2, w) for _ in range(2)]
    assert all(o.data_ptr() != ptr for o in others)
    assert torch.equal(part, kept)  # nothing wrote over the view
    del part  # the last view: now the block is free, and the next output of its size gets it
    assert conv1x1(x, w).data_ptr() == ptr


def test_the_pool_keeps_no_more_than_its_cap(fresh_pool):
    x, w = _big_case("nchw")
    out_bytes = 128 * 64 * 64 * 4
    before = ops.set_output_pool(out_bytes + out_bytes // 2)  # room for one freed output, not two
    try:
        ys = [conv1x1(x, w) for _ in range(3)]
        del ys
        assert fresh_pool.cached_bytes == out_bytes
    finally:
        ops.set_output_pool(before)


def test_a_zero_cap_turns_the_pool_off(fresh_pool):
    before = ops.set_output_pool(0)
    try:
        x, w = _big_case("nchw")
        hits, misses = fresh_pool.hits, fresh_pool.misses
        for _ in range(3):
            conv1x1(x, w)
        assert (fresh_pool.hits, fresh_pool.misses, fresh_pool.cached_bytes) == (hits, misses, 0)
    finally:
        ops.set_output_pool(before)


@pytest.mark.parametrize("bad", [-1, 1.5, "1GB", True, None])
def test_output_pool_cap_must_be_a_byte_count(bad):
    with pytest.raises(ValueError, match="max_bytes must be an int >= 0"):
        ops.set_output_pool(bad)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pooled_outputs_and_gradients_stay_right_over_many_steps(fresh_pool, layout):
    """A training loop's pattern: outputs and input gradients freed and asked for again each step."""
    x, w = _big_case(layout, requires_grad=True)
    xr, wr = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    yr = F.conv2d(xr, wr)
    g = torch.randn(yr.shape, generator=torch.Generator().manual_seed(5)).to(yr.dtype)
    yr.backward(g)
    for _ in range(4):
        x.grad = w.grad = None
        y = conv1x1(x, w)
        y.backward(_layout(g.float(), layout))
        torch.testing.assert_close(y.double(), yr, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x.grad.double(), xr.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(w.grad.double(), wr.grad, atol=1e-3, rtol=1e-4)
        assert _is_layout(x.grad, layout)
    assert fresh_pool.hits >= 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weight_gradients_of_a_mebibyte_come_from_the_pool(fresh_pool, layout):
    """512 x 512 filters over a few pixels: the output and grad_x are small, grad_W is 1 MiB."""
    gen = torch.Generator().manual_seed(8)
    x = _layout(torch.randn(2, 512, 3, 3, generator=gen), layout).requires_grad_()
    w = (torch.randn(512, 512, 1, 1, generator=gen) / 16).requires_grad_()
    g = _layout(torch.randn(2, 512, 3, 3, generator=gen), layout)
    want = torch.einsum("nkp,ncp->kc", g.double().flatten(2), x.detach().double().flatten(2))
    ptrs = set()
    for _ in range(3):
        w.grad = None
        conv1x1(x, w).backward(g)
        torch.testing.assert_close(w.grad.double().flatten(1), want, atol=1e-3, rtol=1e-4)
        ptrs.add(w.grad.data_ptr())
    assert fresh_pool.hits >= 2 and len(ptrs) == 1  # the freed gradient's block, handed out again


def test_outputs_freed_on_another_thread_come_back(fresh_pool):
    import threading

    x, w = _big_case("nchw")
    box = [conv1x1(x, w)]
    ptr = box[0].data_ptr()
    t = threading.Thread(target=box.clear)
    t.start()
    t.join()
    assert conv1x1(x, w).data_ptr() == ptr


def test_pooled_outputs_serialise_and_share_like_any_tensor(fresh_pool, tmp_path):
    x, w = _big_case("nchw")
    y = conv1x1(x, w)
    expected = y.clone()
    torch.save(y, tmp_path / "y.pt")
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)
    y.share_memory_()
    assert y.is_shared() and torch.equal(y, expected)
    assert torch.equal(torch.from_numpy(y.numpy()), expected)


def test_the_pool_tells_its_blocks_from_mallocs(fresh_pool):
    y = fresh_pool.empty((2, 64, 32, 64), torch.float32, True)  # 1 MiB, channels_last
    assert fresh_pool.lent(y) and fresh_pool.lent(y[1:])  # a view of the block is in it too
    assert not fresh_pool.lent(torch.empty(2, 64, 32, 64)) and not fresh_pool.lent(y.clone())
    address = y.untyped_storage().data_ptr()
    del y  # the block goes back: its address is free for anyone
    assert address not in fresh_pool._lent


# ---------------------------------------------------------------- repeated inference calls


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("weight_dims", [2, 4])
def test_a_repeated_inference_call_skips_the_checks_and_gives_the_same_result(
    layout, weight_dims, monkeypatch
):
    from onebyone.ops import operator

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 12, 5, 7).contiguous(memory_format=fmt)
    w = torch.randn(6, 12) if weight_dims == 2 else torch.randn(6, 12, 1, 1)
    b = torch.randn(6)
    want = F.relu(F.conv2d(x, w.view(6, 12, 1, 1), b, stride=2))
    with torch.no_grad():
        first = conv1x1(x, w, b, stride=2, activation="relu")
        monkeypatch.setattr(operator, "_check", lambda *a: pytest.fail("checked a call seen before"))
        again = conv1x1(x, w, b, stride=2, activation="relu")
    for y in (first, again):
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)
        assert y.is_contiguous(memory_format=fmt)


def test_repeated_calls_still_refuse_what_the_checks_refuse():
    x, w = torch.randn(1, 4, 3, 3), torch.randn(2, 4)
    with torch.no_grad():
        conv1x1(x, w, stride=1, groups=1)  # seen: a plan for these arguments
        with pytest.raises((TypeError, ValueError), match="stride"):
            conv1x1(x, w, stride=True)
        with pytest.raises((TypeError, ValueError), match="groups"):
            conv1x1(x, w, groups=True)
        with pytest.raises(TypeError, match="dtype"):
            conv1x1(x, w.double())
        with pytest.raises(ValueError, match="channels"):
            conv1x1(torch.randn(1, 5, 3, 3), w)


def test_a_policy_change_forgets_the_seen_calls():
    from onebyone.ops import choice

    x, w = torch.randn(1, 8, 6, 6), torch.randn(4, 8)
    with torch.no_grad():
        conv1x1(x, w)
        assert choice._plans
        before = ops.set_backend("torch")
        try:
            assert not choice._plans
            torch.testing.assert_close(conv1x1(x, w), F.conv2d(x, w.view(4, 8, 1, 1)))
            assert [plan[0] for plan in choice._plans.values()] == ["torch"]  # the new policy's
        finally:
            ops.set_backend(before)


def test_a_weight_that_is_not_packed_makes_no_plan():
    from onebyone.ops import choice

    x = torch.randn(1, 8, 4, 4)
    w = torch.randn(8, 4).t()  # 4 x 8, not contiguous: packed on every call
    with torch.no_grad():
        choice._plans.clear()
        y = conv1x1(x, w)
        assert not choice._plans
        torch.testing.assert_close(conv1x1(x, w), y)


def test_the_seen_calls_are_bounded(monkeypatch):
    from onebyone.ops import choice, operator

    monkeypatch.setattr(operator, "_MAX_PLANS", 3)
    choice._plans.clear()
    with torch.no_grad():
        for h in range(1, 8):  # seven sizes, as a stream of images of new sizes would bring
            x = torch.randn(1, 4, h, 3)
            want = x.sum(1, keepdim=True).expand(1, 2, h, 3)
            torch.testing.assert_close(conv1x1(x, torch.ones(2, 4)), want)
            assert 1 <= len(choice._plans) <= 3


@pytest.mark.parametrize("channels_last", [False, True])
def test_seen_training_calls_remember_their_libraries_and_stay_exact(channels_last, monkeypatch):
    """A training call seen before skips the checks and the candidates (its libraries remembered per
    pass and per wanted gradient): its outputs and gradients stay those of the first call, and an
    inference call of the same signature afterwards still gets its own library. (The whole step
    kept on the op: PyTorch's own ops, where a step is timed faster on them, sum in another order;
    tests/test_step.py.)"""
    from onebyone.ops import choice
    from onebyone.ops import step as whole_step

    monkeypatch.setattr(whole_step, "decide_step", lambda *a, **k: "op")

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(3)
    x0 = torch.randn(2, 10, 9, 7).contiguous(memory_format=fmt)
    w0, b0 = torch.randn(6, 10, 1, 1), torch.randn(6)
    g = torch.randn(2, 6, 9, 7).contiguous(memory_format=fmt)
    choice._plans.clear()

    def step(want_x: bool) -> tuple[torch.Tensor, ...]:
        x = x0.clone().requires_grad_(want_x)
        w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
        y = conv1x1(x, w, b, activation="relu")
        y.backward(g)
        assert w.grad is not None and b.grad is not None
        return (y.detach(), w.grad, b.grad) + ((x.grad,) if want_x else ())

    first = step(True)
    x = x0.clone().requires_grad_()
    w = w0.clone().requires_grad_()
    b = b0.clone().requires_grad_()
    expected = F.relu(F.conv2d(x, w, b))
    expected.backward(g)
    for got, want in zip(first, (expected.detach(), w.grad, b.grad, x.grad), strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the signature's plan names the forward's library, the backward's are kept beside it
    forward_plans = [plan for key, plan in choice._plans.items() if key[0] != "backward"]
    libraries = (*ops.BACKENDS[2:], "native_turned", "native_flat", "torch_images")
    assert len(forward_plans) == 1 and forward_plans[0][0] in libraries
    assert any(key[0] == "backward" and key[2:] == (True, True) for key in choice._plans)
    for _ in range(2):  # from the plans: bit for bit the first call's
        assert all(torch.equal(a, b) for a, b in zip(step(True), first, strict=True))
    weight_only = step(False)  # another wanted set: a plan of its own, the same values
    assert any(key[0] == "backward" and key[2:] == (False, True) for key in choice._plans)
    assert all(torch.equal(a, b) for a, b in zip(weight_only, first[:3], strict=True))
    with torch.no_grad():  # the signature was seen in training only
        torch.testing.assert_close(conv1x1(x0, w0, b0, activation="relu"), first[0], atol=0, rtol=0)
        torch.testing.assert_close(conv1x1(x0, w0, b0, activation="relu"), first[0], atol=0, rtol=0)


@needs_native
@pytest.mark.parametrize(
    ("form", "layout", "shape", "k", "stride", "groups", "runs_worked_out"),
    [("native", "nchw", (2, 12, 9, 7), 10, 1, 1, True),
     ("native", "nchw", (2, 12, 9, 7), 10, 2, 2, False),  # gathered blocks: no runner
     ("native", "nchw", (5, 12, 1, 1), 8, 1, 2, True),  # 1 x 1 images: rows of channels
     ("native_turned", "nchw", (3, 12, 4, 4), 10, 1, 1, True),
     ("native_turned", "nchw", (3, 12, 5, 6), 10, 2, 2, True),
     ("native", "channels_last", (2, 12, 9, 7), 10, 1, 2, True),
     ("native", "channels_last", (2, 12, 9, 7), 10, 2, 1, True),
     ("native_flat", "channels_last", (3, 12, 5, 6), 20, 1, 1, True)],
)
@pytest.mark.parametrize(("with_bias", "activation"), [(False, None), (True, "relu6")])
def test_a_seen_inference_call_runs_the_forward_worked_out_for_it(
    native, monkeypatch, form, layout, shape, k, stride, groups, runs_worked_out, with_bias, activation
):
    """An inference call seen before on onebyone's kernels runs the forward worked out when its plan
    was made, without the passes (no shape arithmetic, views or checks a call): F.conv2d's values,
    bit for bit the first call's, in the input's layout, whatever the tensors' addresses."""
    from onebyone.ops import choice, operator

    real = choice._untimed
    monkeypatch.setattr(choice, "_untimed", lambda names: form if form in names else real(names))
    choice._plans.clear()
    torch.manual_seed(5)
    x0 = _layout(torch.randn(*shape), layout)
    w0 = torch.randn(k, shape[1] // groups, 1, 1)
    b0 = torch.randn(k) if with_bias else None
    with torch.no_grad():
        first = conv1x1(x0, w0, b0, stride=stride, groups=groups, activation=activation)
        (plan,) = choice._plans.values()
        assert plan[0] == form and (plan[4] is not None) == runs_worked_out
        if runs_worked_out:  # the passes are not called again
            monkeypatch.setattr(operator, "_forward_on", lambda *a: pytest.fail("ran the passes"))
        for _ in range(2):  # new tensors of the same signature: the runner reads their addresses
            x, w = x0.clone(memory_format=torch.preserve_format), w0.clone()
            b = None if b0 is None else b0.clone()
            y = conv1x1(x, w, b, stride=stride, groups=groups, activation=activation)
            assert torch.equal(y, first) and y.stride() == first.stride() and _is_layout(y, layout)
    want = _expected(x0, w0, b0, stride, groups, activation)  # in float64
    torch.testing.assert_close(first.double(), want, atol=2e-4, rtol=1e-4)
