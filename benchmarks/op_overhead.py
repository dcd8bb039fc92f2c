"""What registering conv1x1 as a PyTorch operator costs a small layer, per call.

``onebyone.conv1x1`` checks whether it runs in plain eager mode (plain tensors, no tracer, no
dispatch or function mode, no functorch transform, no autocast) and then calls the op's kernels
itself; otherwise it goes through the dispatcher as ``torch.ops.onebyone.conv1x1``. Timed here,
interleaved (the starting path rotating each round, median of ``--repeats`` rounds, each sample
``--calls`` calls back to back):

* ``conv1x1``: the public function, check included;
* ``kernels``: the same kernels and autograd function called directly, what conv1x1 ran before it
  was registered (``onebyone.ops.operator._eager``);
* ``dispatcher``: ``torch.ops.onebyone.conv1x1``, the path compile, export, trace, autocast and
  FakeTensor take;
* ``F.conv2d``: PyTorch's own, for scale.

The overhead is the median over the rounds of conv1x1 minus kernels, the two timed next to each
other in every round (which goes first alternates): on a shared virtual machine whose speed drifts
by more than the overhead from one second to the next, a difference of two medians taken seconds
apart measured anything from -5 to +14 us. The target is at most 2 us a call.

    python benchmarks/op_overhead.py                 # the seed's 10 x 32 x 32 -> 4, batch 1
    python benchmarks/conv1x1.py --overhead          # the same
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import onebyone
from onebyone import machine
from onebyone.ops.library import conv1x1_op
from onebyone.ops.operator import _eager

TARGET_US = 2.0


def _paths(x: torch.Tensor, w: torch.Tensor, train: bool) -> dict[str, Callable[[], object]]:
    calls: dict[str, Callable[[], torch.Tensor]] = {
        "conv1x1": lambda: onebyone.conv1x1(x, w),
        "kernels": lambda: _eager(x, w, None, 1, 1, None),
        "dispatcher": lambda: conv1x1_op(x, w, None, [1, 1], 1, None),
        "F.conv2d": lambda: F.conv2d(x, w),
    }
    if not train:
        return dict(calls)
    return {name: (lambda f=f: f().sum().backward()) for name, f in calls.items()}


def time_paths(shape: tuple[int, int, int, int], k: int, train: bool, calls: int, repeats: int
               ) -> tuple[dict[str, float], float]:
    """Median microseconds a call, per path; and the median of the rounds' paired differences
    conv1x1 - kernels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen).requires_grad_(train)
    w = torch.randn(k, shape[1], 1, 1, generator=gen).requires_grad_(train)
    paths = _paths(x, w, train)
    names = list(paths)
    samples: dict[str, list[float]] = {name: [] for name in names}
    with torch.set_grad_enabled(train):
        for f in paths.values():  # warm-up: first-call timing and caches
            for _ in range(20):
                f()
        for r in range(repeats):
            pair = ["conv1x1", "kernels"] if r % 2 == 0 else ["kernels", "conv1x1"]
            others = [n for n in names if n not in pair]
            rot = r % len(others)
            for name in pair + others[rot:] + others[:rot]:
                f = paths[name]
                t0 = time.perf_counter()
                for _ in range(calls):
                    f()
                samples[name].append((time.perf_counter() - t0) / calls * 1e6)
    over = statistics.median(a - b for a, b in zip(samples["conv1x1"], samples["kernels"], strict=True))
    return {name: statistics.median(v) for name, v in samples.items()}, over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="1x10x32x32", help="N x C x H x W (default: the seed's, batch 1)")
    parser.add_argument("--filters", type=int, default=4, help="K (default 4)")
    parser.add_argument("--calls", type=int, default=500, help="calls a sample")
    parser.add_argument("--repeats", type=int, default=41, help="interleaved rounds; the median is kept")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before timing")
    args = parser.parse_args(argv)
    try:
        n, c, h, w = (int(v) for v in args.input.lower().split("x"))
    except ValueError:
        parser.error(f"--input must be N x C x H x W like 1x10x32x32, got {args.input!r}")
    if min(n, c, h, w, args.filters, args.calls, args.repeats) < 1:
        parser.error("--input, --filters, --calls and --repeats must all be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"CPU: {machine._cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{n}x{c}x{h}x{w} -> {args.filters}, median of {args.repeats} rounds of {args.calls} calls "
          "(the overhead: median of the rounds' paired differences)")
    worst = 0.0
    for train in (False, True):
        us, over = time_paths((n, c, h, w), args.filters, train, args.calls, args.repeats)
        worst = max(worst, over)
        mode = "forward+backward" if train else "forward (no grad)"
        cells = ", ".join(f"{name} {v:.2f} us" for name, v in us.items())
        print(f"{mode}: {cells}; overhead {over:+.2f} us (target <= {TARGET_US:g})")
    print(f"{'meets' if worst <= TARGET_US else 'MISSES'} the target: worst overhead {worst:+.2f} us a call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
