"""conv1x1 against every other way PyTorch offers to run a pointwise convolution, on real layer shapes.

Per shape and per memory layout, timed interleaved in one process (round-robin within a layout,
the starting method rotating each round, each sample after an untimed call, median of
``--repeats`` rounds after a warm-up):

* NCHW: ``onebyone.conv1x1``, ``F.conv2d`` and ``torch.matmul`` on the N x C x (H*W) view;
* channels_last: ``onebyone.conv1x1``, ``F.conv2d`` and ``F.linear`` on the N x H x W x C view;

forward (under ``torch.no_grad``) and forward+backward (gradients for x, weight and bias). Each
row gives ms, GFLOP/s, the fraction of the roofline (``onebyone.machine.peaks()``: measured GEMM
peak and memory bandwidth; in float32 the peak's products run again briefly before each shape
(``machine.probe_gemm``), and with ``--measure-peaks``, or when a layer beat the roofline, all is
measured again after the suite, the best figures kept) and conv1x1's speed-up over the best peer
in the same layout (best peer time / conv1x1 time; > 1 means conv1x1 is faster).

Peak extra memory of one forward call beyond its output is measured in a separate process: its
resident set (VmRSS) before the call against its high-water mark (VmHWM, reset through
``/proc/self/clear_refs``) after it, the least of three calls, with glibc's mmap threshold pinned
so that every large block is returned to the system on free. That sees every allocation (torch,
oneDNN, OpenBLAS, NumPy), which torch's CPU allocator statistics and tracemalloc do not (and
torch.profiler's memory events net out what an op frees before it returns, oneDNN's scratch
included). The kernel keeps these counters per CPU in batches, so a figure is good to about
+-256 KiB on 2 cores: on inputs smaller than a few MB, 10% of the input is below that resolution.
Linux only; skipped elsewhere.

Conventions: 1 MAC = 2 FLOPs; the bias add is not counted in FLOPs. Forward+backward counts three
GEMMs (output, grad_input, grad_weight: 3x the forward FLOPs); its roofline is the sum of the three
GEMMs' rooflines, each reading its operands and writing its result once. Bytes count the input
pixels the (strided) op needs, the weights, and the output.

    python benchmarks/conv1x1.py                        # the whole suite (a few minutes on 2 cores)
    python benchmarks/conv1x1.py --quick                # a small subset
    python benchmarks/conv1x1.py --overhead             # what the registered op costs a small layer
    python benchmarks/conv1x1.py --shapes 'seed/*' --repeats 9 --out results/conv1x1
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from onebyone import conv1x1, ops
from onebyone.machine import Peaks, peaks, probe_gemm, roofline_seconds

MODES = ("forward", "forward+backward")
LAYOUTS = ("nchw", "channels_last")


# ----------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """One pointwise convolution: N x C x H x W -> N x K x H' x W'."""

    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    stride: int = 1
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        return -(-self.h // self.stride), -(-self.w // self.stride)

    def macs(self) -> int:
        ho, wo = self.out_hw
        return self.n * self.k * (self.c // self.groups) * ho * wo

    def gemm_bytes(self, elt: int) -> tuple[int, int, int]:
        """Input pixels the op needs, weights, output; in bytes."""
        ho, wo = self.out_hw
        return (self.n * self.c * ho * wo * elt, self.k * (self.c // self.groups) * elt,
                self.n * self.k * ho * wo * elt)

    def roofline(self, mode: str, dtype: torch.dtype, limits: Peaks) -> float:
        """The least time at the GEMM peak of dtype and the memory bandwidth."""
        flops, elt = 2 * self.macs(), torch.empty(0, dtype=dtype).element_size()
        x, w, y = self.gemm_bytes(elt)
        full_x = self.n * self.c * self.h * self.w * elt
        fwd = roofline_seconds(flops, x + w + y, limits, dtype)
        if mode == "forward":
            return fwd
        grad_x = roofline_seconds(flops, y + w + full_x, limits, dtype)  # reads dY, W; writes dX (all of it)
        grad_w = roofline_seconds(flops, y + x + w, limits, dtype)  # reads dY, X; writes dW
        return fwd + grad_x + grad_w

    def flops(self, mode: str) -> int:
        return 2 * self.macs() * (1 if mode == "forward" else 3)


def _layers(net: str, specs: list[tuple[str, int, int, int, int]], batch: int) -> list[Shape]:
    out = []
    for label, c, hw, k, stride in specs:
        out.append(Shape(f"{net}/{label}/b{batch}", batch, c, hw, hw, k, stride))
    return out


# (label, C, H=W, K, stride): the distinct 1x1 layer shapes at 224 x 224 input, one of each kind
GOOGLENET = [
    ("conv2-reduce 64x56->64", 64, 56, 64, 1),
    ("3a-1x1 192x28->64", 192, 28, 64, 1),
    ("3a-5x5red 192x28->16", 192, 28, 16, 1),
    ("4a-1x1 480x14->192", 480, 14, 192, 1),
    ("4e-1x1 528x14->256", 528, 14, 256, 1),
    ("5b-1x1 832x7->384", 832, 7, 384, 1),
    ("5b-5x5red 832x7->48", 832, 7, 48, 1),
]
RESNET50 = [
    ("layer1-expand 64x56->256", 64, 56, 256, 1),
    ("layer1-reduce 256x56->64", 256, 56, 64, 1),
    ("layer2-downsample 256x56->512 s2", 256, 56, 512, 2),
    ("layer2-reduce 512x28->128", 512, 28, 128, 1),
    ("layer3-reduce 1024x14->256", 1024, 14, 256, 1),
    ("layer3-expand 256x14->1024", 256, 14, 1024, 1),
    ("layer4-reduce 2048x7->512", 2048, 7, 512, 1),
]
MOBILENET = [
    ("pw1 32x112->64", 32, 112, 64, 1),
    ("pw3 128x56->128", 128, 56, 128, 1),
    ("pw5 256x28->256", 256, 28, 256, 1),
    ("pw7 512x14->512", 512, 14, 512, 1),
    ("pw13 1024x7->1024", 1024, 7, 1024, 1),
]


def suite() -> list[Shape]:
    shapes = [
        Shape("seed/50x600x600->20/b1", 1, 50, 600, 600, 20),
        Shape("seed/10x32x32->4/b1", 1, 10, 32, 32, 4),
    ]
    for batch in (1, 32):
        shapes += _layers("googlenet", GOOGLENET, batch)
        shapes += _layers("resnet50", RESNET50, batch)
        shapes += _layers("mobilenet", MOBILENET, batch)
    return shapes


QUICK = [
    "seed/*",
    "googlenet/3a-1x1*/b1",
    "resnet50/layer2-downsample*/b1",
    "mobilenet/pw7*/b1",
    "resnet50/layer1-reduce*/b32",
]


# ---------------------------------------------------------------------------- methods


@dataclass
class Case:
    """The tensors of one shape in one layout."""

    shape: Shape
    x: Tensor
    w4: Tensor  # K x C/G x 1 x 1
    b: Tensor | None
    activation: str | None


def _act(y: Tensor, activation: str | None) -> Tensor:
    if activation == "relu":
        return torch.relu(y)
    if activation == "relu6":
        return F.relu6(y)
    return y


def run_conv1x1(case: Case) -> Tensor:
    s = case.shape
    return conv1x1(case.x, case.w4, case.b, stride=s.stride, groups=s.groups, activation=case.activation)


def run_conv2d(case: Case) -> Tensor:
    s = case.shape
    return _act(F.conv2d(case.x, case.w4, case.b, stride=s.stride, groups=s.groups), case.activation)


def run_matmul(case: Case) -> Tensor:
    s = case.shape
    ho, wo = s.out_hw
    x = case.x if s.stride == 1 else case.x[:, :, :: s.stride, :: s.stride]
    xm = x.reshape(s.n, s.groups, s.c // s.groups, ho * wo)  # N x G x C/G x HW (a copy if strided)
    wm = case.w4.reshape(s.groups, s.k // s.groups, s.c // s.groups)
    y = torch.matmul(wm, xm).reshape(s.n, s.k, ho, wo)
    if case.b is not None:
        y = y + case.b[:, None, None]
    return _act(y, case.activation)


def run_linear(case: Case) -> Tensor | None:
    s = case.shape
    if s.groups != 1:
        return None
    x = case.x.permute(0, 2, 3, 1)  # N x H x W x C, a view of channels_last memory
    if s.stride != 1:
        x = x[:, :: s.stride, :: s.stride]
    y = F.linear(x, case.w4.flatten(1), case.b)  # N x H' x W' x K
    return _act(y.permute(0, 3, 1, 2), case.activation)


METHODS: dict[str, list[tuple[str, Callable[[Case], Tensor | None]]]] = {
    "nchw": [("conv1x1", run_conv1x1), ("F.conv2d", run_conv2d), ("torch.matmul", run_matmul)],
    "channels_last": [("conv1x1", run_conv1x1), ("F.conv2d", run_conv2d), ("F.linear", run_linear)],
}


DTYPE = torch.float32  # what the suite runs in (--dtype)


def make_case(shape: Shape, layout: str, bias: bool, activation: str | None, seed: int = 0) -> Case:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, generator=gen).to(DTYPE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w4 = (torch.randn(shape.k, shape.c // shape.groups, 1, 1, generator=gen) / math.sqrt(shape.c)).to(DTYPE)
    b = torch.randn(shape.k, generator=gen).to(DTYPE) if bias else None
    return Case(shape, x, w4, b, activation)


# ----------------------------------------------------------------------------- timing


def _step(fn: Callable[[Case], Tensor | None], case: Case, mode: str, grads: dict[str, Tensor]) -> bool:
    """One call: forward only, or forward and backward. False if the method cannot run this shape."""
    if mode == "forward":
        with torch.no_grad():
            return fn(case) is not None
    leaves = [t for t in (case.x, case.w4, case.b) if t is not None]
    for t in leaves:
        t.grad = None
    y = fn(case)
    if y is None:
        return False
    g = grads.get("g")
    if g is None or g.shape != y.shape or g.stride() != y.stride():
        g = grads["g"] = torch.randn_like(y)  # the upstream gradient in the output's own layout
    y.backward(g)
    return True


def time_shape(shape: Shape, mode: str, repeats: int, bias: bool, activation: str | None,
               min_sample_s: float) -> dict[str, dict[str, float | None]]:
    """Median seconds per call, per layout and method, timed round-robin (one layout at a time) in
    one process."""
    entries: list[tuple[str, str, Callable[[Case], Tensor | None], Case, dict[str, Tensor]]] = []
    for layout in LAYOUTS:
        case = make_case(shape, layout, bias, activation)
        if mode != "forward":
            for t in (case.x, case.w4, case.b):
                if t is not None:
                    t.requires_grad_(True)
        for name, fn in METHODS[layout]:
            entries.append((layout, name, fn, case, {}))
    inner: dict[tuple[str, str], int] = {}
    samples: dict[tuple[str, str], list[float]] = {}
    for layout, name, fn, case, grads in entries:
        t0 = time.perf_counter()
        ok = _step(fn, case, mode, grads)  # warm-up: lazy initialisation, cached choices
        if not ok:
            continue
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        _step(fn, case, mode, grads)
        second = time.perf_counter() - t0
        # small shapes run several calls per sample so that the clock's resolution does not matter
        inner[(layout, name)] = max(1, math.ceil(min_sample_s / max(min(first, second), 1e-7)))
        samples[(layout, name)] = []
    # each layout's methods take turns on their own, on one input: the first calls after a method
    # of the other layout (another input, another output) ran slow (a bf16 channels_last oneDNN
    # convolution: 3.8, 3.6, 2.7, then 1.5 ms), and a rotation over both layouts put each method
    # after the same neighbour in every round, so that cost fell on conv1x1 every time
    for layout in LAYOUTS:
        runnable = [e for e in entries if e[0] == layout and (e[0], e[1]) in inner]
        for r in range(repeats):
            order = runnable[r % len(runnable):] + runnable[: r % len(runnable)]
            for _, name, fn, case, grads in order:
                reps = inner[(layout, name)]
                _step(fn, case, mode, grads)  # untimed: what the previous method left is not this one's
                t0 = time.perf_counter()
                for _ in range(reps):
                    _step(fn, case, mode, grads)
                samples[(layout, name)].append((time.perf_counter() - t0) / reps)
    out: dict[str, dict[str, float | None]] = {layout: {} for layout in LAYOUTS}
    for layout, name, *_ in entries:
        got = samples.get((layout, name))
        out[layout][name] = statistics.median(got) if got else None
    return out


# ----------------------------------------------------------------------------- memory


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def memory_worker(shapes: list[Shape], bias: bool, activation: str | None) -> dict[str, dict[str, float]]:
    """Extra bytes (beyond the output) one forward call adds to the peak resident set, per method."""
    result: dict[str, dict[str, float]] = {}
    for shape in shapes:
        for layout in LAYOUTS:
            case = make_case(shape, layout, bias, activation)
            for name, fn in METHODS[layout]:
                with torch.no_grad():
                    y = fn(case)  # warm-up: libraries' lazy buffers are not the op's extra memory
                    if y is None:
                        continue
                    out_bytes = y.numel() * y.element_size()
                    del y
                    extra = math.inf
                    for _ in range(3):  # the least of three: a stray page elsewhere is not the op's
                        # no freed block to reuse: the output is new memory, as on a first call
                        ops.set_output_pool(ops.set_output_pool(0))
                        base = _proc_status("VmRSS")
                        with open("/proc/self/clear_refs", "w") as f:
                            f.write("5")  # resets VmHWM to the current resident set
                        y = fn(case)
                        peak = _proc_status("VmHWM")
                        del y
                        extra = min(extra, float(max(0, peak - base - out_bytes)))
                result[f"{shape.name}|{layout}|{name}"] = {"extra_bytes": extra}
    return result


def measure_memory(shapes: list[Shape], bias: bool, activation: str | None,
                   threads: int) -> dict[str, dict[str, float]] | None:
    if not Path("/proc/self/clear_refs").exists():
        return None
    env = dict(os.environ)
    # pinned thresholds switch off glibc's adaptive mmap threshold: freed blocks leave the resident set
    env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    env["MALLOC_TRIM_THRESHOLD_"] = str(64 * 1024)
    env["MALLOC_TOP_PAD_"] = "0"  # the heap grows by what is asked for, not by 128 KiB at a time
    request = json.dumps({"shapes": [asdict(s) for s in shapes], "bias": bias, "activation": activation,
                          "threads": threads, "dtype": str(DTYPE).removeprefix("torch.")})
    proc = subprocess.run([sys.executable, __file__, "--memory-worker"], input=request, capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        print(f"memory measurement failed:\n{proc.stderr}", file=sys.stderr)
        return None
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------- reports


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for mode in MODES:
        for layout in LAYOUTS:
            sel = [r for r in rows if r["mode"] == mode and r["layout"] == layout]
            ratios = [float(r["vs_best_peer"]) for r in sel]
            roof = [float(r["roofline_fraction"]) for r in sel]
            entry = {
                "shapes": float(len(sel)),
                "geomean_vs_best_peer": geomean(ratios),
                "min_vs_best_peer": min(ratios) if ratios else float("nan"),
                "median_roofline_fraction": statistics.median(roof) if roof else float("nan"),
            }
            if layout == "nchw":
                entry["geomean_vs_conv2d_nchw"] = geomean(
                    [float(r["ms"]["F.conv2d"]) / float(r["ms"]["conv1x1"]) for r in sel]
                )
            summary[f"{mode}|{layout}"] = entry
    return summary


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def markdown(report: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = report["results"]
    memory: dict[str, dict[str, float]] | None = report.get("memory")
    lines = []
    for mode in MODES:
        for layout in LAYOUTS:
            peers = [name for name, _ in METHODS[layout] if name != "conv1x1"]
            lines += [f"#### {mode}, {layout}", ""]
            head = ["shape", "conv1x1 ms", *[f"{p} ms" for p in peers], "GFLOP/s", "% roofline",
                    "vs best peer"]
            if memory is not None and mode == "forward":
                head.append("extra mem % of input")
            if layout == "channels_last":
                head.append("conv1x1 on")
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for r in rows:
                if r["mode"] != mode or r["layout"] != layout:
                    continue
                ms: dict[str, float | None] = r["ms"]
                cells = [str(r["shape"]), _fmt_ms(ms["conv1x1"]), *[_fmt_ms(ms.get(p)) for p in peers],
                         f"{float(r['gflops']):.1f}", f"{100 * float(r['roofline_fraction']):.0f}%",
                         f"{float(r['vs_best_peer']):.2f}x"]
                if memory is not None and mode == "forward":
                    m = memory.get(f"{r['shape']}|{layout}|conv1x1")
                    share = None if m is None else m["extra_bytes"] / r["input_bytes"]
                    cells.append("-" if share is None else f"{100 * share:.1f}%")
                if layout == "channels_last":
                    cells.append(str(r.get("conv1x1_on") or "-"))
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    summary: dict[str, dict[str, float]] = report["summary"]
    lines += ["#### Summary", "",
              "| mode, layout | geomean vs best peer | worst vs best peer | geomean vs F.conv2d NCHW "
              "| median % roofline |", "|---|---|---|---|---|"]
    for key, s in summary.items():
        vs_conv = f"{s['geomean_vs_conv2d_nchw']:.2f}x" if "geomean_vs_conv2d_nchw" in s else "-"
        roof = 100 * s["median_roofline_fraction"]
        lines.append(f"| {key.replace('|', ', ')} | {s['geomean_vs_best_peer']:.2f}x | "
                     f"{s['min_vs_best_peer']:.2f}x | {vs_conv} | {roof:.0f}% |")
    if memory is not None:
        worst: dict[str, float] = {}
        sizes = {str(r["shape"]): float(r["input_bytes"]) for r in rows}
        for key, m in memory.items():
            shape, _layout, name = key.split("|")
            worst[name] = max(worst.get(name, 0.0), m["extra_bytes"] / sizes[shape])
        lines += ["", "Largest extra memory of one forward call beyond its output, as % of the input, over "
                  "all shapes and both layouts: "
                  + ", ".join(f"{k} {100 * v:.1f}%" for k, v in worst.items())]
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def select(shapes: list[Shape], patterns: list[str]) -> list[Shape]:
    return [s for s in shapes if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def _script_name() -> str:
    """This script as the reader would type it: relative to the repository, wherever it ran from."""
    here = Path(__file__).resolve()
    return here.relative_to(here.parent.parent).as_posix()


def libraries(shape: Shape, mode: str, layout: str) -> str:
    """The libraries conv1x1 chose for this shape: the forward, then grad_input / grad_weight, or
    the single oneDNN backward that computes both."""
    stride = (shape.stride, shape.stride)

    def chosen(pass_: str) -> str | None:
        key = ops.choice.choice_key(pass_, layout == "channels_last", (shape.n, shape.c, shape.h, shape.w),
                                    shape.k, stride, shape.groups, DTYPE)
        return ops.chosen_backends().get(key)

    forward = chosen("forward") or "torch"  # not timed: PyTorch's BLAS was the only candidate
    if mode == "forward":
        return forward
    both = (chosen("grad_input"), chosen("grad_weight")) == ("onednn", "onednn")
    if chosen("backward") == "onednn" or both:
        passes = f"{forward} / onednn (both)"
    else:
        passes = " / ".join([forward, chosen("grad_input") or "torch", chosen("grad_weight") or "torch"])
    whole = chosen("step")  # the whole step on PyTorch's own ops (ops/step.py)
    return passes if whole in (None, "op") else f"step on {whole}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    shapes = suite()
    patterns = list(QUICK) if args.quick else []
    if args.shapes:
        patterns += args.shapes
    if patterns:
        shapes = select(shapes, patterns)
    if not shapes:
        raise SystemExit(f"no shape matches {patterns}; the suite's names are: "
                         + ", ".join(s.name for s in suite()))
    limits = peaks(refresh=args.measure_peaks)
    rows: list[dict[str, Any]] = []
    timed_as: list[tuple[Shape, str]] = []  # each row's shape and mode
    bar = tqdm(total=len(shapes) * len(MODES), desc="conv1x1 benchmark", file=sys.stderr,
               disable=args.quiet or not sys.stderr.isatty())
    for shape in shapes:
        if DTYPE is torch.float32:  # the peak looked for between the shapes too (machine.probe_gemm)
            probe_gemm()
        for mode in MODES:
            bar.set_postfix_str(f"{shape.name} {mode}")
            timed = time_shape(shape, mode, args.repeats, args.bias, args.activation,
                               args.min_sample_ms / 1e3)
            roof = shape.roofline(mode, DTYPE, limits)
            for layout in LAYOUTS:
                ms = {k: None if v is None else v * 1e3 for k, v in timed[layout].items()}
                ours = ms["conv1x1"]
                best = min(v for k, v in ms.items() if k != "conv1x1" and v is not None)
                assert ours is not None
                rows.append({
                    "shape": shape.name, "n": shape.n, "c": shape.c, "h": shape.h, "w": shape.w, "k": shape.k,
                    "stride": shape.stride, "groups": shape.groups, "mode": mode, "layout": layout,
                    "ms": ms, "gflops": shape.flops(mode) / (ours / 1e3) / 1e9,
                    "roofline_ms": roof * 1e3, "roofline_fraction": roof / (ours / 1e3),
                    "vs_best_peer": best / ours,
                    "input_bytes": shape.n * shape.c * shape.h * shape.w * DTYPE.itemsize,
                    "conv1x1_on": libraries(shape, mode, layout),
                })
                timed_as.append((shape, mode))
            bar.update()
    bar.close()
    # measured again after the suite, the stored peak the better of the two: a peak that
    # interference lowered at the start would put layers over the roofline
    limits = peaks(refresh=args.measure_peaks or any(r["roofline_fraction"] > 1.0 for r in rows))
    for r, (shape, mode) in zip(rows, timed_as, strict=True):
        roof = shape.roofline(mode, DTYPE, limits)
        r["roofline_ms"], r["roofline_fraction"] = roof * 1e3, roof / (r["ms"]["conv1x1"] / 1e3)
    memory = None if args.no_memory else measure_memory(shapes, args.bias, args.activation,
                                                         torch.get_num_threads())
    return {
        "command": "python " + " ".join([_script_name(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"cpu": limits.name, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                    "peaks": limits.to_dict(), "load_average": os.getloadavg()},
        "statistic": f"median of {args.repeats} interleaved rounds per layout after a warm-up, "
                     f"each after an untimed call, each sample "
                     f">= {args.min_sample_ms:g} ms of back-to-back calls",
        "output_pool_bytes": ops.pool._pool.max_bytes,
        "dtype": str(DTYPE).removeprefix("torch."), "bias": args.bias,
        "over_roofline": sorted({f"{r['shape']} {r['mode']} {r['layout']}" for r in rows
                                 if r["roofline_fraction"] > 1.0}), "activation": args.activation,
        "results": rows, "summary": summarise(rows), "memory": memory,
        "memory_method": "VmHWM - VmRSS around one forward call in a subprocess, minus the output's bytes, "
        "least of 3",
    }


def _cached(pk: dict[str, Any]) -> str:
    """The fastest cache copy of the ladder, and the largest working set still at half its speed."""
    ladder = pk.get("cache_bandwidth") or []
    if not ladder:
        return "no cache bandwidth"
    best = max(gbs for _, gbs in ladder)
    reach = max(size for size, gbs in ladder if gbs >= best / 2)
    return f"caches up to {best:g} GB/s (at least half that up to {reach / 2**20:g} MiB)"


def main(argv: list[str] | None = None) -> int:
    global DTYPE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset: " + ", ".join(QUICK))
    parser.add_argument("--shapes", nargs="+", metavar="GLOB",
                        help="only shapes whose name matches one of these globs, e.g. 'seed/*' '*/b32'")
    parser.add_argument("--list", action="store_true", help="print the suite's shape names and exit")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is kept")
    parser.add_argument("--min-sample-ms", type=float, default=20.0,
                        help="repeat small calls back to back until one sample takes this long")
    parser.add_argument("--bias", action="store_true", help="every method adds a bias")
    parser.add_argument("--activation", choices=["relu", "relu6"], help="every method applies it")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before timing")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="the suite's dtype (default float32); the roofline takes that dtype's GEMM peak")
    parser.add_argument("--measure-peaks", action="store_true",
                        help="measure the GEMM peak and bandwidth again, before and after the suite "
                             "(each the best of those and the cached figures)")
    parser.add_argument("--no-memory", action="store_true", help="skip the extra-memory measurement")
    parser.add_argument("--no-pool", action="store_true",
                        help="conv1x1 without its pool of freed outputs (onebyone.ops.set_output_pool(0)): "
                             "every output in fresh memory, as the other methods get theirs")
    parser.add_argument("--out", metavar="PREFIX", help="write PREFIX.json and PREFIX.md")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--overhead", action="store_true",
                        help="only what the registered op costs a small layer a call (op_overhead.py)")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.overhead:
        from op_overhead import main as overhead
        return overhead([])  # its own rounds and calls
    if args.memory_worker:
        req = json.loads(sys.stdin.read())
        torch.set_num_threads(req["threads"])
        DTYPE = getattr(torch, req["dtype"])
        shapes = [Shape(**s) for s in req["shapes"]]
        print(json.dumps(memory_worker(shapes, req["bias"], req["activation"])))
        return 0
    if args.list:
        print("\n".join(s.name for s in suite()))
        return 0
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    DTYPE = getattr(torch, args.dtype)
    if args.no_pool:
        ops.set_output_pool(0)
    report = run(args)
    text = markdown(report)
    machine: dict[str, Any] = report["machine"]
    pk: dict[str, Any] = machine["peaks"]
    cap = report["output_pool_bytes"]
    pool = f"up to {cap / 2**20:g} MiB" if cap else "off"
    header = (f"Machine: {machine['cpu']} ({machine['cores']} cores, {machine['threads']} torch threads), "
              f"torch {machine['torch']}, NumPy {machine['numpy']}, Python {machine['python']}; "
              f"load average at the end {', '.join(f'{v:.2f}' for v in machine['load_average'])}.\n"
              f"Roofline ({report['dtype']}): {pk['gemm_gflops']} GFLOP/s float32 GEMM "
              f"({pk.get('gemm_by', 'torch.mm')}), {pk.get('gemm_gflops_bf16')} GFLOP/s bfloat16 "
              f"({pk.get('gemm_bf16_by') or '-'}), "
              f"{pk['bandwidth_gbs']} GB/s memory, {_cached(pk)} "
              f"(onebyone.machine.peaks(), measured {pk['measured_at']}).\n"
              f"conv1x1's pool of freed outputs: {pool}.\n"
              f"Command: `{report['command']}`; {report['statistic']}; {report['date']}.\n")
    print(header)
    print(text)
    if report["over_roofline"]:  # a peak that is not one
        print(f"OVER THE ROOFLINE (the measured peak is wrong): {', '.join(report['over_roofline'])}")
    if args.out:
        prefix = Path(args.out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        for suffix, content in ((".json", json.dumps(report, indent=2)), (".md", header + "\n" + text)):
            path = prefix.with_name(prefix.name + suffix)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
