"""How far each kind of layer runs from its roofline estimate, and what the analysis itself costs.

For each model: ``onebyone.cost(..., measure=True)`` gives, per layer, the roofline estimate and
the median measured time; summed by kind, the ratio measured / estimated says which kinds of layer
run near the machine's limits and which (small 1x1s, depthwise, pools) do not. The time of one
``cost()`` trace (no measuring) is set against one plain forward pass to show the hooks' overhead.

    python benchmarks/cost_roofline.py                    # googlenet 3x224x224 and nin_cifar10 3x32x32
    python benchmarks/cost_roofline.py --model googlenet --input 3x224x224 --repeats 9
    python benchmarks/cost_roofline.py --threads 1     # on a shared machine: see below

On a machine whose cores other jobs are using, PyTorch's worker threads wait on each other and a
forward pass can run tens of times slower with 2 threads than with 1; ``--threads`` sets
``torch.set_num_threads`` (the roofline peaks are cached per thread count, so they follow). The
load average at the start and the end is printed with the results.

Prints a Markdown section for BENCHMARKS.md: the machine, the command, the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

import onebyone
from onebyone.cost import load_model
from onebyone.machine import peaks

DEFAULT = [("googlenet", (3, 224, 224)), ("nin_cifar10", (3, 32, 32))]


def _size(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("x"))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def bench(name: str, size: tuple[int, ...], batch: int, repeats: int) -> list[str]:
    model = load_model(name).eval()
    x = torch.randn(batch, *size)
    with torch.no_grad():
        model(x)
        plain = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            plain.append(time.perf_counter() - t0)
    traced = []
    for _ in range(3):
        t0 = time.perf_counter()
        onebyone.cost(model, size, batch_size=batch)
        traced.append(time.perf_counter() - t0)
    rep = onebyone.cost(model, size, batch_size=batch, measure=True, repeats=repeats, name=name)
    lines = [
        f"### {name}, input {batch}x{'x'.join(map(str, size))}",
        "",
        f"{rep.macs:,} MACs ({rep.macs / 1e9:.3f} G; 1 MAC = 2 FLOPs, bias adds not in MACs), "
        f"{rep.params:,} params (bias counted), {len(rep.layers)} layer calls.",
        "",
        f"- plain forward pass (median of {repeats}): {_ms(statistics.median(plain))}; "
        f"one `cost()` trace, no measuring (median of 3): {_ms(statistics.median(traced))}",
        f"- roofline estimate, sum over layers: {_ms(rep.est_seconds)}; measured, sum of per-layer medians: "
        f"{_ms(rep.measured_seconds)}; whole pass measured by `cost`: {_ms(rep.forward_seconds)}",
        "",
        "| kind | calls | share of MACs | estimated | measured | measured / estimated |",
        "|---|---|---|---|---|---|",
    ]
    for kind, k in rep.by_kind().items():
        est, meas = k["est_seconds"], k["measured_seconds"]
        ratio = f"{meas / est:.1f}x" if est and meas else "-"
        share = f"{k['macs_share']:.1%}"
        lines.append(f"| {kind} | {k['layers']} | {share} | {_ms(est)} | {_ms(meas)} | {ratio} |")
    lines.append("")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="one model (registered name or file.py:factory); default: "
                        + ", ".join(n for n, _ in DEFAULT))
    parser.add_argument("--input", type=_size, help="CxHxW for --model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per layer (median)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--refresh-peaks", action="store_true",
                        help="measure the roofline peaks again first (and update the cache)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    runs = [(args.model, args.input)] if args.model else DEFAULT
    lim = peaks(refresh=args.refresh_peaks)
    print(f"Machine: {lim.name} ({torch.get_num_threads()} torch threads), torch {torch.__version__}, "
          f"Python {platform.python_version()}; roofline {lim.gemm_gflops:g} GFLOP/s GEMM ({lim.gemm_by}), "
          f"{lim.bandwidth_gbs:g} GB/s memory (onebyone.machine.peaks, cached {lim.measured_at}).")
    print(f"Command: python {' '.join(sys.argv)}")
    print()
    for name, size in runs:
        print("\n".join(bench(name, size, args.batch, args.repeats)))
    print(f"Load average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"on {os.cpu_count()} logical CPUs.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
