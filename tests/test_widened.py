"""The float16 / bfloat16 products widened to float32 block by block (ops/widened.py): every way a
product is cut into blocks gives float32 sums of the low-precision operands."""

from __future__ import annotations

import threading

import pytest
import torch

from onebyone.ops import joined, passes, widened, workspace


def _reference(a, b):
    return (a.double() @ b.double()).to(a.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(
    "m, r, n, cap",
    [
        (40, 30, 7, 10**6),  # one block
        (40, 30, 7, 300),  # a's rows (the long side) in blocks, b whole
        (7, 30, 40, 300),  # b's columns in blocks, a whole
        (40, 30, 50, 200),  # both sides in blocks
        (6, 500, 5, 200),  # the sum over the long side in blocks, added up in float32
        (3, 0, 4, 100),  # an empty sum: zeros
    ],
)
# cap: float32 elements of the workspace
def test_every_cut_of_a_product_gives_its_float32_sums(m, r, n, cap, dtype, monkeypatch):
    monkeypatch.setattr(workspace, "WORKSPACE_BYTES", 4 * cap)
    monkeypatch.setattr(workspace, "_local", threading.local())
    gen = torch.Generator().manual_seed(m * 100 + n)
    a = torch.randn(m, r, generator=gen).to(dtype)
    b = torch.randn(r, n, generator=gen).to(dtype)
    out = torch.full((m, n), float("nan"), dtype=dtype)
    widened._mm2(a, b, out)
    torch.testing.assert_close(out, _reference(a, b), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("cap", [10**6, 1000, 100], ids=["runs", "blocks-of-w", "image-by-image"])
def test_images_of_a_batch_in_runs_or_one_by_one(cap, monkeypatch):
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(40, 16, generator=gen).bfloat16()
    b = torch.randn(5, 16, 9, generator=gen).bfloat16()
    out = torch.full((5, 40, 9), float("nan"), dtype=torch.bfloat16)
    monkeypatch.setattr(workspace, "WORKSPACE_BYTES", 4 * cap)
    monkeypatch.setattr(workspace, "_local", threading.local())
    widened._mm_widened(a, b, out)
    torch.testing.assert_close(out, _reference(a, b), atol=1e-2, rtol=1e-2)
    batched = torch.randn(5, 40, 9, generator=gen).bfloat16()  # grad_W's form: both batched
    out = torch.empty(5, 40, 16, dtype=torch.bfloat16)
    widened._mm_widened(batched, b.transpose(1, 2), out)
    torch.testing.assert_close(out, _reference(batched, b.transpose(1, 2)), atol=1e-2, rtol=1e-2)


def test_widened_is_a_candidate_of_every_pass_in_low_precision_only():
    x = torch.randn(2, 8, 5, 5)
    w = torch.randn(4, 8)
    for dtype, expected in ((torch.float32, False), (torch.bfloat16, True), (torch.float16, True)):
        xd, wd = x.to(dtype), w.to(dtype)
        for names in (passes.forward_candidates(xd, wd, (1, 1), 1, False),
                      passes.grad_input_candidates(xd, wd, (1, 1), False),
                      passes.grad_weight_candidates(xd, wd, (1, 1), False)):
            assert ("widened" in names) is expected


def test_the_workspace_is_kept_between_calls_and_sized_by_the_blocks():
    a = torch.randn(300, 64).bfloat16()
    b = torch.randn(64, 1000).bfloat16()
    out = torch.empty(300, 1000, dtype=torch.bfloat16)
    widened._mm2(a, b, out)
    ws = workspace._local.ws
    widened._mm2(a, b, out)
    assert workspace._local.ws is ws and ws.numel() == workspace.WORKSPACE_BYTES  # bytes, allocated whole
    torch.testing.assert_close(out, _reference(a, b), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("cap", [10**6, 700, 10], ids=["one-run", "runs-of-two", "too-small"])
def test_float32_images_joined_side_by_side_in_runs(cap, monkeypatch):
    gen = torch.Generator().manual_seed(8)
    a = torch.randn(12, 16, generator=gen)
    b = torch.randn(5, 16, 9, generator=gen)
    out = torch.full((5, 12, 9), float("nan"))
    monkeypatch.setattr(workspace, "WORKSPACE_BYTES", 4 * cap)
    monkeypatch.setattr(workspace, "_local", threading.local())
    joined._mm_joined(a, b, out)
    torch.testing.assert_close(out, (a.double() @ b.double()).float())
    ws = getattr(workspace._local, "ws", None)
    assert (ws is not None) == (cap != 10)  # too small for one image: PyTorch's batched product


def test_joined_is_a_candidate_of_float32_nchw_batches_only():
    x = torch.randn(2, 8, 5, 5)
    w = torch.randn(4, 8)
    assert "joined" in passes.forward_candidates(x, w, (1, 1), 1, False)
    assert "joined" in passes.grad_input_candidates(x, w, (1, 1), False)
    assert "joined" not in passes.forward_candidates(x[:1], w, (1, 1), 1, False)  # one image: one GEMM
    xcl = x.contiguous(memory_format=torch.channels_last)
    assert "joined" not in passes.forward_candidates(xcl, w, (1, 1), 1, True)
    assert "joined" not in passes.forward_candidates(x.bfloat16(), w.bfloat16(), (1, 1), 1, False)


@pytest.mark.parametrize("cap", [10**6, 1500, 10], ids=["one-run", "runs", "too-small"])
def test_grad_weight_of_joined_images_sums_every_run(cap, monkeypatch):
    gen = torch.Generator().manual_seed(9)
    grad = torch.randn(5, 6, 3, 4, generator=gen)
    x = torch.randn(5, 8, 3, 4, generator=gen)
    monkeypatch.setattr(workspace, "WORKSPACE_BYTES", 4 * cap)
    monkeypatch.setattr(workspace, "_local", threading.local())
    got = joined._grad_weight_joined(grad, x, 2)  # two groups: 3 x 4 blocks of grad_W
    want = torch.einsum("nkp,ncp->kc", grad.double().view(5, 6, 12), x.double().view(5, 8, 12))
    want = torch.cat([want[:3, :4], want[3:, 4:]])
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_a_strided_input_is_gathered_in_a_workspace_kept_between_calls():
    x = torch.randn(2, 16, 9, 9)
    w = torch.randn(8, 16)
    want = passes._forward_on("torch", x[:, :, ::2, ::2].contiguous(), w, None, (1, 1), 1, None, False)
    got = passes._forward_on("torch", x, w, None, (2, 2), 1, None, False)
    buf = workspace._local.gather
    torch.testing.assert_close(passes._forward_on("torch", x, w, None, (2, 2), 1, None, False), want)
    assert workspace._local.gather is buf
    torch.testing.assert_close(got, want)
