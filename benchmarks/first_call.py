"""What a new shape costs on its first call: with an empty cache (every pass timed), with a warm one
(a second process reading the first one's choices), with those choices pinned and no cache, and
with no choice at all ("fixed").

Each case is a fresh process that runs one forward+backward of a 1x1 layer of the shape suite
(benchmarks/conv1x1.py) several times and reports the first step's time over the median of the
later ones. The "fixed" process pays the first-call costs that have nothing to do with the choice
(thread pools, page faults, the kernels' first packing); the cold one's excess over it is what
timing the candidates costs. The cold process goes on after its timed steps until every trial on
whole calls has settled (ops/choice.py), so the warm one reads final choices, not a trial to
resume. Before the warm process the cache file gets ``--other-entries`` more entries (copies of
its own under keys no call asks for: the other layers and batch sizes a user's tuned models leave
there; 300 is the shape suite's count), so that it reads a cache of the size it would meet. The
pinned process runs the warm cache's libraries with their own first calls (MKL's buffers, a
workspace's first pages) but reads no cache: the warm process's excess over it is what reading the
cache costs.

    python benchmarks/first_call.py [--shapes GLOB ...] [--runs 5] [--layout nchw|channels_last]
        [--dtype float32|bfloat16] [--other-entries 300]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv1x1 import suite
from onebyone.ops.cache import encode_file, read_file

DEFAULT = ["seed/10x32x32*", "seed/50x600x600*", "googlenet/3a-1x1*/b1", "resnet50/layer1-reduce*/b32",
           "mobilenet/pw7*/b32"]

_CHILD = r"""
import json, statistics, sys, time
import torch, onebyone
n, c, h, w, k, s, cl, dtype, policy = json.loads(sys.argv[1])
if isinstance(policy, dict):  # the choices a warm cache holds, pinned: the same libraries, no cache
    onebyone.ops.pin_choices(policy)
else:
    onebyone.ops.set_backend(policy)
fmt = torch.channels_last if cl else torch.contiguous_format
dt = getattr(torch, dtype)
x = torch.randn(n, c, h, w).to(dt).contiguous(memory_format=fmt).requires_grad_()
wt = torch.randn(k, c, 1, 1).to(dt).requires_grad_()
steps = []
for _ in range(6):
    x.grad = wt.grad = None
    t0 = time.perf_counter()
    onebyone.conv1x1(x, wt, stride=s).sum().backward()
    steps.append(time.perf_counter() - t0)
# then on until every trial on whole calls has settled, so that the next process reads final choices
for _ in range(30):
    if not onebyone.ops.choice._trials:
        break
    onebyone.conv1x1(x, wt, stride=s).sum().backward()
print(json.dumps({"first": steps[0], "later": statistics.median(steps[1:])}))
"""


def _once(args: list, cache: str) -> float:
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True,
                         text=True, check=True, timeout=600).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["first"] - r["later"]


def _choices(cache: str) -> dict[str, str]:
    """The choices in a cache folder's file, as ``pin_choices`` takes them."""
    files = list(Path(cache, "onebyone").glob("choices-*.jsonl"))
    return {k: v["choice"] for f in files for k, v in read_file(f)[1].items()}


def _pad(cache: str, count: int) -> None:
    """Add ``count`` entries under keys no call of the benchmark asks for (batch sizes of 10**6 and
    up), each a copy of one of the file's own."""
    for f in Path(cache, "onebyone").glob("choices-*.jsonl"):
        machine, entries = read_file(f)
        own = list(entries.items())
        for i in range(count):
            key, entry = own[i % len(own)]
            fields = key.split("|")
            fields[2] = str(10**6 + i)  # the batch size
            entries["|".join(fields)] = entry
        f.write_bytes(encode_file(machine, entries))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT, metavar="GLOB")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per case; the median is kept")
    parser.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--other-entries", type=int, default=300, metavar="N",
                        help="entries of other keys added to the warm cache (default 300, the shape suite's)")
    args = parser.parse_args(argv)
    if args.other_entries < 0:
        parser.error(f"--other-entries must be >= 0, got {args.other_entries}")
    shapes = [s for s in suite() if any(fnmatch.fnmatch(s.name, p) for p in args.shapes)]
    if not shapes:
        print(f"no shape matches {args.shapes}", file=sys.stderr)
        return 2
    cl = args.layout == "channels_last"
    print(f"first forward+backward over the later ones, ms, median of {args.runs} fresh processes "
          f"({args.layout}, {args.dtype}; the warm cache with {args.other_entries} entries of other keys)")
    print("| shape | cold cache (timing) | warm cache | pinned (no cache) | warm - pinned "
          "| fixed (no choice) |")
    print("|---|---|---|---|---|---|")
    for shape in shapes:
        spec = [shape.n, shape.c, shape.h, shape.w, shape.k, shape.stride, cl, args.dtype]
        cold, warm, pinned, fixed = [], [], [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as empty:
                cold.append(_once([*spec, "auto"], cache))
                _pad(cache, args.other_entries)
                warm.append(_once([*spec, "auto"], cache))
                # the warm cache's libraries, their own first calls (MKL's, oneDNN's) included,
                # without reading a cache: what the warm process pays beyond is the cache's cost
                pinned.append(_once([*spec, _choices(cache)], empty))
                fixed.append(_once([*spec, "fixed"], empty))
        c, w, p, f = (statistics.median(v) * 1e3 for v in (cold, warm, pinned, fixed))
        print(f"| {shape.name} | {c:.1f} | {w:.2f} | {p:.2f} | {w - p:+.2f} | {f:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
