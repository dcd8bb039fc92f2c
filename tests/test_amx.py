"""onebyone's bfloat16 AMX kernel: the raw product on each of its packing and storing paths, the
forward with bias and activation, and its place among the candidates. Skipped where the CPU has no
AMX-BF16 (the candidates' lists are still checked there: no AMX candidate may appear)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onebyone import ops
from onebyone.ops import amx, passes

needs_amx = pytest.mark.skipif(not amx.amx_available(), reason="no AMX-BF16 tiles on this CPU")


def _bf16(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _close(got, want):
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got.double(), want.double(), atol=0.02 * scale, rtol=0.02)


def test_amx_candidates_only_for_bfloat16_where_the_kernel_runs():
    x32 = torch.randn(2, 8, 5, 5)
    w32 = torch.randn(4, 8)
    assert not any(n.startswith("amx") for n in passes.forward_candidates(x32, w32, (1, 1), 1, False))
    x, w = x32.to(torch.bfloat16), w32.to(torch.bfloat16)
    xcl = x.contiguous(memory_format=torch.channels_last)
    lists = [
        passes.forward_candidates(x, w, (1, 1), 1, False),
        passes.forward_candidates(xcl, w, (1, 1), 1, True),
        passes.forward_candidates(xcl, w, (2, 2), 1, True),
        passes.grad_input_candidates(xcl, w, (1, 1), True),
        passes.grad_weight_candidates(x, w, (1, 1), False),
    ]
    if not amx.amx_available():
        assert not any(n.startswith("amx") for names in lists for n in names)
        return
    assert "amx" in lists[0] and "amx_turned" not in lists[0]
    assert {"amx", "amx_turned"} <= set(lists[1])
    assert "amx_turned" in lists[2] and "amx" not in lists[2]  # strided channels_last: turned only
    assert {"amx", "amx_turned"} <= set(lists[3])
    assert "amx" in lists[4]
    assert passes.grad_input_candidates(xcl, w, (2, 2), True)[-1:] == ["amx"]  # strided: not turned
    assert "amx" not in passes.grad_input_candidates(x, w, (2, 2), False)


def _gemm(a, b_store, sbk, sbn, out, som, son, *, bias=None, bias_rows=False, act=0, m, n, kd, images=1,
          an=0, bn=0, on=0, out_f32=False, accumulate=False, sum_images=False, lda=None):
    amx._native.gemm_bf16(a.data_ptr(), kd if lda is None else lda, an, b_store.data_ptr(), sbk, sbn, bn,
                          out.data_ptr(), som, son, on, 0 if bias is None else bias.data_ptr(),
                          int(bias_rows), images, m, n, kd, act, 2, int(out_f32), int(accumulate),
                          int(sum_images))


@needs_amx
@pytest.mark.parametrize("m,n,kd", [(1, 1, 1), (20, 37, 50), (33, 65, 31), (17, 16, 7), (64, 300, 96),
                                    (5, 7, 600)])
@pytest.mark.parametrize("packing", ["rows", "pairs", "every_other", "any"])
def test_the_raw_product_on_every_packing_path(m, n, kd, packing):
    """B read four ways: rows of B contiguous (interleaved pairs), pairs of B's rows adjacent (32-bit
    words), every other value of rows (stride 2), and any strides (value by value); the sizes cover
    partial tiles in every dimension and reductions that are not multiples of 32 or even."""
    a = _bf16(m, kd, seed=1)
    store = _bf16(kd * n * 3 + 8, seed=2)
    sbk, sbn = {"rows": (n, 1), "pairs": (1, kd), "every_other": (2 * n + 1, 2), "any": (3 * n, 3)}[packing]
    b = torch.as_strided(store, (kd, n), (sbk, sbn))
    bias = _bf16(n, seed=3)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    _gemm(a, store, sbk, sbn, out, n, 1, bias=bias, act=1, m=m, n=n, kd=kd)
    _close(out, (a.double() @ b.double() + bias.double()).relu())


@needs_amx
def test_the_output_transposed_or_strided_and_the_bias_by_rows():
    m, n, kd = 40, 50, 70
    a, b, bias = _bf16(m, kd, seed=1), _bf16(kd, n, seed=2), _bf16(m, seed=3)
    want = (a.double() @ b.double() + bias.double()[:, None]).clamp(0, 6)
    out_t = torch.empty(n, m, dtype=torch.bfloat16)  # out(m, n) at m + n*M: the transposed store
    _gemm(a, b, n, 1, out_t, 1, m, bias=bias, bias_rows=True, act=2, m=m, n=n, kd=kd)
    _close(out_t.t(), want)
    wide = torch.zeros(m, 3 * n, dtype=torch.bfloat16)  # neither stride 1: value by value
    _gemm(a, b, n, 1, wide, 3 * n, 3, bias=bias, bias_rows=True, act=2, m=m, n=n, kd=kd)
    _close(wide[:, ::3], want)
    assert not wide[:, 1::3].any()  # nothing written between


@needs_amx
def test_float32_sums_over_images_and_onto_an_output():
    images, m, n, kd = 5, 24, 40, 45
    a, b = _bf16(images, m, kd, seed=1), _bf16(images, kd, n, seed=2)
    out = torch.empty(m, n)
    _gemm(a, b, n, 1, out, n, 1, m=m, n=n, kd=kd, images=images, an=m * kd, bn=kd * n, out_f32=True,
          sum_images=True)
    want = torch.einsum("imk,ikn->mn", a.double(), b.double())
    torch.testing.assert_close(out.double(), want, atol=1e-3, rtol=1e-4)
    _gemm(a, b, n, 1, out, n, 1, m=m, n=n, kd=kd, images=images, an=m * kd, bn=kd * n, out_f32=True,
          sum_images=True, accumulate=True)
    torch.testing.assert_close(out.double(), 2 * want, atol=2e-3, rtol=1e-4)


@needs_amx
def test_the_raw_product_refuses_what_it_cannot_do():
    a, b = _bf16(4, 4), _bf16(4, 4)
    out = torch.empty(4, 4)
    with pytest.raises(ValueError, match="no bias or activation on a sum"):
        _gemm(a, b, 4, 1, out, 4, 1, act=1, m=4, n=4, kd=4, out_f32=True, sum_images=True)
    with pytest.raises(ValueError, match="bad sizes"):
        _gemm(a, b, 4, 1, out, 4, 1, m=4, n=4, kd=0)


@needs_amx
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("stride,groups,h", [((1, 1), 1, 9), ((2, 2), 1, 9), ((2, 2), 2, 8), ((1, 1), 4, 1),
                                             ((3, 2), 1, 7)])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_the_forward_with_bias_and_activation(cl, stride, groups, h, activation):
    n, c, k = 3, 8 * groups, 12 * groups
    x = (_bf16(n, c, h, h + 2, seed=4) * 2).contiguous(memory_format=torch.channels_last if cl else
                                                         torch.contiguous_format)
    w, bias = _bf16(k, c // groups, seed=5), _bf16(k, seed=6)
    want = F.conv2d(x.double(), w.double().view(k, -1, 1, 1), bias.double(), stride, 0, 1, groups)
    want = {None: want, "relu": want.relu(), "relu6": want.clamp(0, 6)}[activation]
    names = [nm for nm in passes.forward_candidates(x, w, stride, groups, cl) if nm.startswith("amx")]
    assert names
    for name in names:
        y = passes._forward_on(name, x, w, bias, stride, groups, activation, cl)
        assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last if cl else
                                                             torch.contiguous_format)
        _close(y, want)


@needs_amx
def test_set_backend_amx_forces_it_where_it_applies():
    before = ops.set_backend("amx")
    try:
        x, w = _bf16(2, 16, 6, 6), _bf16(8, 16)
        assert passes._forward_library(x, w, None, (1, 1), 1, None, False) == "amx"
        xcl = x.contiguous(memory_format=torch.channels_last)
        assert passes._forward_library(xcl, w, None, (2, 2), 1, None, True) == "torch"  # amx_turned only
        assert passes._forward_library(x.float(), w.float(), None, (1, 1), 1, None, False) == "torch"
        _close(ops.conv1x1(x, w), F.conv2d(x.double(), w.double().view(8, 16, 1, 1)))
    finally:
        ops.set_backend(before)


@needs_amx
@pytest.mark.parametrize("groups", [1, 2])
def test_the_channels_last_weight_gradient_over_several_runs_of_pixels(groups):
    """More pixels than one kernel image sums (two whole runs and a remainder): each run's sums
    are added to the float32 total, and grad_output's columns are repacked as rows."""
    n, c, k, h, w = 3, 24 * groups, 40 * groups, 27, 26  # 2,106 pixels
    assert n * h * w > 2 * amx._GW_PIXELS
    x = _bf16(n, c, h, w, seed=7).contiguous(memory_format=torch.channels_last)
    g = _bf16(n, k, h, w, seed=8).contiguous(memory_format=torch.channels_last)
    got = passes._grad_weight_on("amx", g, x, _bf16(k, c // groups), (1, 1), groups, True)
    xd, gd = x.double().permute(0, 2, 3, 1).reshape(-1, c), g.double().permute(0, 2, 3, 1).reshape(-1, k)
    kg, cg = k // groups, c // groups
    want = torch.cat([gd[:, i * kg:(i + 1) * kg].t() @ xd[:, i * cg:(i + 1) * cg] for i in range(groups)])
    assert got.dtype == torch.bfloat16 and got.shape == (k, c // groups)
    _close(got, want)
