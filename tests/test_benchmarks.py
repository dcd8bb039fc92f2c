"""The benchmark scripts behind BENCHMARKS.md run, on the smallest settings, and print what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onebyone import ops

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_conv1x1_benchmark_runs_on_one_shape(tmp_path):
    out = _run("benchmarks/conv1x1.py", "--shapes", "seed/10x32x32*", "--repeats", "1",
               "--min-sample-ms", "1", "--quiet", "--out", str(tmp_path / "c"))
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["command"].startswith("python benchmarks/conv1x1.py")
    assert "seed/10x32x32->4/b1" in (tmp_path / "c.md").read_text() and "Summary" in out
    # every row says which library each pass ran on: one name forward, three fwd+bwd, or the
    # library of a training call's whole step
    names = ("torch", "torch_images", "native", "native_turned", "native_flat", "onednn", "numpy")
    for row in report["results"]:
        if row["conv1x1_on"].startswith("step on "):
            assert row["mode"] != "forward" and row["conv1x1_on"][8:] in ("aten", "thnn", "conv2d")
            continue
        ran_on = row["conv1x1_on"].replace(" (both)", "").split(" / ")
        assert len(ran_on) == (1 if row["mode"] == "forward" else 3) or row["conv1x1_on"].endswith("(both)")
        assert all(name in names for name in ran_on)
    assert "| conv1x1 on |" in (tmp_path / "c.md").read_text()


def test_first_call_compares_a_warm_cache_with_the_same_choices_pinned():
    out = _run("benchmarks/first_call.py", "--shapes", "seed/10x32x32*", "--runs", "1")
    header, _, row = (line for line in out.splitlines() if line.startswith("|"))
    assert "warm - pinned" in header and "pinned (no cache)" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "seed/10x32x32->4/b1"
    cold, warm, pinned, diff, fixed = map(float, cells[1:])
    assert diff == pytest.approx(warm - pinned, abs=0.011)
    assert min(cold, warm, pinned, fixed) > -50  # an excess over later steps, in ms


def test_op_overhead_pairs_conv1x1_with_its_kernels():
    out = _run("benchmarks/op_overhead.py", "--calls", "3", "--repeats", "3")
    lines = [line for line in out.splitlines() if "overhead" in line and ": conv1x1" in line]
    assert [line.split(":")[0] for line in lines] == ["forward (no grad)", "forward+backward"]
    for line in lines:
        assert all(f"{path} " in line for path in ("conv1x1", "kernels", "dispatcher", "F.conv2d"))
    assert "paired differences" in out and ("meets the target" in out or "MISSES the target" in out)


@pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")
def test_candidates_times_every_candidate_in_both_layouts(tmp_path):
    for layout in ("nchw", "channels_last"):
        prefix = tmp_path / layout
        out = _run("benchmarks/candidates.py", "--layout", layout, "--shapes", "seed/10x32x32*",
                   "--repeats", "1", "--min-sample-ms", "1", "--out", str(prefix))
        rows = json.loads(prefix.with_suffix(".json").read_text())
        assert [r["pass"] for r in rows] == ["forward", "grad_input", "grad_weight"]
        for r in rows:
            assert {"torch", "native"} <= set(r["ms"]) and all(v > 0 for v in r["ms"].values())
            assert r["picked"] in r["ms"] and r["fastest"] == min(r["ms"], key=r["ms"].get)
            assert 0 < r["longest_key_s"] < 1
        assert f"passes ({layout}, float32)" in out and "one key's timing: median" in out


@pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")
def test_native_details_sections_run():
    out = _run("benchmarks/native_details.py", "--section", "microtile", "threads", "--repeats", "3")
    assert out.count("GFLOP/s") == 3
    assert "on PyTorch's OpenMP workers" in out or "PyTorch has no OpenMP runtime here" in out
    assert "threads of their own: alone" in out


@pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")
def test_native_details_turned_section_times_three_ways():
    out = _run("benchmarks/native_details.py", "--section", "turned", "--repeats", "1")
    lines = [line for line in out.splitlines() if line.startswith("  ") and "->" in line]
    assert len(lines) == 25 and all("turned " in s and "NCHW kernel " in s and "MKL " in s for s in lines)
    assert sum("gathered, MKL" in s for s in lines) == 3


@pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")
def test_native_details_tiny_section_prints_its_figures():
    out = _run("benchmarks/native_details.py", "--section", "tiny", "--repeats", "1")
    lines = [line for line in out.splitlines() if line.startswith("  ") and "->" in line]
    tiny = [s for s in lines if ", batch " in s]
    assert len(tiny) == 64 and all("turned " in s and "NCHW kernel " in s and "MKL " in s for s in tiny)
    assert "NiN's 128x2x2 -> 128 at batch 64, forward (no grad): conv1x1 " in out and "F.conv2d " in out
    assert "nin_digits, one SGD step at batch 64: conv1x1 " in out and "nn.Conv2d " in out


@pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")
def test_native_details_pool_section_counts_page_faults_with_the_pool_on_and_off():
    out = _run("benchmarks/native_details.py", "--section", "pool", "--repeats", "1")
    lines = [s for s in out.splitlines() if "page faults a call" in s]
    assert len(lines) == 4 and sum("pool on" in s for s in lines) == 2
    assert sum("forward on native" in s for s in lines) == 2


@pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")
def test_native_builds_compares_a_variant_with_the_control():
    out = _run("benchmarks/native_builds.py", "-D", "GW_OUTER_BYTES=131072L", "--shapes", "seed/10x32x32*",
               "--passes", "grad_weight", "--repeats", "1", "--min-sample-ms", "1")
    assert "GW_OUTER_BYTES=131072L / control" in out and "control copy / control" in out
    assert "| seed/10x32x32->4/b1 | grad_weight |" in out
    bad = subprocess.run([sys.executable, "benchmarks/native_builds.py", "-D", "no-equals"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "expected NAME=VALUE" in bad.stderr


def _in_git_checkout() -> bool:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, check=False)
    except OSError:
        return False
    return done.returncode == 0


@pytest.mark.skipif(ops.native_isa() is None, reason="the native kernels were not built")
@pytest.mark.skipif(not _in_git_checkout(), reason="not a git checkout: no revision to build")
def test_native_builds_times_the_kernels_at_another_revision():
    out = _run("benchmarks/native_builds.py", "--against", "HEAD", "--shapes", "seed/10x32x32*",
               "--passes", "forward", "--repeats", "1", "--min-sample-ms", "1")
    assert "| HEAD / control |" in out and "| seed/10x32x32->4/b1 | forward |" in out
    bad = subprocess.run([sys.executable, "benchmarks/native_builds.py", "--against", "no-such-revision"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 1 and "no-such-revision" in bad.stderr and "Traceback" not in bad.stderr
