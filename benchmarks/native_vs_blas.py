"""Where onebyone's direct kernels beat PyTorch's BLAS, pass by pass, and whether "auto" picks the winner.

For every NCHW shape of benchmarks/conv1x1.py's suite (float32), times each of the three passes
(forward, grad_input, grad_weight) on the native kernels and on PyTorch's BLAS, interleaved in one
process, and prints per shape: both times, the ratio (> 1: native faster), and which one conv1x1's
"auto" rule (onebyone.ops.choice._use_native) picks. The rule's constants are set from this table.

    python benchmarks/native_vs_blas.py [--layout nchw|channels_last] [--shapes GLOB ...] [--repeats 7]
                                        [--out PREFIX]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv1x1 import Shape, suite
from onebyone import ops

PASSES = ("forward", "grad_input", "grad_weight")


def _runners(shape: Shape, cl: bool, seed: int = 0) -> dict[str, dict[str, Callable[[], object]]]:
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, generator=gen).contiguous(memory_format=fmt)
    w = torch.randn(shape.k, shape.c // shape.groups, generator=gen)
    ho, wo = shape.out_hw
    g = torch.randn(shape.n, shape.k, ho, wo, generator=gen).contiguous(memory_format=fmt)
    st, grp = (shape.stride, shape.stride), shape.groups

    def passes(name: str) -> dict[str, Callable[[], object]]:  # each pass as conv1x1 runs it there
        return {
            "forward": lambda: ops.passes._forward_on(name, x, w, None, st, grp, None, cl),
            "grad_input": lambda: ops.passes._grad_input_on(name, g, x, w, st, grp, cl),
            "grad_weight": lambda: ops.passes._grad_weight_on(name, g, x, w, st, grp, cl),
        }

    native, blas = passes("native"), passes("torch")
    names = PASSES if st == (1, 1) or cl else PASSES[:2]  # NCHW's native grad_weight: unit strides only
    return {p: {"native": native[p], "blas": blas[p]} for p in names}


def _time(fns: dict[str, Callable[[], object]], repeats: int, min_s: float) -> dict[str, float]:
    """Median over interleaved rounds of the mean time per call in a sample of >= min_s seconds."""
    loops = {}
    for name, fn in fns.items():  # warm-up, and how many calls make a sample
        fn()
        t0 = time.perf_counter()
        fn()
        loops[name] = max(1, int(min_s / max(time.perf_counter() - t0, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name in fns if r % 2 else reversed(list(fns)):
            t0 = time.perf_counter()
            for _ in range(loops[name]):
                fns[name]()
            samples[name].append((time.perf_counter() - t0) / loops[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", metavar="GLOB", help="only shapes whose name matches")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds; the median is kept")
    parser.add_argument("--min-sample-ms", type=float, default=20.0)
    parser.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw",
                        help="channels_last: auto times the candidates instead of a rule (shown as 'timed')")
    parser.add_argument("--out", metavar="PREFIX", help="write PREFIX.json and PREFIX.md")
    args = parser.parse_args(argv)
    cl = args.layout == "channels_last"
    if ops.native_isa() is None:
        print("the native kernels were not built: nothing to compare", file=sys.stderr)
        return 1
    shapes = [s for s in suite() if not args.shapes or any(fnmatch.fnmatch(s.name, p) for p in args.shapes)]
    if not shapes:
        print(f"no shape matches {args.shapes}", file=sys.stderr)
        return 2
    rows = []
    header = "| shape | pass | native ms | BLAS ms | native speed-up | auto picks | right? |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    print(f"native kernels: {ops.native_isa()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(header)
    for shape in shapes:
        # the rule only reads the shape, dtype and device: broadcast views of the right size
        probe_x = torch.zeros(1).expand(shape.n, shape.c, shape.h, shape.w)
        probe_g = torch.zeros(1).expand(shape.n, shape.k, *shape.out_hw)
        cg, kg = shape.c // shape.groups, shape.k // shape.groups
        for pass_, fns in _runners(shape, cl).items():
            t = _time(fns, args.repeats, args.min_sample_ms / 1e3)
            probe = probe_x if pass_ == "forward" else probe_g
            c, k = (cg, kg) if pass_ != "grad_input" else (kg, cg)
            speedup = t["blas"] / t["native"]
            if cl:  # auto times the candidates on first sight: nothing to check here
                auto, right = "timed", True
            else:
                picks_native = _rule(pass_, probe, c, k, shape.stride)
                auto = "native" if picks_native else "BLAS"
                right = (speedup >= 1) == picks_native or abs(speedup - 1) < 0.05
            row = {"shape": shape.name, "layout": args.layout, "pass": pass_, "native_ms": t["native"] * 1e3,
                   "blas_ms": t["blas"] * 1e3, "speedup": speedup, "auto": auto, "right": right}
            rows.append(row)
            line = (
                f"| {shape.name} | {pass_} | {t['native'] * 1e3:.3f} | {t['blas'] * 1e3:.3f} | "
                f"{speedup:.2f}x | {auto} | {'yes' if right else 'NO'} |"
            )
            print(line, flush=True)
            lines.append(line)
    wrong = [r for r in rows if not r["right"]]
    wins = sum(r["speedup"] >= 1 for r in rows)
    print(f"\nnative faster in {wins} of {len(rows)} passes ({args.layout})")
    if not cl:
        print(f"auto's rule picks the faster (within 5%) in {len(rows) - len(wrong)} of {len(rows)} passes")
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    return 0


def _rule(pass_: str, probe: torch.Tensor, c: int, k: int, stride: int) -> bool:
    """ops.choice._use_native, as conv1x1 asks it."""
    if pass_ == "grad_weight" and stride != 1:
        return False
    return ops.choice._use_native(pass_, probe, c, k, False)


if __name__ == "__main__":
    raise SystemExit(main())
