"""The measurements behind docs/op.md's account of onebyone's own kernels, one section each.

    python benchmarks/native_details.py [--section NAME ...] [--repeats 21]

Sections:
  microtile   the forward kernel alone, one thread, data in cache: GFLOP/s per core
  threads     a layer run alone and right after a PyTorch op, on PyTorch's OpenMP workers and on
              threads of the kernels' own
  faults      the first-touch page faults of a fresh 28.8 MB output (the seed's), against writing
              into memory already mapped; MAP_POPULATE; transparent huge pages
  first-call  GoogLeNet-CIFAR forward+backward at batch 8: the first call of each shape (timed
              choices on channels_last) and the calls after
  backward    channels_last forward+backward of MobileNet's pw5 at batch 32: conv1x1 (oneDNN's
              one-call backward among the timed candidates) against F.conv2d's own autograd
  pool        the output pool on and off: ResNet-50's 64x56x56->256 forward at batch 32, channels_last
              (103 MB out), time and page faults a call on the native kernel (whose result the pool
              serves) and on oneDNN (which allocates its own)
  turned      single NCHW images of 7 x 7 to 28 x 28: the forward (and grad_input) turned around on the
              channels_last kernel against the NCHW kernel and MKL, each pass straight on its kernel;
              the forward of batches of 32 likewise; the stride-2 forward turned against gathered
              blocks, at batch 1 and 32
  flat        the channels_last kernel on the suite's stride-1 layers (and 1 x 1 images), forward and
              grad_input: micro-tiles that end at each row's end ("native") against every pixel of
              the batch as one row ("native_flat"), each pass straight on its kernel
  tiny        NCHW images under 7 x 7 (2 x 2 to 6 x 6) at batch 2 and 64: the forward and grad_input
              turned around against the NCHW kernel and MKL; NiN's 128x2x2->128 through conv1x1 and
              F.conv2d; a nin_digits training step with its 1x1 layers on conv1x1 and on nn.Conv2d
Timings are medians of --repeats runs after a warm-up unless a section says otherwise.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from conv1x1 import suite
from onebyone import conv1x1, models, ops
from onebyone.ops import passes

SECTIONS = ("microtile", "threads", "faults", "first-call", "backward", "pool", "turned", "flat", "tiny")


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def microtile(repeats: int) -> None:
    print("forward kernel, one thread, output preallocated, operands in L1/L2:")
    for n, c, k, p in [(1, 64, 96, 512), (1, 50, 20, 4096), (1, 256, 256, 1024)]:
        x, w, y = torch.randn(n, c, p), torch.randn(k, c), torch.empty(n, k, p)
        args = (x.data_ptr(), c * p, p, y.data_ptr(), k * p, p, w.data_ptr(), c, 1, 0, n, c, k, p, 0, 1)
        calls = max(1, int(2e7 / (2 * n * c * k * p)))

        def run(args=args, calls=calls) -> None:
            for _ in range(calls):
                ops.native._native.forward(*args)

        ms = _median_ms(run, repeats) / calls
        print(f"  {c} -> {k} over {p} pixels: {ms * 1e3:.1f} us, {2 * n * c * k * p / ms / 1e6:.0f} GFLOP/s")


def threads(repeats: int) -> None:
    x, w, a = torch.randn(64, 96, 8, 8), torch.randn(96, 96, 1, 1), torch.randn(256, 256)
    before = ops.set_backend("native")

    def after_torch_op() -> float:
        times = []
        for _ in range(repeats):
            torch.mm(a, a)  # a PyTorch op on its OpenMP workers just before
            t0 = time.perf_counter()
            conv1x1(x, w)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    runtime = ops.native._torch_openmp_runtime()
    try:
        for label, path in (("PyTorch's OpenMP workers", runtime), ("threads of their own", "")):
            if path is None:
                print(f"  {label}: PyTorch has no OpenMP runtime here")
                continue
            ops.native._native.use_openmp(path)
            alone = _median_ms(lambda: conv1x1(x, w), repeats)
            print(f"  96 -> 96 over 64 8x8 images on {label}: alone {alone:.2f} ms, "
                  f"right after a PyTorch op {after_torch_op():.2f} ms")
    finally:
        if runtime is not None:
            ops.native._native.use_openmp(runtime)
        ops.set_backend(before)


def _fresh_and_fill(nbytes: int) -> None:
    torch.empty(nbytes // 4).fill_(1.0)


def faults(repeats: int) -> None:
    nbytes = 20 * 600 * 600 * 4
    reused = torch.empty(nbytes // 4)
    print(f"writing {nbytes / 1e6:.1f} MB (the seed's output), median of {repeats}:")
    print(f"  into memory already mapped: {_median_ms(lambda: reused.fill_(1.0), repeats):.2f} ms")
    # a fresh allocation of this size: glibc maps new pages (its threshold tops out at 32 MiB) unless
    # a freed block of the size is at hand; the minimum is the case where one was
    runs = [_median_ms(lambda: _fresh_and_fill(nbytes), 1) for _ in range(repeats)]
    print(f"  into a fresh torch.empty: median {statistics.median(runs):.2f} ms, max {max(runs):.2f} ms")
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)

    def populated() -> None:
        torch.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype=torch.float32).fill_(1.0)

    print(f"  into an mmap with MAP_POPULATE: {_median_ms(populated, repeats):.2f} ms")
    code = "\n".join([
        "import statistics, time, torch",
        "times = []",
        f"for _ in range({repeats}):",
        "    t0 = time.perf_counter()",
        f"    torch.empty({nbytes // 4}).fill_(1.0)",
        "    times.append(time.perf_counter() - t0)",
        "print(f'{statistics.median(times) * 1e3:.2f}')",
    ])
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    print(f"  into a fresh torch.empty with transparent huge pages (THP_MEM_ALLOC_ENABLE=1): "
          f"{out.stdout.strip()} ms")


def first_call(repeats: int) -> None:
    for label, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        ops.set_backend("auto")  # forgets every timed choice
        torch.manual_seed(0)
        model = models.create_model("googlenet_cifar10").to(memory_format=fmt)
        x = torch.randn(8, 3, 32, 32).contiguous(memory_format=fmt)
        t0 = time.perf_counter()
        model(x).sum().backward()
        first = time.perf_counter() - t0
        later = _median_ms(lambda m=model, x=x: m(x).sum().backward(), max(3, repeats // 4)) / 1e3
        print(f"  GoogLeNet-CIFAR, batch 8, {label}: first forward+backward {first:.2f} s "
              f"({len(ops.chosen_backends())} choices timed), then {later:.2f} s")


def backward(repeats: int) -> None:
    ops.set_backend("auto")
    fmt = torch.channels_last
    x = torch.randn(32, 256, 28, 28).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(256, 256, 1, 1, requires_grad=True)
    g = torch.randn(32, 256, 28, 28).contiguous(memory_format=fmt)

    def step(op: Callable[..., torch.Tensor]) -> None:
        x.grad = w.grad = None
        op(x, w).backward(g)

    ours = _median_ms(lambda: step(conv1x1), max(3, repeats // 3))
    theirs = _median_ms(lambda: step(F.conv2d), max(3, repeats // 3))
    chosen = {key[0]: name for key, name in ops.chosen_backends().items()}
    print(f"  MobileNet pw5 (256x28x28 -> 256), batch 32, channels_last forward+backward: conv1x1 "
          f"{ours:.1f} ms (chosen: {chosen}), F.conv2d {theirs:.1f} ms")


def _faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def pool(repeats: int) -> None:
    fmt = torch.channels_last
    x = torch.randn(32, 64, 56, 56).contiguous(memory_format=fmt)
    w = torch.randn(256, 64)
    for label, size in (("on", ops.pool.default_max_bytes()), ("off", 0)):
        before_size = ops.set_output_pool(size)
        try:
            for name in ("native", "onednn"):  # oneDNN's result is its own allocation, never pooled
                ops.passes._forward_on(name, x, w, None, (1, 1), 1, None, True)
                calls = []
                for _ in range(max(5, repeats // 4)):
                    before, t0 = _faults(), time.perf_counter()
                    ops.passes._forward_on(name, x, w, None, (1, 1), 1, None, True)
                    calls.append(((time.perf_counter() - t0) * 1e3, _faults() - before))
                ms = statistics.median(c[0] for c in calls)
                faults = statistics.median(c[1] for c in calls)
                print(f"  ResNet-50 64x56x56 -> 256, batch 32 (103 MB out), forward on {name}, pool {label}: "
                      f"median {ms:.1f} ms, {faults:.0f} page faults a call")
        finally:
            ops.set_output_pool(before_size)


def turned(repeats: int) -> None:
    print("one NCHW image, float32, output preallocated; ms (turned: y^T = x^T W^T on the channels_last "
          "kernel, as conv1x1 runs single images of 7 x 7 to 27 x 27)")
    nt, share, native = torch.get_num_threads(), ops.native._NATIVE_CL_PACK_SHARE, ops.native._native
    for c, hw, k in [(2048, 7, 512), (1024, 7, 1024), (832, 7, 384), (1024, 14, 256), (512, 14, 512),
                     (480, 14, 192), (192, 28, 64), (256, 28, 256)]:
        p = hw * hw
        x, g, w = torch.randn(c, p), torch.randn(k, p), torch.randn(k, c)
        y, gx = torch.empty(k, p), torch.empty(c, p)
        xp, gp, wp, yp, gxp = (t.data_ptr() for t in (x, g, w, y, gx))
        fwd_budget, gx_budget = int(share * c * p), int(share * min(c, k) * p)
        rows = (p, 1, 1, 0, 0, p, p)  # one row of p pixels, channels p apart in x and in the result
        fwd, nchw = native.forward_cl, native.forward
        runs = {
            "forward": {  # y = W x: the column operand W^T, element (i, j) at w + i + j*c
                "turned": partial(fwd, xp, 1, yp, 1, wp, 1, c, 0, p, c, k, 0, nt, fwd_budget, *rows),
                "NCHW kernel": partial(nchw, xp, c * p, p, yp, k * p, p, wp, c, 1, 0, 1, c, k, p, 0, nt, 0),
                "MKL": partial(torch.mm, w, x, out=y),
            },
            "grad_input": {  # gx = W^T g: the column operand W, element (i, j) at w + i*c + j
                "turned": partial(fwd, gp, 1, gxp, 1, wp, c, 1, 0, p, k, c, 0, nt, gx_budget, *rows),
                "NCHW kernel": partial(nchw, gp, k * p, p, gxp, c * p, p, wp, 1, c, 0, 1, k, c, p, 0, nt, 0),
                "MKL": partial(torch.mm, w.t(), g, out=gx),
            },
        }
        for pass_, fns in runs.items():
            times = {name: min(_median_ms(fn, repeats) for _ in range(3)) for name, fn in fns.items()}
            print(f"  {c}x{hw}x{hw} -> {k} {pass_}: " + ", ".join(f"{n} {t:.3f}" for n, t in times.items()))
    print("batch 32, forward: turned (one call, image after image) against the NCHW kernel (its panels "
          "of 7 x 7 images) and MKL")
    for c, hw, k in [(1024, 7, 1024), (2048, 7, 512), (832, 7, 384), (1024, 14, 256), (512, 14, 512),
                     (256, 14, 1024)]:
        n, p = 32, hw * hw
        xb, w, yb = torch.randn(n, c, hw, hw), torch.randn(k, c), torch.empty(n, k, hw, hw)
        xp, wp, yp = xb.data_ptr(), w.data_ptr(), yb.data_ptr()
        images = (p, 1, 1, 0, c * p, p, p, k * p)  # an image a row; x's and y's images c*p and k*p apart
        fns = {
            "turned": partial(native.forward_cl, xp, 1, yp, 1, wp, 1, c, 0, n * p, c, k, 0, nt,
                              int(share * xb.numel()), *images),
            "NCHW kernel": partial(native.forward, xp, c * p, p, yp, k * p, p, wp, c, 1, 0, n, c, k, p, 0,
                                   nt),
            "MKL": partial(ops.gemm._forward_gemm, ops.gemm._mm_torch, xb, w, (1, 1), 1, False),
        }
        few = max(3, repeats // 4)
        times = {name: min(_median_ms(fn, few) for _ in range(3)) for name, fn in fns.items()}
        print(f"  {c}x{hw}x{hw} -> {k}, batch {n}: " + ", ".join(f"{m} {t:.3f}" for m, t in times.items()))
    print("stride 2, forward: turned (the kept pixels read where they lie) against gathered blocks (the "
          "NCHW path) on the NCHW kernel and on MKL; at batch 32 the turned form image by image")
    for n, c, hw, k in [(1, 256, 56, 512), (1, 512, 28, 1024), (32, 256, 56, 512)]:
        x, w = torch.randn(n, c, hw, hw), torch.randn(k, c)
        ho = hw // 2
        y = torch.empty(n, k, ho, ho)
        rows = (ho, ho, 2, 2 * hw, 0, hw * hw, ho * ho)

        def by_image(x=x, w=w, y=y, n=n, c=c, hw=hw, k=k, ho=ho, rows=rows) -> None:
            budget = int(share * x.numel())
            for i in range(n):
                xi, yi = x[i].data_ptr(), y[i].data_ptr()
                native.forward_cl(xi, 1, yi, 1, w.data_ptr(), 1, c, 0, ho * ho, c, k, 0, nt, budget, *rows)

        fns = {
            "turned": by_image,
            "gathered, NCHW kernel": partial(
                ops.gemm._forward_gemm, ops.native._mm_native, x, w, (2, 2), 1, False
            ),
            "gathered, MKL": partial(ops.gemm._forward_gemm, ops.gemm._mm_torch, x, w, (2, 2), 1, False),
        }
        times = {name: min(_median_ms(fn, repeats) for _ in range(3)) for name, fn in fns.items()}
        print(f"  {c}x{hw}x{hw} -> {k}, batch {n}: " + ", ".join(f"{m} {t:.3f}" for m, t in times.items()))


def _forward_named(x: torch.Tensor, w: torch.Tensor, cl: bool, name: str) -> torch.Tensor:
    return passes._forward_on(name, x, w, None, (1, 1), 1, None, cl)


def _grad_input_named(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, cl: bool, name: str) -> torch.Tensor:
    return passes._grad_input_on(name, g, x, w, (1, 1), 1, cl)


def flat(repeats: int) -> None:
    print("channels_last, ms a pass (best of three medians): by rows / flat, and flat's speed-up")
    shapes = [(s.name, s.n, s.c, s.h, s.k) for s in suite() if s.stride == 1 and s.groups == 1]
    shapes += [("1x1 images 512x1->1000/b64", 64, 512, 1, 1000),
               ("1x1 images 1024x1->1024/b32", 32, 1024, 1, 1024)]
    print("| layer | forward | grad_input |\n|---|---|---|")
    for name, n, c, hw, k in shapes:
        x = torch.randn(n, c, hw, hw).contiguous(memory_format=torch.channels_last)
        w = torch.randn(k, c)
        g = torch.randn(n, k, hw, hw).contiguous(memory_format=torch.channels_last)
        cl = hw > 1  # 1 x 1 images count as NCHW: their rows of channels run on the channels_last kernel
        if not cl:
            x, g = x.contiguous(), g.contiguous()
        cells = []
        passes_of = (
            (partial(_forward_named, x, w, cl), passes.forward_candidates(x, w, (1, 1), 1, cl)),
            (partial(_grad_input_named, g, x, w, cl), passes.grad_input_candidates(x, w, (1, 1), cl)),
        )
        for run, names in passes_of:
            if "native_flat" not in names:
                cells.append("-")
                continue
            t = _best_of_medians({m: partial(run, m) for m in ("native", "native_flat")}, repeats)
            cells.append(f"{t['native']:.3f} / {t['native_flat']:.3f}, {t['native'] / t['native_flat']:.2f}x")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


def _best_of_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    return {name: min(_median_ms(fn, repeats) for _ in range(3)) for name, fn in fns.items()}


def _nin_step_ms(repeats: int) -> dict[str, float]:
    """One SGD step of nin_digits at batch 64 (1 x 8 x 8), its 1x1 layers on conv1x1 and on nn.Conv2d."""
    from onebyone.layers import Conv1x1

    def as_conv2d(module: torch.nn.Module) -> torch.nn.Module:
        for name, child in module.named_children():
            if isinstance(child, Conv1x1):
                conv = torch.nn.Conv2d(child.in_channels, child.out_channels, 1, stride=child.stride,
                                       groups=child.groups, bias=child.bias is not None)
                conv.load_state_dict(child.state_dict())
                act = {"relu": torch.nn.ReLU(), "relu6": torch.nn.ReLU6()}.get(child.activation or "")
                setattr(module, name, conv if act is None else torch.nn.Sequential(conv, act))
            else:
                as_conv2d(child)
        return module

    torch.manual_seed(0)
    x, labels = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    nets = {"conv1x1": models.create_model("nin_digits")}
    nets["nn.Conv2d"] = as_conv2d(models.create_model("nin_digits"))
    steps = {}
    for name, net in nets.items():
        opt = torch.optim.SGD(net.parameters(), lr=0.01)

        def step(net: torch.nn.Module = net, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad()
            F.cross_entropy(net(x), labels).backward()
            opt.step()

        steps[name] = step
    return _best_of_medians(steps, repeats)


def tiny(repeats: int) -> None:
    print("NCHW images under 7 x 7, float32, output preallocated; ms (turned: image after image on the "
          "channels_last kernel, as conv1x1 runs them; NCHW kernel: image by image through its buffer, or "
          "panels where they fit; MKL: one product per image)")
    nt, share, native = torch.get_num_threads(), ops.native._NATIVE_CL_PACK_SHARE, ops.native._native
    for hw in (2, 3, 4, 6):
        for n in (2, 64):
            for c, k in ((64, 64), (256, 256), (1024, 256), (256, 1024)):
                p = hw * hw
                x, g, w = torch.randn(n, c, hw, hw), torch.randn(n, k, hw, hw), torch.randn(k, c)
                y, gx = torch.empty(n, k, hw, hw), torch.empty(n, c, hw, hw)
                xp, gp, wp, yp, gxp = (t.data_ptr() for t in (x, g, w, y, gx))
                runs = {
                    "forward": {
                        "turned": partial(native.forward_cl, xp, 1, yp, 1, wp, 1, c, 0, n * p, c, k, 0, nt,
                                          int(share * x.numel()), p, 1, 1, 0, c * p, p, p, k * p),
                        "NCHW kernel": partial(native.forward, xp, c * p, p, yp, k * p, p, wp, c, 1, 0, n, c,
                                               k, p, 0, nt),
                        "MKL": partial(ops.gemm._forward_gemm, ops.gemm._mm_torch, x, w, (1, 1), 1, False),
                    },
                    "grad_input": {
                        "turned": partial(native.forward_cl, gp, 1, gxp, 1, wp, c, 1, 0, n * p, k, c, 0, nt,
                                          int(share * n * p * min(k, c)), p, 1, 1, 0, k * p, p, p, c * p),
                        "NCHW kernel": partial(native.forward, gp, k * p, p, gxp, c * p, p, wp, 1, c, 0, n, k,
                                               c, p, 0, nt, n * c * p),
                        "MKL": partial(ops.passes._grad_input_on, "torch", g, x, w, (1, 1), 1, False),
                    },
                }
                for pass_, fns in runs.items():
                    times = _best_of_medians(fns, max(3, repeats // 4))
                    print(f"  {c}x{hw}x{hw} -> {k}, batch {n}, {pass_}: "
                          + ", ".join(f"{m} {t:.3f}" for m, t in times.items()))
    x, w = torch.randn(64, 128, 2, 2), torch.randn(128, 128, 1, 1)
    with torch.no_grad():
        times = _best_of_medians({"conv1x1": partial(conv1x1, x, w), "F.conv2d": partial(F.conv2d, x, w)},
                                 repeats)
    print("NiN's 128x2x2 -> 128 at batch 64, forward (no grad): "
          + ", ".join(f"{m} {t * 1e3:.1f} us" for m, t in times.items()))
    print("nin_digits, one SGD step at batch 64: "
          + ", ".join(f"{m} {t:.2f} ms" for m, t in _nin_step_ms(max(3, repeats // 4)).items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    if ops.native_isa() is None:
        print("the native kernels were not built: nothing to measure", file=sys.stderr)
        return 1
    threading = ops.native._native.threading()
    print(f"native kernels: {ops.native_isa()} on {threading}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for name in args.section:
        print(f"\n== {name}")
        globals()[name.replace("-", "_")](args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
