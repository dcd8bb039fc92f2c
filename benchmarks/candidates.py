"""Every candidate of every pass timed at length, against what conv1x1's 50 ms choice picked.

For each shape of benchmarks/conv1x1.py's suite (float32 or bfloat16, one layout), times each pass
(forward, grad_input, grad_weight) on every library that is correct for it (the list conv1x1
itself times), interleaved in one process and far longer than the choice may, and prints per pass:
each candidate's time, the fastest, the one conv1x1's own timing chose (from an empty cache), how
long that timing took, and whether the pick is within 5% of the fastest.

    python benchmarks/candidates.py [--layout nchw|channels_last] [--dtype float32|bfloat16]
                                    [--shapes GLOB ...] [--repeats 7] [--out PREFIX]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# conv1x1's choices start from an empty cache of their own, never the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="onebyone-candidates-")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv1x1 import Shape, suite
from onebyone import ops
from onebyone.ops import passes

PASSES = ("forward", "grad_input", "grad_weight")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _tensors(shape: Shape, cl: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, generator=gen).to(dtype).contiguous(memory_format=fmt)
    w = torch.randn(shape.k, shape.c // shape.groups, generator=gen).to(dtype)
    g = torch.randn(shape.n, shape.k, *shape.out_hw, generator=gen).to(dtype).contiguous(memory_format=fmt)
    return x, w, g


def _runners(shape: Shape, cl: bool, dtype: torch.dtype) -> dict[str, dict[str, Callable[[], object]]]:
    """Per pass, each candidate as conv1x1 runs it."""
    x, w, g = _tensors(shape, cl, dtype)
    st, grp = (shape.stride, shape.stride), shape.groups
    out: dict[str, dict[str, Callable[[], object]]] = {}
    fwd = passes.forward_candidates(x, w, st, grp, cl)
    out["forward"] = {n: (lambda n=n: passes._forward_on(n, x, w, None, st, grp, None, cl)) for n in fwd}
    gi = passes.grad_input_candidates(x, w, st, cl)
    out["grad_input"] = {n: (lambda n=n: passes._grad_input_on(n, g, x, w, st, grp, cl)) for n in gi}
    gw = passes.grad_weight_candidates(x, w, st, cl)
    out["grad_weight"] = {n: (lambda n=n: passes._grad_weight_on(n, g, x, w, st, grp, cl)) for n in gw}
    return out


_MAX_STEPS = 20


def _picked(shape: Shape, cl: bool, dtype: torch.dtype) -> tuple[dict[str, str], float, float]:
    """What conv1x1's own timing chose for each pass of one forward+backward, the seconds the
    timing added to the first step (over the last, settled one), and the longest any one key's
    timing took."""
    ops.clear_choices(disk=True)
    x, w, g = _tensors(shape, cl, dtype)
    x.requires_grad_()
    w4 = w.view(*w.shape, 1, 1).clone().requires_grad_()
    steps = []
    # the first times its candidates; keys the slice left close then take turns on whole calls
    # (choice's trials), and one more step runs once they have settled (a whole step's own choice)
    settled = 0
    while settled < 2 and len(steps) < _MAX_STEPS:
        x.grad = w4.grad = None
        t0 = time.perf_counter()
        ops.conv1x1(x, w4, stride=shape.stride, groups=shape.groups).backward(g)
        steps.append(time.perf_counter() - t0)
        settled = settled + 1 if not ops.choice._trials else 0
    if ops.choice._trials:
        keys = list(ops.choice._trials)
        raise RuntimeError(f"{shape.name}: trials unsettled after {len(steps)} steps: {keys}")
    per_key = max((s["spent"] for s in ops.choice._samples.values()), default=0.0)
    return {key[0]: name for key, name in ops.chosen_backends().items()}, steps[0] - steps[-1], per_key


def _time(fns: dict[str, Callable[[], object]], repeats: int, min_s: float) -> dict[str, float]:
    """Median over interleaved rounds of the mean time per call in a sample of >= min_s seconds."""
    loops = {}
    for name, fn in fns.items():  # warm-up, and how many calls make a sample
        fn()
        t0 = time.perf_counter()
        fn()
        loops[name] = max(1, int(min_s / max(time.perf_counter() - t0, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
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
    parser.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--out", metavar="PREFIX", help="write PREFIX.json and PREFIX.md")
    args = parser.parse_args(argv)
    cl, dtype = args.layout == "channels_last", DTYPES[args.dtype]
    shapes = [s for s in suite() if not args.shapes or any(fnmatch.fnmatch(s.name, p) for p in args.shapes)]
    if not shapes:
        print(f"no shape matches {args.shapes}", file=sys.stderr)
        return 2
    ops.set_backend("auto")
    rows = []
    header = "| shape | pass | candidates, ms | fastest | conv1x1 picked | within 5%? |"
    lines = [header, "|---|---|---|---|---|---|"]
    print(f"native kernels: {ops.native_isa()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.layout}, {args.dtype}")
    print(header)
    timing_s, key_s = [], []
    for shape in shapes:
        picked, seconds, per_key = _picked(shape, cl, dtype)
        timing_s.append(seconds)
        key_s.append(per_key)
        for pass_, fns in _runners(shape, cl, dtype).items():
            t = _time(fns, args.repeats, args.min_sample_ms / 1e3)
            best = min(t, key=t.__getitem__)
            pick = picked.get(pass_, next(iter(t)))  # a pass with one candidate is never timed
            right = t[pick] <= 1.05 * t[best]
            rows.append({"shape": shape.name, "layout": args.layout, "dtype": args.dtype, "pass": pass_,
                         "ms": {n: v * 1e3 for n, v in t.items()}, "fastest": best, "picked": pick,
                         "right": right, "pick_over_fastest": t[pick] / t[best],
                         "timing_s": seconds, "longest_key_s": per_key})
            cells = ", ".join(f"{n} {v * 1e3:.3f}" for n, v in t.items())
            line = (f"| {shape.name} | {pass_} | {cells} | {best} | {pick} ({t[pick] / t[best]:.2f}x) | "
                    f"{'yes' if right else 'NO'} |")
            print(line, flush=True)
            lines.append(line)
    right = sum(r["right"] for r in rows)
    print(f"\nconv1x1's timed pick within 5% of the fastest in {right} of {len(rows)} passes "
          f"({args.layout}, {args.dtype})")
    worst = max(rows, key=lambda r: r["pick_over_fastest"])
    print(f"worst pick: {worst['shape']} {worst['pass']} {worst['picked']} at "
          f"{worst['pick_over_fastest']:.2f}x the fastest ({worst['fastest']})")
    print(f"timing a new shape's passes (first forward+backward less a settled one): median "
          f"{statistics.median(timing_s) * 1e3:.0f} ms, max {max(timing_s) * 1e3:.0f} ms; one key's timing: "
          f"median {statistics.median(key_s) * 1e3:.0f} ms, max {max(key_s) * 1e3:.0f} ms")
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
