"""A training call's whole step (ops/step.py): its candidates give conv1x1's gradients, the step is
decided once its passes settle, kept on disk, pinned, left to the op where it cannot be timed, and
never timed under a fixed policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import onebyone
from onebyone import ops
from onebyone.ops import cache, choice, step


def _leaves(n, c, k, hw, cl, bias, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(n, c, hw, hw, generator=gen, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(k, c, 1, 1, generator=gen, dtype=dtype).requires_grad_()
    b = torch.randn(k, generator=gen, dtype=dtype).requires_grad_() if bias else None
    return x, w, b


def _reference(x, w, b, activation):
    xd, wd = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    bd = None if b is None else b.detach().clone().requires_grad_()
    y = F.conv2d(xd, wd, bd)
    y = {None: y, "relu": F.relu(y), "relu6": F.relu6(y)}[activation]
    return y, (xd, wd, bd)


@pytest.mark.parametrize("name", ["aten", "thnn", "conv2d"])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("bias", [False, True])
def test_every_step_candidate_gives_the_convolution_and_its_gradients(name, n, cl, activation, bias):
    x, w, b = _leaves(n, 6, 5, 4, cl, bias)
    if name == "aten" and n > 1 and not cl:  # an NCHW batch: no candidate (its copies)
        assert name not in step.step_candidates(x, w, (1, 1), 1, cl)
        return
    want, ref = _reference(x, w, b, activation)
    got = step.aten_step(name, x, w, b, (1, 1), 1, activation, cl)
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    want.backward(g)
    got.backward(g)
    for mine, theirs in zip((x, w, b), ref, strict=True):
        if mine is not None:
            torch.testing.assert_close(mine.grad, theirs.grad)


def test_the_candidates_are_those_that_keep_the_memory_budget():
    x = torch.randn(2, 8, 16, 16)
    w = torch.randn(4, 8)
    # F.conv2d copies an NCHW input, torch.matmul an NCHW batch
    assert step.step_candidates(x, w, (1, 1), 1, False) == ["op", "thnn"]
    assert step.step_candidates(x[:1], w, (1, 1), 1, False) == ["op", "aten", "thnn"]
    assert step.step_candidates(x, w, (2, 2), 1, False) == ["op"]  # a strided view is a copy
    assert step.step_candidates(x, torch.randn(4, 4), (1, 1), 2, False) == ["op"]
    cl = x.contiguous(memory_format=torch.channels_last)
    assert "conv2d" in step.step_candidates(cl, w, (1, 1), 1, True)
    assert [step.step_pass(*w) for w in ((True, True), (False, True), (True, False), (False, False))] == [
        "step", "step_weight", "step_input", "step_bias"]


def _train(calls, n=1, c=10, k=4, hw=8, cl=False, bias=True, activation="relu"):
    x, w, b = _leaves(n, c, k, hw, cl, bias, dtype=torch.float32)
    for _ in range(calls):
        for t in (x, w, b):
            if t is not None:
                t.grad = None
        y = onebyone.conv1x1(x, w, b, activation=activation)
        y.backward(torch.ones_like(y))
    want, ref = _reference(x, w, b, activation)
    want.backward(torch.ones_like(want))
    torch.testing.assert_close(y.detach(), want.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(w.grad, ref[1].grad, atol=1e-3, rtol=1e-4)
    return x, w, y


def _on_op(y):
    """True where conv1x1's autograd function made y (not PyTorch's own ops)."""
    return type(y.grad_fn).__name__ == "_Conv1x1FunctionBackward"


def _steps_decided():
    """The libraries of the steps decided in this process (kept with the forward's plan)."""
    return [lib for k, plan in choice._plans.items() if k[0] != "backward" for lib in plan[3] if lib]


def _entries(folder: Path) -> dict:
    files = list((folder / "onebyone").glob("choices-*.jsonl"))
    assert len(files) == 1, files
    return cache.read_file(files[0])[1]


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
def test_a_small_training_call_times_its_whole_step_once_its_passes_settle(fresh_cache, monkeypatch, cl):
    monkeypatch.setattr(choice, "TIMING_BUDGET", 0.5)  # room for every candidate on a busy host
    x, w, y = _train(1, cl=cl)
    key = choice.choice_key("step", cl, x.shape, 4, (1, 1), 1, torch.float32)
    assert key not in ops.chosen_backends()  # the first call settles the passes
    x, w, y = _train(3, cl=cl)
    chosen = ops.chosen_backends()[key]
    assert chosen in step.step_candidates(x, w, (1, 1), 1, cl)
    entry = _entries(fresh_cache)[cache.key_text(key)]
    assert entry["choice"] == chosen
    # every candidate timed, or those a busy host left room for in the budget (oneDNN's threads
    # wait far longer when another process holds the cores)
    candidates = set(step.step_candidates(x, w, (1, 1), 1, cl))
    assert "op" in entry["seconds"] and set(entry["seconds"]) <= candidates
    # the step runs where it was decided: PyTorch's own node, or conv1x1's function
    assert _on_op(y) == (chosen == "op"), type(y.grad_fn).__name__


def test_a_first_layer_step_is_a_key_of_its_own(fresh_cache):
    x, w, _ = _leaves(1, 10, 4, 8, False, False, dtype=torch.float32)
    x.requires_grad_(False)
    for _ in range(3):
        w.grad = None
        onebyone.conv1x1(x, w).sum().backward()
    passes = {k[0] for k in ops.chosen_backends()}
    assert "step_weight" in passes and "step" not in passes
    torch.testing.assert_close(w.grad.view(4, 10), x.sum(dim=(0, 2, 3)).expand(4, 10), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("pinned", ["aten", "op"])
def test_a_pinned_step_runs_there_untimed(fresh_cache, monkeypatch, pinned):
    x = torch.empty(1, 10, 8, 8)
    key = choice.choice_key("step", False, x.shape, 4, (1, 1), 1, torch.float32)
    ops.pin_choices({cache.key_text(key): pinned})
    _train(1)  # the passes settle, timed as usual
    monkeypatch.setattr(choice, "_time", lambda *a, **k: pytest.fail("timed a pinned step"))
    _, _, y = _train(3)
    assert ops.chosen_backends()[key] == pinned
    assert (_on_op(y)) == (pinned == "op")


def test_a_step_too_long_for_the_budget_stays_on_the_op_untimed(fresh_cache, monkeypatch):
    _train(1)  # the passes settle, timed as usual
    monkeypatch.setattr(choice, "TIMING_BUDGET", 1e-9)  # then no forward is fast enough for a step
    monkeypatch.setattr(step, "decide", lambda *a, **k: pytest.fail("timed a step"))
    decided = []
    for _ in range(step._GATES + 2):
        _train(1)
        decided.append(_steps_decided())
    # asked again after each slow forward, decided "op" after _GATES of them, asked no more
    assert decided == [[]] * (step._GATES - 1) + [["op"]] * 3
    # kept as this process's choice, not on disk: a training run records it, and pins it on resumption
    assert [v for k, v in ops.chosen_backends().items() if k[0] == "step"] == ["op"]
    assert not any(k.startswith("step") for k in _entries(fresh_cache))


def test_the_fixed_policy_keeps_training_on_the_op(fresh_cache, monkeypatch):
    monkeypatch.setattr(choice, "_time", lambda *a, **k: pytest.fail("timed under a fixed policy"))
    ops.set_backend("fixed")
    _, _, y = _train(4, cl=True)
    assert _on_op(y)
    assert not list(fresh_cache.glob("onebyone/choices-*.jsonl"))


_STEP_MEMORY = """
import json, sys, torch
from onebyone.ops import step
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
n, c, hw, k, cl, name, act = json.loads(sys.argv[1])
fmt = torch.channels_last if cl else torch.contiguous_format
x = torch.randn(n, c, hw, hw).contiguous(memory_format=fmt).requires_grad_()
w, b = torch.randn(k, c, 1, 1).requires_grad_(), torch.randn(k).requires_grad_()
g = torch.randn(n, k, hw, hw).contiguous(memory_format=fmt)
forward = backward = float("inf")
for i in range(4):  # the first a warm-up
    x.grad = w.grad = b.grad = None
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")
    y = step.aten_step(name, x, w, b, (1, 1), 1, act, cl)
    fwd = status("VmHWM") - base - y.numel() * 4
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")
    y.backward(g)
    bwd = status("VmHWM") - base - sum(t.grad.numel() * 4 for t in (x, w, b))
    if i:
        forward, backward = min(forward, fwd), min(backward, bwd)
    del y
print(json.dumps([forward, backward]))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resident-set counters")
@pytest.mark.parametrize(("name", "n", "cl"), [("thnn", 32, False), ("thnn", 32, True), ("aten", 1, False),
                                               ("aten", 32, True)])
def test_the_steps_on_pytorchs_ops_keep_the_memory_budget(name, n, cl):
    """A step candidate's forward adds at most a tenth of the input beyond its output (what
    F.conv2d's NCHW forward does not: it copies the whole input; nor torch.matmul on an NCHW batch,
    twice the input), and its backward at most a tenth of the input and the upstream gradient
    beyond the gradients (thnn's scratch: 2.5% of them at batch 32)."""
    import json
    import os
    import subprocess
    import sys

    c, hw, k = 256, 28, 256
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 * 1024), MALLOC_TRIM_THRESHOLD_=str(64 * 1024),
               MALLOC_TOP_PAD_="0")  # freed blocks leave the resident set
    proc = subprocess.run([sys.executable, "-c", _STEP_MEMORY, json.dumps([n, c, hw, k, cl, name, None])],
                          env=env, capture_output=True, text=True, check=True, timeout=300)
    forward, backward = json.loads(proc.stdout)
    x_bytes = n * c * hw * hw * 4
    assert forward <= 0.1 * x_bytes, forward / x_bytes
    assert backward <= 0.1 * (x_bytes + n * k * hw * hw * 4), backward / x_bytes
