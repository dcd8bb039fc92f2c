"""Train a model and its ablations with the default settings over several seeds; print a Markdown table.

Checks the targets of the networks: NiN on the embedded digits at >= 98.5% held-out accuracy
(mean of 3 seeds) in under 2 minutes each, and NiN on MNIST-format digits at >= 98.5%, with the
ablation table for both. Each run's wall time covers the whole ``onebyone.train.train`` call
(building the model, every epoch with its test scoring, writing checkpoints, weights and plots);
data loading is done once, before the clock starts.

    python benchmarks/train_nin.py --data digits --seeds 0 1 2
    python benchmarks/train_nin.py --data ../shared/data/mnist-10k --model nin_mnist --seeds 0

The machine line records the load average before and after: other jobs on the same cores make
times longer, never shorter.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from onebyone.data import load_dataset
from onebyone.models import ablations_of
from onebyone.train import TrainConfig, train


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nin_digits", help="the model; its ablations are trained too")
    parser.add_argument("--data", default="digits", help="'digits' or a folder of MNIST-format files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override the data set's default")
    parser.add_argument("--no-ablations", action="store_true", help="train the model alone")
    parser.add_argument("--target", type=float, default=0.985, help="mean accuracy to reach (default 0.985)")
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    names = [args.model] + ([] if args.no_ablations else ablations_of(args.model))
    load_before = _load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        for name in names:
            accs, secs = [], []
            for seed in args.seeds:
                t0 = time.perf_counter()
                run = train(TrainConfig(model=name, data=args.data, epochs=args.epochs, seed=seed),
                            root / f"{name}-seed{seed}", dataset=dataset)
                secs.append(time.perf_counter() - t0)
                accs.append(run.test_accuracy)
                line = f"{name} seed {seed}: {100 * run.test_accuracy:.2f}% in {secs[-1]:.1f}s"
                print(line, file=sys.stderr, flush=True)
            rows.append((name, accs, secs, run.metrics["params"], run.metrics["macs"], run.metrics["epochs"]))

    threads = run.metrics["threads"]  # what training ran with (TrainConfig.threads)
    print(f"Machine: {_cpu_name()}, {os.cpu_count()} cores, {threads} torch thread(s) per run, "
          f"torch {torch.__version__}; load average (1, 5, 15 min) {load_before} before, {_load()} after.")
    print(f"Data: {dataset!r}. Seeds: {' '.join(map(str, args.seeds))}. Defaults of onebyone.train "
          f"(epochs {rows[0][5]}).\n")
    print("| model | test accuracy, mean (min-max) | per seed | parameters | MACs / image | "
          "seconds per run, median |")
    print("|---|---|---|---|---|---|")
    for name, accs, secs, params, macs, _ in rows:
        per_seed = " ".join(f"{100 * a:.2f}" for a in accs)
        spread = f"{100 * min(accs):.2f}-{100 * max(accs):.2f}"
        print(f"| {name} | {100 * statistics.mean(accs):.2f}% ({spread}) | {per_seed} | "
              f"{params:,} | {macs / 1e6:.2f} M | {statistics.median(secs):.1f} |")
    name, accs, secs = rows[0][:3]
    ok = statistics.mean(accs) >= args.target
    print(f"\n{name}: mean {100 * statistics.mean(accs):.2f}% vs target {100 * args.target:.1f}%: "
          f"{'met' if ok else 'NOT met'}; slowest run {max(secs):.1f}s.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
