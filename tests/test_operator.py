"""conv1x1 as a registered PyTorch operator: every way out of eager mode gives eager's outputs.

compile (fullgraph), export, jit.trace, fx, FakeTensor, the meta device, autocast, opcheck, the FLOP
counter and ONNX through onnxruntime, for NiN on the digits, a converted model with strided,
grouped and biased 1x1 layers, channels_last input and bfloat16 under autocast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import onebyone
from onebyone import Conv1x1, convert, create_model

OP = torch.ops.onebyone.conv1x1.default


def _mixed() -> nn.Module:
    """A model as a user writes it, then converted: 1x1 layers with stride, groups and bias beside
    3x3 convolutions, batch norm and a linear head."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 1, stride=2, groups=4, bias=True),
        nn.ReLU(),
        nn.Conv2d(24, 8, 1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    model = convert(model).eval()
    assert sum(isinstance(m, Conv1x1) for m in model.modules()) == 2
    return model


def _nin() -> nn.Module:
    torch.manual_seed(0)
    return create_model("nin_digits").eval()


CASES = {
    "nin_digits": (_nin, (4, 1, 8, 8), False),
    "mixed": (_mixed, (2, 3, 12, 10), False),
    "mixed_channels_last": (_mixed, (2, 3, 12, 10), True),
}


def _input(shape: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _graph_ops(graph: torch.fx.Graph) -> set[str]:
    return {str(n.target) for n in graph.nodes if n.op == "call_function"}


# ---------------------------------------------------------------- the op itself


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("shape", "k", "stride", "groups", "bias", "activation"),
    [
        ((2, 8, 5, 7), 6, (1, 1), 1, True, None),
        ((2, 8, 5, 7), 6, (2, 2), 2, True, "relu"),
        ((1, 12, 4, 4), 8, (1, 2), 4, False, "relu6"),
        ((3, 4, 1, 1), 4, (1, 1), 1, True, None),
    ],
)
def test_opcheck_passes_on_every_op(shape, k, stride, groups, bias, activation, channels_last):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(k, shape[1] // groups, 1, 1, generator=gen)
    b = torch.randn(k, generator=gen) if bias else None
    args = (x.requires_grad_(), w.requires_grad_(), None if b is None else b.requires_grad_(),
            list(stride), groups, activation)
    torch.library.opcheck(OP, args)
    y = OP(*args)
    g = torch.randn(y.shape, generator=gen).contiguous(memory_format=torch.channels_last if channels_last
                                                       else torch.contiguous_format)
    for name in ("conv1x1_grad_input", "conv1x1_grad_weight", "conv1x1_backward"):
        op = getattr(torch.ops.onebyone, name).default
        torch.library.opcheck(op, (g, x.detach(), w.detach(), list(stride), groups))


def test_the_op_and_the_eager_function_agree_with_conv2d():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 5, generator=gen)
    w = torch.randn(9, 2, 1, 1, generator=gen)
    b = torch.randn(9, generator=gen)
    expected = torch.relu(nn.functional.conv2d(x, w, b, 2, 0, 1, 3))
    torch.testing.assert_close(OP(x, w, b, [2, 2], 3, "relu"), expected)
    torch.testing.assert_close(onebyone.conv1x1(x, w, b, stride=2, groups=3, activation="relu"), expected)


def test_gradcheck_through_the_registered_op():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=gen).requires_grad_()
    w = torch.randn(6, 2, 1, 1, dtype=torch.float64, generator=gen).requires_grad_()
    b = torch.randn(6, dtype=torch.float64, generator=gen).requires_grad_()
    for activation in (None, "relu", "relu6"):
        assert torch.autograd.gradcheck(lambda x, w, b, a=activation: OP(x, w, b, [2, 1], 2, a), (x, w, b))
    # the dispatcher drops trailing defaults: the op with only x and weight still differentiates
    w4 = torch.randn(6, 4, 1, 1, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: torch.ops.onebyone.conv1x1(x, w), (x, w4))


def test_backward_ops_check_their_arguments():
    x, w = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 1, 1)
    with pytest.raises(ValueError, match=r"grad must have the output's shape \(2, 3, 3, 3\)"):
        torch.ops.onebyone.conv1x1_grad_input(torch.randn(2, 3, 6, 6), x, w, [2, 2], 1)
    with pytest.raises(TypeError, match="grad must have x's dtype"):
        torch.ops.onebyone.conv1x1_grad_weight(torch.randn(2, 3, 6, 6, dtype=torch.float64), x, w, [1, 1], 1)


def test_errors_are_the_same_through_the_dispatcher():
    """FakeTensor and autocast take the dispatcher; the fake and autocast kernels raise what eager does."""
    mode = FakeTensorMode()
    x, w = mode.from_tensor(torch.randn(2, 3, 4, 4)), mode.from_tensor(torch.randn(4, 3, 1, 1))
    with mode, pytest.raises(ValueError, match="groups=2 must divide the input channels, got 3"):
        onebyone.conv1x1(x, w, groups=2)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="activation must be"):
        onebyone.conv1x1(torch.randn(2, 3, 4, 4), torch.randn(4, 3, 1, 1), activation="gelu")
    no_tensor = r"x must be a torch\.Tensor, got list"
    with FlopCounterMode(display=False), pytest.raises(TypeError, match=no_tensor):
        onebyone.conv1x1([1.0], torch.randn(4, 3, 1, 1))  # type: ignore[arg-type]


def test_flop_counter_sees_the_op_forward_and_backward():
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    w = torch.randn(4, 4, 1, 1, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        onebyone.conv1x1(x, w, stride=2, groups=2).sum().backward()
    macs = 2 * 4 * 3 * 3 * 4  # N x K x Ho x Wo x C/g
    flops = counter.get_flop_counts()["Global"]
    assert flops[torch.ops.onebyone.conv1x1] == 2 * macs
    assert flops[torch.ops.onebyone.conv1x1_backward] == 4 * macs


# ---------------------------------------------------------------- models out of eager mode


@pytest.fixture
def strict_inductor(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inductor as continuous integration runs it, whatever this shell has: with CI set it refuses
    to fall back to an op that has a global decomposition; caches off, so that it lowers anew."""
    monkeypatch.setenv("CI", "1")
    with torch.compiler.config.patch(force_disable_caches=True):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_compile_fullgraph_matches_eager_forward_and_backward(case, strict_inductor):
    factory, shape, channels_last = CASES[case]
    torch._dynamo.reset()
    model = factory()
    x = _input(shape, channels_last)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
    xg = x.clone().requires_grad_()
    compiled(xg).square().sum().backward()
    expected = x.clone().requires_grad_()
    model(expected).square().sum().backward()
    assert xg.grad is not None and expected.grad is not None
    torch.testing.assert_close(xg.grad, expected.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_export_records_the_op_and_matches_eager(case):
    factory, shape, channels_last = CASES[case]
    model = factory()
    x = _input(shape, channels_last)
    program = torch.export.export(model, (x,))
    assert "onebyone.conv1x1.default" in _graph_ops(program.graph)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), atol=1e-6, rtol=1e-6)
    # the op stays itself through the default decompositions, and becomes a convolution that
    # computes the same with its own
    assert "onebyone.conv1x1.default" in _graph_ops(program.run_decompositions().graph)
    table = torch.export.default_decompositions()
    table.update(onebyone.ops.decompositions())
    decomposed = program.run_decompositions(table)
    assert "onebyone.conv1x1.default" not in _graph_ops(decomposed.graph)
    with torch.no_grad():
        torch.testing.assert_close(decomposed.module()(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_jit_trace_matches_eager_on_new_inputs(case):
    factory, shape, channels_last = CASES[case]
    model = factory()
    x = _input(shape, channels_last)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,))
        assert "onebyone::conv1x1" in str(traced.inlined_graph)
        other = _input((shape[0] + 1, *shape[1:]), channels_last) * 3
        torch.testing.assert_close(traced(other), model(other), atol=1e-6, rtol=1e-6)


def test_fx_symbolic_trace_records_the_op():
    model = _mixed()
    graph_module = torch.fx.symbolic_trace(model)
    assert "onebyone.conv1x1.default" in _graph_ops(graph_module.graph)
    x = _input((2, 3, 12, 10), False)
    with torch.no_grad():
        torch.testing.assert_close(graph_module(x), model(x))


@pytest.mark.parametrize("case", list(CASES))
def test_fake_tensors_and_the_meta_device_give_shapes_and_layouts(case):
    factory, shape, channels_last = CASES[case]
    model = factory()
    x = _input(shape, channels_last)
    with torch.no_grad():
        expected = model(x)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = model(mode.from_tensor(x))
        meta = model.to("meta")(x.to("meta"))
    for out in (fake, meta):
        assert out.shape == expected.shape and out.dtype == expected.dtype
    # a 1x1 layer's output keeps the input's layout under FakeTensor as in eager
    layer = Conv1x1(3, 5, stride=2)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        y = layer(mode.from_tensor(x if x.shape[1] == 3 else torch.randn(2, 3, 6, 6)))
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_meta_device_model_builds_without_data():
    with torch.device("meta"):
        model = create_model("nin_digits")
    out = model(torch.empty(4, 1, 8, 8, device="meta"))
    assert out.shape == (4, 10) and out.is_meta


# ---------------------------------------------------------------- bfloat16 under autocast


def _bf16_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same model with every 1x1 layer back as nn.Conv2d: PyTorch's own autocast."""
    import copy

    reference = copy.deepcopy(model)
    for name, module in list(reference.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1x1):
                conv = nn.Conv2d(child.in_channels, child.out_channels, 1, stride=child.stride,
                                 groups=child.groups, bias=child.bias is not None)
                conv.load_state_dict(child.state_dict())
                setattr(module, child_name, conv)
        del name
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return reference(x)


@pytest.mark.parametrize("case", list(CASES))
def test_autocast_runs_the_1x1_layers_in_bfloat16(case):
    factory, shape, channels_last = CASES[case]
    model = factory()
    x = _input(shape, channels_last)
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in model.modules() if isinstance(m, Conv1x1)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.bfloat16}
    torch.testing.assert_close(y.float(), _bf16_reference(model, x).float(), atol=2e-2, rtol=2e-2)
    # and every way out of eager mode gives eager's bfloat16 outputs under autocast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        program = torch.export.export(model, (x,))
        torch.testing.assert_close(program.module()(x), y)
        # jit.trace bakes autocast's casts of the weights into the graph as constants, which must
        # not require grad (nn.Conv2d alike): a model traced for deployment is frozen first
        traced = torch.jit.trace(model.requires_grad_(False), (x,))
        torch.testing.assert_close(traced(x), y)


@pytest.mark.slow
def test_autocast_under_compile_fullgraph_matches_eager(strict_inductor):
    torch._dynamo.reset()
    model = _mixed()
    x = _input((2, 3, 12, 10), True)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = model(x), compiled(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


def test_autocast_gradients_reach_the_float32_weights():
    layer = Conv1x1(6, 4, bias=True)
    x = torch.randn(2, 6, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
    assert layer.bias is not None and layer.bias.grad is not None
    expected = x.sum(dim=(0, 2, 3))  # d(sum y)/dW[k, c] = sum over pixels of x[c]
    torch.testing.assert_close(layer.weight.grad[0].flatten(), expected, atol=0.5, rtol=2e-2)


# ---------------------------------------------------------------- ONNX


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_export_writes_standard_operators_that_onnxruntime_runs(case, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    factory, shape, channels_last = CASES[case]
    model = factory()
    x = _input(shape, channels_last)
    path = tmp_path / f"{case}.onnx"
    torch.onnx.export(model, (x,), path, dynamo=True, verbose=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    kinds = {node.op_type for node in proto.graph.node}
    assert "Conv" in kinds and not any(node.domain.startswith("onebyone") for node in proto.graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.contiguous().numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(got - expected).max() <= 1e-5 * max(1.0, abs(expected).max())


@pytest.mark.slow
def test_onnx_export_of_an_exported_program_decomposed_with_the_op_table(tmp_path):
    """The path docs/op.md gives for a program exported first: run_decompositions with the op's
    table, then torch.onnx.export writes standard Conv nodes."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _mixed().eval()
    x = _input((2, 3, 12, 10), False)
    table = torch.export.default_decompositions()
    table.update(onebyone.ops.decompositions())
    program = torch.export.export(model, (x,)).run_decompositions(table)
    path = tmp_path / "program.onnx"
    torch.onnx.export(program, f=path, dynamo=True, verbose=False)
    proto = onnx.load(str(path))
    assert "Conv" in {node.op_type for node in proto.graph.node}
    assert not any(node.domain.startswith("onebyone") for node in proto.graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(got - expected).max() <= 1e-5 * max(1.0, abs(expected).max())


@pytest.mark.slow
def test_onnx_export_under_autocast_writes_bfloat16_convolutions():
    """onnxruntime's CPU provider has no bfloat16 Conv kernel, so the file is checked, not run."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = _nin().requires_grad_(False)
    x = _input((2, 1, 8, 8), False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    assert program is not None
    proto = program.model_proto
    onnx.checker.check_model(proto)
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len(convs) == sum(isinstance(m, (nn.Conv2d, Conv1x1)) for m in model.modules())
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    assert {types[c.input[0]] for c in convs if c.input[0] in types} == {onnx.TensorProto.BFLOAT16}
