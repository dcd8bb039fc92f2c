"""conv1x1's choice by measurement: every candidate right, the timing's budget, the cache on disk
(corrupt, foreign, unwritable, shared by two writers, warm in a second process), the API that
reads, pins and clears the choices, and `onebyone tune`."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import onebyone
from onebyone import ops
from onebyone.ops import cache, choice, passes

ROOT = Path(__file__).resolve().parents[1]
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-4), torch.bfloat16: (0.05, 0.02)}


# ------------------------------------------------------------------ every candidate is right


def _cases():
    gen = torch.Generator().manual_seed(1234)
    for i in range(24):
        r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=gen))  # noqa: E731
        groups = (1, 1, 2, 4)[r(0, 3)]
        stride = (1, 1, 2, 3)[r(0, 3)]
        yield r(1, 4), groups * r(1, 24), groups * r(1, 24), r(1, 13), r(1, 13), stride, groups, i % 2 == 1


CASES = [
    *_cases(),
    (2, 2, 2, 1, 2, 2, 2, False),  # strided one-pixel outputs at batch 2 (the turned kernel's edge)
    (3, 64, 48, 7, 7, 1, 1, False),
    (1, 50, 20, 30, 30, 1, 1, True),
    (4, 16, 32, 1, 1, 1, 1, False),
]


def _tensors(n, c, k, h, w, stride, groups, cl, dtype):
    gen = torch.Generator().manual_seed(n * 1000 + c * 10 + k)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    wt = torch.randn(k, c // groups, generator=gen, dtype=torch.float64)
    ho, wo = -(-h // stride), -(-w // stride)
    g = torch.randn(n, k, ho, wo, generator=gen, dtype=torch.float64)
    low = [t.to(dtype) for t in (x, wt, g)]
    x_, w_, g_ = low[0].contiguous(memory_format=fmt), low[1], low[2].contiguous(memory_format=fmt)
    return x_, w_, g_


def _expected(x, w, g, stride, groups):
    """The three passes in float64 through F.conv2d's autograd, from the (rounded) inputs."""
    xd = x.detach().double().clone().requires_grad_()
    wd = w.detach().double().clone().view(*w.shape, 1, 1).requires_grad_()
    y = F.conv2d(xd, wd, None, stride, 0, 1, groups)
    y.backward(g.double())
    return y.detach(), xd.grad, wd.grad.view(w.shape)


def _close(got, want, dtype):
    atol, rtol = TOL[dtype]
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got.double(), want, atol=atol * scale, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}k{}_{}x{}_s{}g{}{}".format(*c[:7], "cl" * c[7]))
def test_every_candidate_of_every_pass_gives_the_definition(case, dtype):
    n, c, k, h, w, s, groups, cl = case
    x, wt, g = _tensors(n, c, k, h, w, s, groups, cl, dtype)
    stride = (s, s)
    y, gx, gw = _expected(x, wt, g, stride, groups)
    forward = passes.forward_candidates(x, wt, stride, groups, cl)
    assert forward[0] == "torch"  # PyTorch's BLAS applies everywhere: the fallback
    for name in forward:
        out = passes._forward_on(name, x, wt, None, stride, groups, None, cl)
        assert out.dtype == dtype and out.shape == y.shape, name
        _close(out, y, dtype)
    for name in passes.grad_input_candidates(x, wt, stride, cl):
        _close(passes._grad_input_on(name, g, x, wt, stride, groups, cl), gx, dtype)
    for name in passes.grad_weight_candidates(x, wt, stride, cl):
        _close(passes._grad_weight_on(name, g, x, wt, stride, groups, cl).reshape(wt.shape), gw, dtype)
    if passes._onednn_backward_ok(x, wt, stride, cl, "both"):  # both gradients in one oneDNN call
        both = passes._onednn_backward_both(g, x, wt, stride, groups)
        _close(both[0], gx, dtype)
        _close(both[1].reshape(wt.shape), gw, dtype)


def test_the_candidates_include_onednn_and_the_native_forms_where_they_apply():
    x, w, _ = _tensors(2, 32, 16, 14, 14, 1, 1, False, torch.float32)
    names = passes.forward_candidates(x, w, (1, 1), 1, False)
    if ops.native_isa() is not None:
        assert {"native", "native_turned"} <= set(names)
    assert "onednn" not in names  # NCHW: it would copy the whole input
    if torch.backends.mkldnn.is_available():
        assert "onednn" in passes.forward_candidates(x.contiguous(memory_format=torch.channels_last), w,
                                                     (1, 1), 1, True)
        xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        assert "onednn" in passes.forward_candidates(xb, w.to(torch.bfloat16), (1, 1), 1, True)


def test_numpy_is_a_candidate_only_when_forced(fresh_cache):
    x, w, _ = _tensors(2, 8, 4, 5, 5, 1, 1, False, torch.float32)
    assert "numpy" not in passes.forward_candidates(x, w, (1, 1), 1, False)
    ops.set_backend("numpy")
    assert "numpy" in passes.forward_candidates(x, w, (1, 1), 1, False)
    y, _, _ = _expected(x, w, torch.zeros(2, 4, 5, 5), (1, 1), 1)
    _close(onebyone.conv1x1(x, w), y, torch.float32)


# ------------------------------------------------------------------ the timing


def _step(n=2, c=24, k=12, hw=10, cl=False, dtype=torch.float32):
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(n, c, hw, hw, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(k, c, 1, 1, dtype=dtype, requires_grad=True)
    y = onebyone.conv1x1(x, w)
    y.backward(torch.ones_like(y))
    want = F.conv2d(x.detach().double(), w.detach().double())
    _close(y.detach(), want, dtype)
    return x, w


def _entries(folder: Path) -> dict:
    files = list((folder / "onebyone").glob("choices-*.jsonl"))
    assert len(files) == 1, files
    machine, entries = cache.read_file(files[0])
    assert machine == cache.machine_identity()
    return entries


def test_a_new_key_is_timed_once_kept_on_disk_and_read_back(fresh_cache, monkeypatch):
    _step()
    chosen = ops.chosen_backends()
    assert {key[0] for key in chosen} >= {"forward", "grad_weight"}
    entries = _entries(fresh_cache)
    for key, name in chosen.items():
        entry = entries[cache.key_text(key)]
        assert entry["choice"] == name and name in entry["seconds"]
        assert min(entry["seconds"].values()) * 1.0201 >= entry["seconds"][name]  # the fastest, or tied
        assert choice._samples[key]["spent"] < 5 * choice.TIMING_BUDGET  # generous: CI machines are noisy
    ops.clear_choices()  # a new process, as far as the choices go: the file is read, nothing is timed

    def no_timing(*args, **kwargs):
        raise AssertionError("timed a key the cache holds")

    monkeypatch.setattr(choice, "_time", no_timing)
    _step()
    assert ops.chosen_backends() == chosen


def test_a_large_key_is_timed_on_a_slice_then_its_close_candidates_on_whole_calls(fresh_cache, monkeypatch):
    monkeypatch.setattr(choice, "TIMING_BUDGET", 0.01)  # the whole call takes more: a slice is timed
    monkeypatch.setattr(choice, "_CONTEND", float("inf"))  # every candidate the slice timed goes on trial
    x = torch.randn(8, 64, 80, 80)
    w = torch.randn(64, 64)
    want = F.conv2d(x.double(), w.double().view(64, 64, 1, 1))
    key = choice.choice_key("forward", False, x.shape, 64, (1, 1), 1, torch.float32)
    ran: list[str] = []
    observe = choice._observe
    monkeypatch.setattr(choice, "_observe", lambda key, name, s: (ran.append(name), observe(key, name, s)))
    _close(onebyone.conv1x1(x, w), want, torch.float32)
    entry = _entries(fresh_cache)[cache.key_text(key)]
    assert entry["images"] < 8 or entry["rows"] < 80
    assert choice._samples[key]["images"] == entry["images"]
    contenders = entry["contenders"]
    assert len(contenders) >= 2 and key not in ops.chosen_backends() and ran == contenders[:1]
    for _ in range(choice._TRIAL_CALLS * len(contenders) - 1):
        _close(onebyone.conv1x1(x, w), want, torch.float32)  # each whole call on the next contender
    assert sorted(ran) == sorted(contenders * choice._TRIAL_CALLS)
    entry = _entries(fresh_cache)[cache.key_text(key)]
    assert "contenders" not in entry and set(entry["calls"]) == set(contenders)
    assert ops.chosen_backends()[key] == entry["choice"]
    assert ops.choice_timings()[key] == pytest.approx(entry["calls"], rel=1e-5)
    # the fastest whole calls, or tied; or the slice's pick where no challenger's median beat every
    # one of its calls
    calls, sample = ops.choice_timings()[key], choice._samples[key]
    fastest_calls, favourite = sample["fastest_calls"], sample["favourite"]
    seconds = {n: entry["seconds"][n] for n in contenders}  # the slice's: its pick is the favourite
    assert seconds[favourite] <= 1.021 * min(seconds.values())
    if entry["choice"] == favourite:
        tied = calls[favourite] / 1.0201
        assert all(calls[n] >= fastest_calls[favourite] or calls[n] >= tied for n in calls)
    else:
        assert calls[entry["choice"]] <= 1.0201 * min(calls.values())
        assert favourite not in fastest_calls or calls[entry["choice"]] < fastest_calls[favourite]
    onebyone.conv1x1(x, w)
    assert len(ran) == choice._TRIAL_CALLS * len(contenders)  # settled: nothing timed any more


def test_a_trial_left_unfinished_goes_on_in_the_next_process_without_timing(fresh_cache, monkeypatch):
    monkeypatch.setattr(choice, "TIMING_BUDGET", 0.01)
    monkeypatch.setattr(choice, "_CONTEND", float("inf"))
    x = torch.randn(8, 64, 80, 80)
    w = torch.randn(64, 64)
    key = choice.choice_key("forward", False, x.shape, 64, (1, 1), 1, torch.float32)
    onebyone.conv1x1(x, w)
    entry = _entries(fresh_cache)[cache.key_text(key)]
    assert "contenders" in entry, entry
    contenders = entry["contenders"]
    ops.clear_choices()  # a new process, as far as the choices go
    monkeypatch.setattr(choice, "_time", lambda *a, **k: pytest.fail("timed a key the cache holds"))
    for _ in range(choice._TRIAL_CALLS * len(contenders)):
        onebyone.conv1x1(x, w)
    assert key in ops.chosen_backends() and "calls" in _entries(fresh_cache)[cache.key_text(key)]


def test_training_steps_settle_every_pass_on_trial(fresh_cache, monkeypatch):
    monkeypatch.setattr(choice, "TIMING_BUDGET", 0.002)
    monkeypatch.setattr(choice, "_CONTEND", float("inf"))
    for _ in range(choice._TRIAL_CALLS * choice._MAX_CONTENDERS):
        _step(n=8, c=64, k=64, hw=32, cl=True)  # channels_last: oneDNN's "both gradients" too
    assert not choice._trials
    assert {k[0] for k in ops.chosen_backends()} >= {"forward", "grad_input", "grad_weight"}
    assert any("calls" in e for e in _entries(fresh_cache).values())


def test_a_faster_candidate_paces_the_slice_past_a_slow_first_one(monkeypatch):
    # "slow" costs 20 ms a call whatever the size (as MKL on a sliver of a deep layer); alone it
    # would leave both timed on one row of one image, which ranks them unlike the whole call
    monkeypatch.setattr(choice, "TIMING_BUDGET", 0.2)
    x = torch.zeros(4, 1, 16, 1)

    def run(name, t):
        time.sleep(0.02 if name == "slow" else 0.0001 * t.shape[0] * t.shape[2])

    seconds, sample = choice._time(["slow", "fast"], run, (x,), (1,))
    assert (sample["images"], sample["rows"]) == (4, 16)
    assert seconds["fast"] < seconds["slow"]


def test_where_the_budget_runs_out_the_candidates_left_untimed_are_the_slowest_seen(monkeypatch):
    # "fast" paces the slice from one row to the whole batch (past "slow", 20 ms whatever the
    # size); there "mid" takes most of what is left. "other" (a fixed 0.5 ms, then half fast's time
    # a pixel) had been second on the last size they all ran: it runs before mid and slow, and is
    # timed, where in the candidates' own order mid had used up the budget before it
    monkeypatch.setattr(choice, "TIMING_BUDGET", 0.2)
    x = torch.zeros(4, 1, 16, 1)
    ms = {"slow": lambda px: 20.0, "fast": lambda px: 0.1 * px, "mid": lambda px: 3.0 * px,
          "other": lambda px: 0.5 + 0.05 * px}

    def run(name, t):
        time.sleep(ms[name](t.shape[0] * t.shape[2]) / 1e3)

    seconds, sample = choice._time(["slow", "fast", "mid", "other"], run, (x,), (1,))
    assert (sample["images"], sample["rows"]) == (4, 16)
    assert "other" in seconds and min(seconds, key=seconds.__getitem__) == "other", seconds


def test_one_slow_sample_drops_no_candidate(monkeypatch):
    # the host busy for a moment: "a" (1 ms a call) takes 8 ms once, in the first timed round; the
    # rounds go on and its median is its own, not that one sample (which dropped it, 4x "b")
    monkeypatch.setattr(choice, "TIMING_BUDGET", 0.2)
    calls = {"a": 0, "b": 0}
    warm = 2  # the pacer's first call and the others' first calls come before the rounds

    def run(name, t):
        calls[name] += 1
        busy = name == "a" and calls["a"] == warm
        time.sleep(0.008 if busy else 0.001 if name == "a" else 0.002)

    seconds, _ = choice._time(["a", "b"], run, (torch.zeros(1, 1, 1, 1),), (0,))
    assert calls["a"] > warm + 1 and seconds["a"] < 0.0018 < seconds["b"]


def test_the_fixed_and_forced_policies_never_time(fresh_cache, monkeypatch):
    monkeypatch.setattr(choice, "_time", lambda *a, **k: pytest.fail("timed under a fixed policy"))
    for policy in ("fixed", "torch", "onednn", "native"):
        ops.set_backend(policy)
        _step(cl=policy == "onednn")
    assert not list(fresh_cache.glob("onebyone/choices-*.jsonl"))


def test_pin_read_and_clear(fresh_cache, monkeypatch):
    x = torch.randn(2, 16, 6, 6)
    w = torch.randn(8, 16)
    key = choice.choice_key("forward", False, x.shape, 8, (1, 1), 1, torch.float32)
    monkeypatch.setattr(choice, "_time", lambda *a, **k: pytest.fail("timed a pinned key"))
    ops.pin_choices({cache.key_text(key): "torch"})
    onebyone.conv1x1(x, w)
    assert ops.chosen_backends()[key] == "torch"
    with pytest.raises(ValueError, match="library must be one of"):
        ops.pin_choices({key: "fastest"})
    ops.clear_choices()
    assert ops.chosen_backends() == {}
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh_cache))
    onebyone.conv1x1(x, w)
    path = Path(ops.choices_path())
    assert path.exists() and path.parent == fresh_cache / "onebyone"
    assert key in ops.choice_timings()
    ops.clear_choices(disk=True)
    assert not path.exists() and ops.choice_timings() == {}


def test_autocast_reaches_the_bfloat16_candidates(fresh_cache):
    model = onebyone.Conv1x1(32, 16)
    x = torch.randn(4, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16
    assert any(k[0] == "forward" and k[10] == "bfloat16" for k in ops.chosen_backends())


# ------------------------------------------------------------------ the cache file


def _one_warning(record) -> str:
    ours = [w for w in record if "onebyone:" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    return str(ours[0].message)


def test_a_corrupt_cache_is_ignored_with_one_warning_and_replaced(fresh_cache):
    path = Path(ops.choices_path())
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 2, "machine": {"cpu": ')  # cut off mid-write by something else
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _step()
        _step(c=8, k=8, hw=6)
    assert "not a valid choices file" in _one_warning(record)
    assert _entries(fresh_cache)  # rewritten whole, with this process's choices


def test_an_edited_entry_voids_the_whole_file_with_one_warning(fresh_cache):
    """The header's digest covers every entry line: a line changed by hand (here the choice of a
    timed key) is not trusted, nor are the lines beside it."""
    _step()
    path = Path(ops.choices_path())
    data = path.read_bytes()
    head, _, body = data.partition(b"\n")
    lines = body.splitlines(keepends=True)
    key, _, raw = lines[0].partition(b"\t")
    entry = json.loads(raw)
    entry["choice"] = "planted"
    lines[0] = key + b"\t" + json.dumps(entry).encode() + b"\n"
    path.write_bytes(head + b"\n" + b"".join(lines))
    ops.clear_choices()
    cache.CACHE.warned = False
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _step()
    assert "not a valid choices file" in _one_warning(record)
    assert "planted" not in ops.chosen_backends().values()
    assert all(e["choice"] != "planted" for e in _entries(fresh_cache).values())  # rewritten


def test_a_warm_process_decodes_only_the_entries_it_asks_for(fresh_cache):
    _step()
    timed = _entries(fresh_cache)
    ops.clear_choices()  # as a new process
    _step()
    loaded = cache.CACHE.load()
    asked = [k for k, v in loaded.items() if isinstance(v, dict)]
    assert asked and set(asked) <= set(timed)
    # a file of many other keys: they stay undecoded lines
    machine, entries = cache.read_file(Path(ops.choices_path()))
    some = next(iter(entries.values()))
    others = {f"forward|nchw|{10**6 + i}|3|5|5|4|1|1|1|float32|1": some for i in range(500)}
    Path(ops.choices_path()).write_bytes(cache.encode_file(machine, {**entries, **others}))
    ops.clear_choices()
    _step()
    loaded = cache.CACHE.load()
    assert len(loaded) >= 500 and all(isinstance(loaded[k], bytes) for k in others)
    assert cache.CACHE.get(next(iter(others))) == some  # and decode when asked


def test_a_foreign_cache_is_never_trusted(fresh_cache):
    x = torch.randn(2, 24, 10, 10)
    key = choice.choice_key("forward", False, x.shape, 12, (1, 1), 1, torch.float32)
    path = Path(ops.choices_path())
    path.parent.mkdir(parents=True)
    other = dict(cache.machine_identity(), cpu="Some Other CPU", stepping="99")
    planted = {cache.key_text(key): {"choice": "torch", "images": 2, "rows": 10, "seconds": {"planted": 1.0}}}
    path.write_bytes(cache.encode_file(other, planted))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _step()
    assert "written on another machine" in _one_warning(record)
    assert "planted" not in ops.choice_timings()[key]  # measured here, not read


def test_an_unwritable_cache_folder_keeps_the_choices_in_memory_with_one_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(cache.CACHE, "warned", False)
    before = ops.set_backend("auto")
    ops.clear_choices()
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _step()
            _step(c=8, k=8, hw=6)
        assert "cannot " in _one_warning(record)  # read or write: one warning either way
        assert ops.chosen_backends()
        assert blocker.read_text().startswith("a file")
    finally:
        ops.clear_choices()
        ops.set_backend(before)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder(fresh_cache):
    fresh_cache.mkdir(mode=0o500)
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _step()
        _one_warning(record)
    finally:
        fresh_cache.chmod(0o700)


def _env(folder: Path) -> dict[str, str]:
    return dict(os.environ, XDG_CACHE_HOME=str(folder), PYTHONPATH=str(ROOT / "src"))


def test_two_processes_writing_at_once_both_land(fresh_cache):
    script = (
        "import sys, warnings, torch, onebyone, torch.nn.functional as F\n"
        "warnings.simplefilter('error')\n"
        "torch.set_num_threads(1)\n"
        "first = int(sys.argv[1])\n"
        "for c in range(first, first + 12):\n"
        "    x, w = torch.randn(2, c, 5, 5), torch.randn(4, c)\n"
        "    y = onebyone.conv1x1(x, w)\n"
        "    assert torch.allclose(y, F.conv2d(x, w.view(4, c, 1, 1)), atol=1e-5)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(first)], env=_env(fresh_cache),
                              stderr=subprocess.PIPE, text=True) for first in (3, 103)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    forwards = [k for k in _entries(fresh_cache) if k.startswith("forward|nchw|2|")]
    assert len(forwards) == 24  # every key of both writers, none lost to the other's rename


def test_a_second_process_with_a_warm_cache_does_not_time(fresh_cache):
    script = (
        "import sys, torch, onebyone, torch.nn.functional as F\n"
        "from onebyone.ops import choice\n"
        "if sys.argv[1] == 'warm':\n"
        "    def no_timing(*a, **k):\n"
        "        raise SystemExit('timed although the cache holds the key')\n"
        "    choice._time = no_timing\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(4, 40, 12, 12, requires_grad=True)\n"
        "w = torch.randn(24, 40, 1, 1, requires_grad=True)\n"
        "onebyone.conv1x1(x, w, activation='relu').sum().backward()\n"
        "print(sorted(v for v in onebyone.ops.chosen_backends().values()))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script, mode], env=_env(fresh_cache), capture_output=True,
                           text=True, timeout=300, check=False) for mode in ("cold", "warm")]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip() != "[]"


# ------------------------------------------------------------------ onebyone tune


def _tune(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onebyone", "tune", *args], env=_env(folder),
                          capture_output=True, text=True, timeout=300, check=False)


def test_tune_prints_its_table_and_a_second_run_reads_the_cache(fresh_cache):
    args = ("nin_digits", "--input", "1x8x8", "--batch", "4", "--train", "--threads", "1")
    first = _tune(fresh_cache, *args)
    assert first.returncode == 0, first.stderr
    assert "layer" in first.stdout and "runner-up" in first.stdout and "measured" in first.stdout
    entries = _entries(fresh_cache)
    assert entries and all(k.endswith("|1") for k in entries)  # the thread count asked for
    path = next((fresh_cache / "onebyone").glob("choices-*.jsonl"))
    written = path.read_bytes()
    second = _tune(fresh_cache, *args, "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    sources = {row["source"] for row in report["rows"]}
    assert "cache" in sources and "measured" not in sources
    assert path.read_bytes() == written  # nothing new to keep


def test_tune_channels_last_reports_every_layer_in_the_layout_it_ran(fresh_cache):
    """A one-channel input is NCHW and channels_last at once: the model is converted to channels_last
    as a channels_last run converts it, and each row is looked up under the layout its layer saw
    (it once read every row under the layout asked for, and printed "only candidate" for all)."""
    from onebyone.models import create_model

    report = onebyone.tune(create_model("nin_digits"), (1, 8, 8), batch=4, train=True, channels_last=True,
                           threads=1)
    assert report.rows and all(row.source == "measured" for row in report.rows), report.rows
    assert all("nchw" not in row.shape for row in report.rows)
    assert any(k.startswith("forward|channels_last|") for k in _entries(fresh_cache))


def test_tune_bad_input_gets_one_line_and_exit_2(fresh_cache):
    for args, words in ((("nin_digits", "--input", "8x8"), "CxHxW"),
                        (("no_such_model", "--input", "1x8x8"), "no_such_model"),
                        (("nin_digits", "--input", "1x8x8", "--batch", "0"), "batch")):
        done = _tune(fresh_cache, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and words in done.stderr


def test_fresh_outputs_are_charged_their_page_faults():
    from onebyone.ops import choice
    from onebyone.ops.pool import FRESH_BYTES, fault_seconds

    per_page = fault_seconds()
    assert 0 < per_page < 1e-3  # measured here: a page fault takes microseconds, not nothing
    seconds = {"torch": 1e-3, "onednn": 1e-3}
    sample = {"fraction": 0.25}
    choice._charge_faults(seconds, sample, {"onednn": FRESH_BYTES * 2, "torch": FRESH_BYTES * 2})
    pages = FRESH_BYTES * 2 // mmap.PAGESIZE
    assert seconds["onednn"] == pytest.approx(1e-3 + per_page * pages * 0.25)
    assert seconds["torch"] == seconds["onednn"] and sample["fault_seconds"]["onednn"] > 0
    # an output under the allocator's mapping threshold is recycled by malloc: no charge
    small = {"onednn": 1e-3}
    choice._charge_faults(small, {"fraction": 1.0}, {"onednn": FRESH_BYTES - 1})
    assert small == {"onednn": 1e-3}


def test_bfloat16_nchw_batches_keep_within_the_memory_budget():
    """PyTorch's batched bfloat16 product copies a 2-D weight once per image (20x the input here):
    the "torch" candidate must not allocate more than a tenth of the input beside its output."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(8, 256, 7, 7).to(torch.bfloat16)
    w = torch.randn(256, 256).to(torch.bfloat16)
    passes._forward_on("torch", x, w, None, (1, 1), 1, None, False)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        y = passes._forward_on("torch", x, w, None, (1, 1), 1, None, False)
    out_bytes = y.numel() * y.element_size()
    scratch = [e.cpu_memory_usage for e in prof.events()
               if e.cpu_memory_usage > 0 and e.cpu_memory_usage != out_bytes and e.name == "aten::empty"]
    assert max(scratch, default=0) <= 0.1 * x.numel() * x.element_size(), scratch
    torch.testing.assert_close(y.float(), torch.matmul(w.float(), x.float().view(8, 256, 49)).view_as(y),
                               atol=0.5, rtol=0.05)


_BACKWARD_MEMORY = """
import json, sys, torch
from onebyone.ops import passes
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
n, c, hw, k = json.loads(sys.argv[1])
x = torch.randn(n, c, hw, hw).contiguous(memory_format=torch.channels_last)
w = torch.randn(k, c)
g = torch.randn(n, k, hw, hw).contiguous(memory_format=torch.channels_last)
runs = {"grad_input": lambda: [passes._grad_input_on("onednn", g, x, w, (1, 1), 1, True)],
        "grad_weight": lambda: [passes._grad_weight_on("onednn", g, x, w, (1, 1), 1, True)],
        "both": lambda: list(passes._onednn_backward_both(g, x, w, (1, 1), 1))}
extra = {}
for which, run in runs.items():
    out = sum(t.numel() * t.element_size() for t in run())  # warm-up: oneDNN's lazy buffers
    least = float("inf")
    for _ in range(3):
        base = status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")
        result = run()
        least = min(least, status("VmHWM") - base - out)
        del result
    extra[which] = least
print(json.dumps(extra))
"""


@pytest.mark.skipif(not torch.backends.mkldnn.is_available() or not Path("/proc/self/clear_refs").exists(),
                    reason="needs oneDNN and Linux's resident-set counters")
def test_onednn_backward_passes_keep_their_memory_budget():
    """Where oneDNN is a backward pass's candidate for weights too large for the forward's budget
    (256x14x14->1024 at batch 32), what each pass adds beyond its result stays within a tenth of
    the upstream gradient and the input; where its copies would not (1024x7x7->1024), it is none."""
    n, c, hw, k = 32, 256, 14, 1024
    x = torch.empty(n, c, hw, hw).contiguous(memory_format=torch.channels_last)
    w = torch.empty(k, c)
    assert "onednn" not in passes.forward_candidates(x, w, (1, 1), 1, True)
    assert "onednn" in passes.grad_input_candidates(x, w, (1, 1), True)
    assert "onednn" in passes.grad_weight_candidates(x, w, (1, 1), True)
    deep = torch.empty(n, 1024, 7, 7).contiguous(memory_format=torch.channels_last)
    assert "onednn" not in passes.grad_input_candidates(deep, torch.empty(1024, 1024), (1, 1), True)
    assert not passes._onednn_backward_ok(deep, torch.empty(1024, 1024), (1, 1), True, "both")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 * 1024), MALLOC_TRIM_THRESHOLD_=str(64 * 1024),
               MALLOC_TOP_PAD_="0")  # freed blocks leave the resident set
    proc = subprocess.run([sys.executable, "-c", _BACKWARD_MEMORY, json.dumps([n, c, hw, k])], env=env,
                          capture_output=True, text=True, check=True)
    held = (n * k * hw * hw + x.numel()) * 4
    for which, extra in json.loads(proc.stdout).items():
        assert extra <= 0.1 * held, (which, extra, held)


@pytest.mark.parametrize("calls, chosen", [
    # a busy host's whole calls (the Zen 4's channels_last 256x14x14->1024 at batch 32, ms): the
    # challenger's median does not beat every call of the slice's pick, which stays
    ({"native": [26.2, 20.6, 21.3], "torch": [24.4, 19.5, 20.7]}, "native"),
    # the challenger faster on every call than the slice's pick: the whole calls overturn the slice
    ({"native": [20.0, 19.6, 20.3], "torch": [16.1, 16.4, 16.0]}, "torch"),
])
def test_a_trial_overturns_the_slices_pick_only_where_the_whole_calls_show_it(fresh_cache, calls, chosen):
    key = choice.choice_key("forward", True, (32, 256, 14, 14), 1024, (1, 1), 1, torch.float32)
    seconds = {"torch": 3.0e-3, "native": 2.5e-3}  # the slice's: native
    sample = {"images": 4, "rows": 14, "fraction": 0.125}
    choice._trials[key] = choice._OnTrial(["torch", "native"], ["native", "torch"], seconds, sample, "native")
    for i in range(3):
        for name in ("native", "torch"):
            choice._observe(key, name, calls[name][i] / 1e3)
    assert key not in choice._trials and ops.chosen_backends()[key] == chosen
    assert _entries(fresh_cache)[cache.key_text(key)]["choice"] == chosen
