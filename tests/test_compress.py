"""onebyone.compress: the factorizations against the layers they replace, the rank rules against known
ranks, the budget against two independent counters, the timing's verdict, fine-tuning, and export."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import onebyone
from onebyone.compress import LowRank, Tucker2, evbmf_rank, factorize, parse_rank
from onebyone.compress.factorize import full_ranks, plan
from onebyone.compress.ranks import Option, allocate, energy_rank

pytestmark = pytest.mark.usefixtures("one_thread_torch_kernels")


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    # float32: the factors are computed in float64 and rounded once, the products accumulate in float32
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 2e-5 * max(scale, 1.0)


# ------------------------------------------------------------------ factorizations


CONVS = {
    "plain": dict(in_channels=12, out_channels=20, kernel_size=3, padding=1),
    "stride2_nobias": dict(in_channels=12, out_channels=20, kernel_size=3, stride=2, padding=1, bias=False),
    "dilation2_pad2": dict(in_channels=8, out_channels=16, kernel_size=3, padding=2, dilation=2),
    "5x5_valid": dict(in_channels=6, out_channels=10, kernel_size=5),
    "rect_reflect": dict(in_channels=8, out_channels=8, kernel_size=(3, 1), padding=(1, 0),
                         padding_mode="reflect"),
}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", list(CONVS))
def test_tucker2_at_full_rank_reproduces_the_convolution(case, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(**CONVS[case]).eval()
    x = torch.randn(3, conv.in_channels, 11, 13)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = factorize(conv, "tucker2", full_ranks(conv, "tucker2"))
    assert isinstance(t, Tucker2)
    y = t(x)
    _close(y, conv(x))
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", list(CONVS))
def test_tucker2_at_the_kernels_multilinear_rank_is_exact_with_all_three_layers(case, channels_last):
    """A kernel built as U_out G U_in (ranks R1 < C, R2 < K) is reproduced through the bottleneck."""
    torch.manual_seed(1)
    conv = nn.Conv2d(**CONVS[case]).eval()
    c, k = conv.in_channels, conv.out_channels
    r1, r2 = c // 2, k // 2
    u_in, u_out = torch.randn(c, r1, dtype=torch.float64), torch.randn(k, r2, dtype=torch.float64)
    core = torch.randn(r2, r1, *conv.kernel_size, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("rshw,kr,cs->kchw", core, u_out, u_in).float())
    t = factorize(conv, "tucker2", (r1, r2))
    assert [n for n, _ in t.named_children()] == ["reduce", "core", "restore"]
    assert isinstance(t.reduce, onebyone.Conv1x1) and isinstance(t.restore, onebyone.Conv1x1)
    assert (t.core.stride, t.core.padding, t.core.dilation) == (conv.stride, conv.padding, conv.dilation)
    assert (t.restore.bias is None) == (conv.bias is None)
    x = torch.randn(2, c, 12, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _close(t(x), conv(x))


LOW_RANK = {
    "conv1x1_stride2_relu": lambda: onebyone.Conv1x1(24, 16, stride=2, activation="relu"),
    "conv2d_1x1_stride2": lambda: nn.Conv2d(24, 16, 1, stride=2),
    "conv2d_1x1_nobias": lambda: nn.Conv2d(16, 24, 1, bias=False),
    "linear": lambda: nn.Linear(24, 16),
}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", list(LOW_RANK))
def test_svd_at_full_rank_reproduces_the_layer(case, channels_last):
    torch.manual_seed(2)
    layer = LOW_RANK[case]().eval()
    low = factorize(layer, "svd", full_ranks(layer, "svd"))
    assert isinstance(low, LowRank)
    if isinstance(layer, nn.Linear):
        x = torch.randn(5, 24)
        assert all(isinstance(m, nn.Linear) for m in low.children())
    else:
        x = torch.randn(2, layer.in_channels, 9, 10)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        assert all(isinstance(m, onebyone.Conv1x1) for m in low.children())
    _close(low(x), layer(x))


def test_svd_at_the_weights_rank_is_exact_and_truncation_is_the_best_approximation():
    torch.manual_seed(3)
    layer = nn.Linear(30, 20)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(20, 4) @ torch.randn(4, 30))
    x = torch.randn(7, 30)
    _close(factorize(layer, "svd", (4,))(x), layer(x))
    # below the weight's rank, the error of the weight is the tail of its singular values (Eckart-Young)
    low = factorize(layer, "svd", (2,))
    w = low.restore.weight @ low.reduce.weight
    s = torch.linalg.svdvals(layer.weight.double())
    assert abs((w.double() - layer.weight.double()).norm().item() - s[2:].norm().item()) < 1e-4


def test_depthwise_and_grouped_are_skipped_with_a_reason():
    assert plan(nn.Conv2d(8, 8, 3, groups=8))[0] is None
    assert "depthwise" in plan(nn.Conv2d(8, 8, 3, groups=8))[1]
    method, why = plan(nn.Conv2d(8, 16, 3, groups=2))
    assert method is None and "grouped (groups=2)" in why
    model = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.Conv2d(16, 32, 3, padding=1, groups=4), nn.Conv2d(32, 32, 3, padding=1))
    _, report = onebyone.compress(model, (4, 10, 10), rank=0.5, keep="all", batch=2, rounds=1, calibration=4)
    rows = {r.name: r for r in report.layers}
    assert rows["1"].status == "skipped" and "depthwise" in rows["1"].reason
    assert rows["2"].status == "skipped" and "grouped" in rows["2"].reason
    assert rows["3"].status == "factorized"


# ---------------------------------------------------------------------- rank rules


def test_parse_rank_accepts_the_documented_forms_and_names_a_bad_one():
    assert str(parse_rank("vbmf")) == "vbmf:0.6" and str(parse_rank("vbmf:1")) == "vbmf:1"
    assert str(parse_rank("energy:0.9")) == "energy:0.9"
    assert parse_rank(8).kind == "count" and parse_rank("8").kind == "count"
    assert parse_rank(0.25).kind == "fraction" and parse_rank("0.25").kind == "fraction"
    for bad in ("energy:1.5", "vbmf:2", "tucker", 0, -3, 1.5, "0"):
        with pytest.raises(ValueError, match="rank"):
            parse_rank(bad)
    with pytest.raises(TypeError):
        parse_rank(True)


def test_energy_rank_counts_the_squares_of_known_singular_values():
    u, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(12, 10, dtype=torch.float64))
    s = torch.tensor([4.0, 3.0, 2.0, 1.0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)  # squares 16 9 4 1 of 30
    m = u @ torch.diag(s) @ v.T
    assert energy_rank(m, 0.5) == 1 and energy_rank(m, 0.54) == 2 and energy_rank(m, 0.9) == 3
    assert energy_rank(m, 0.97) == 4 and energy_rank(m, 1.0) == 4


@pytest.mark.parametrize("shape,rank", [((60, 80), 5), ((90, 40), 12)])
def test_evbmf_finds_the_rank_of_a_low_rank_matrix_in_noise(shape, rank):
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(shape[0], rank, generator=gen) @ torch.randn(rank, shape[1], generator=gen)
    noisy = signal + 0.05 * torch.randn(*shape, generator=gen)
    assert evbmf_rank(noisy) == rank
    assert evbmf_rank(0.05 * torch.randn(*shape, generator=gen)) <= 1  # noise alone: (almost) nothing kept


def test_allocate_buys_the_most_error_per_mac_within_the_budget():
    a = [Option(None, 100, 0.0), Option((8,), 50, 0.1), Option((4,), 20, 0.5)]
    b = [Option(None, 100, 0.0), Option((8,), 50, 0.4), Option((4,), 20, 0.6)]
    assert allocate([a, b], fixed=10, budget=50) == [2, 2]  # the cheapest options: 50
    assert allocate([a, b], fixed=10, budget=90) == [1, 2]  # a's step buys 0.4 of error for 30, b's 0.2
    assert allocate([a, b], fixed=10, budget=120) == [1, 1]
    assert allocate([a, b], fixed=10, budget=40) is None


# --------------------------------------------------------------------------- budget


def _convnet() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(48, 64, 3, padding=1), nn.ReLU(), onebyone.Conv1x1(64, 64, activation="relu"),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()


def _macs_by_flop_counter(model: nn.Module, size: tuple[int, ...]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.randn(1, *size))
    return counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per multiply-add


@pytest.mark.parametrize("fraction", [0.4, 0.25])
def test_mac_budget_is_met_by_onebyone_cost_and_torch_flop_counter(fraction):
    model = _convnet()
    size = (3, 16, 16)
    compressed, report = onebyone.compress(model, size, macs=fraction, keep="all", batch=2, rounds=1,
                                           calibration=16)
    before, after = onebyone.cost(model, size).macs, onebyone.cost(compressed, size).macs
    assert after <= fraction * before and report.macs_after == after and report.macs_before == before
    assert _macs_by_flop_counter(compressed, size) <= fraction * _macs_by_flop_counter(model, size)
    assert report.budget == {"unit": "macs", "fraction": fraction, "met": True}
    assert any(r.status == "factorized" for r in report.layers)


def test_params_budget_is_met_and_the_layers_differ_by_sensitivity():
    model = _convnet()
    compressed, report = onebyone.compress(model, (3, 16, 16), params=0.5, keep="all", batch=2, rounds=1)
    assert sum(p.numel() for p in compressed.parameters()) <= 0.5 * sum(p.numel() for p in model.parameters())
    fractions = {r.name: r.params_after / r.params_before for r in report.layers if r.method}
    assert len(set(round(f, 3) for f in fractions.values())) > 1  # not one uniform cut


def test_budget_out_of_range_or_unreachable_is_refused_with_the_value():
    model = _convnet()
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"got {bad}"):
            onebyone.compress(model, (3, 16, 16), macs=bad)
    with pytest.raises(ValueError, match="not both"):
        onebyone.compress(model, (3, 16, 16), macs=0.5, params=0.5)
    with pytest.raises(ValueError, match="cannot be met"):
        onebyone.compress(model, (3, 16, 16), macs=0.001, keep="all", rounds=1)
    with pytest.raises(ValueError, match="nothing to compress"):
        onebyone.compress(nn.Sequential(nn.AvgPool2d(2), nn.Flatten()), (3, 16, 16))


# --------------------------------------------------------------- keep what is faster


def test_keep_faster_reverts_a_layer_that_cannot_win():
    """At full rank an SVD doubles a 1x1 layer's multiply-adds and adds a pass: it is timed slower."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 64, 1)).eval()
    compressed, report = onebyone.compress(model, (64, 24, 24), rank=1.0, keep="faster", batch=4)
    for row in report.layers:
        assert row.status == "reverted" and row.reason.startswith("reverted: factorized at ranks [64]")
        assert row.seconds_after > row.seconds_before
    assert all(type(m) is nn.Conv2d for m in compressed if not isinstance(m, nn.ReLU))
    kept, report_all = onebyone.compress(model, (64, 24, 24), rank=1.0, keep="all", batch=4, rounds=1)
    assert all(r.status == "factorized" for r in report_all.layers)
    assert isinstance(kept[0], LowRank)


def test_the_given_model_is_unchanged():
    model = _convnet().train()
    before = copy.deepcopy(model.state_dict())
    modules = list(model.modules())
    onebyone.compress(model, (3, 16, 16), macs=0.4, batch=2, rounds=1)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert list(model.modules()) == modules and all(m.training for m in modules)


# ------------------------------------------------------------------------ fine-tune


@pytest.fixture(scope="module")
def trained_nin(tmp_path_factory):
    from onebyone.train import TrainConfig, load_run, train

    out = tmp_path_factory.mktemp("nin")
    train(TrainConfig(model="nin_digits", epochs=3), out)
    return load_run(out)[0]


def test_finetune_raises_the_accuracy_of_a_compressed_model(trained_nin, tmp_path):
    compressed, report = onebyone.compress(trained_nin, (1, 8, 8), rank=0.125, keep="all", data="digits",
                                           rounds=1, batch=4)
    assert report.accuracy["compressed"] < report.accuracy["original"]
    onebyone.finetune(compressed, "digits", epochs=2, report=report, out=tmp_path / "ft")
    assert report.accuracy["finetuned"] > report.accuracy["compressed"] + 0.02
    assert (tmp_path / "ft" / "checkpoint.safetensors").is_file()  # the trainer's checkpoints
    assert report.finetune["distilled"] is False


def test_distillation_runs_from_the_original(trained_nin):
    from onebyone.data import load_digits

    data = load_digits()
    x, y = torch.from_numpy(data.x_train[:256]), torch.from_numpy(data.y_train[:256])
    compressed, report = onebyone.compress(trained_nin, (1, 8, 8), rank=0.25, keep="all", data=(x, y),
                                           rounds=1, batch=4)
    teacher_before = copy.deepcopy(trained_nin.state_dict())
    tuned = onebyone.finetune(compressed, (x, y), epochs=1, teacher=trained_nin, report=report)
    assert tuned is compressed and report.finetune["distilled"] is True
    assert 0.0 <= report.accuracy["finetuned"] <= 1.0
    assert all(torch.equal(teacher_before[k], v) for k, v in trained_nin.state_dict().items())


# --------------------------------------------------------------------------- export


def test_compressed_model_exports_and_runs_in_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    compressed, _ = onebyone.compress(_convnet(), (3, 16, 16), macs=0.4, keep="all", rounds=1, batch=2)
    x = torch.randn(2, 3, 16, 16)
    program = torch.export.export(compressed, (x,))
    with torch.no_grad():
        want = compressed(x)
    _close(program.module()(x), want)
    path = tmp_path / "compressed.onnx"
    torch.onnx.export(compressed, (x,), path, dynamo=True, verbose=False)
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(got - want.numpy()).max() <= 1e-5 * max(1.0, want.abs().max().item())


def test_report_table_json_and_figure(tmp_path):
    import json

    _, report = onebyone.compress(_convnet(), (3, 16, 16), rank="energy:0.9", keep="all", rounds=1, batch=2)
    d = json.loads(report.to_json())
    assert d["macs_ratio"] == report.macs_after / report.macs_before and "1 MAC = 2 FLOPs" in d["convention"]
    assert set(d["latency"]) == {"batch_1", "batch_2"} and d["layers"][0]["before"] == "3->32 3x3"
    assert "energy:0.9" in report.table() and report.table().count("\n") > len(report.layers)
    png = report.plot(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
