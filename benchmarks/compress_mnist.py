"""Train vgg_mnist on real MNIST digits, compress it with each rank choice, fine-tune, measure; print tables.

The demonstration of onebyone.compress: a network of 3 x 3 convolutions trained on mnist-10k
(8,000 train + 2,000 test 28 x 28 digits), compressed at a 40% MAC budget and by the VBMF and
energy rules, each fine-tuned for 2 epochs, and the budget's ranks given to tensorly-torch's
``FactorizedConv.from_conv`` (Tucker, factorized implementation) when it is installed
(``pip install tensorly-torch``; it is not a dependency of onebyone). Targets: MACs <= 40%,
accuracy within 0.5 points of the original, latency at batch 32 <= 0.6x and at batch 1 <= 0.8x.

Latency: each variant against the original, paired and interleaved (compress.measure), the
median of ``--runs`` measurements each the median of 7 rounds; channels_last input and weights,
eval mode, no autograd, ``--threads`` CPU threads.

    python benchmarks/compress_mnist.py --data ../shared/data/mnist-10k --out compress-mnist
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onebyone.compress import accuracy, compress, finetune
from onebyone.compress.measure import cpu_name, paired_seconds, sample
from onebyone.data import load_dataset
from onebyone.train import TrainConfig, load_run, train

VARIANTS: list[tuple[str, dict[str, Any], bool]] = [
    ("budget macs=0.4", {"macs": 0.4}, False),
    ("budget macs=0.4 + distillation", {"macs": 0.4}, True),
    ("vbmf (weakened 0.6)", {"rank": "vbmf"}, False),
    ("vbmf:1.0 (plain EVBMF)", {"rank": "vbmf:1.0"}, False),
    ("energy:0.9", {"rank": "energy:0.9"}, False),
]


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _channels_last(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _latency(original: nn.Module, other: nn.Module, batch: int, runs: int) -> tuple[float, float]:
    a, b = _channels_last(original), _channels_last(other)
    x = sample((1, 28, 28), batch, True, torch.device("cpu"), torch.float32)
    pairs = [paired_seconds(a, b, x) for _ in range(runs)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _macs(model: nn.Module) -> int:
    from onebyone.compress.core import _totals

    return _totals(model, (1, 28, 28))["macs"]


def _tensorly(original: nn.Module, factorized: list[dict[str, Any]]) -> nn.Module | None:
    """The original with each Tucker-2 layer replaced by tensorly-torch's at the same ranks."""
    try:
        import tltorch
    except ImportError:
        return None
    from onebyone.compress.core import _swap

    model = copy.deepcopy(original)
    for entry in factorized:
        if entry["method"] != "tucker2":
            continue
        conv = model.get_submodule(entry["name"])
        r1, r2 = entry["ranks"]
        kh, kw = conv.kernel_size
        layer = tltorch.FactorizedConv.from_conv(conv, rank=(r2, r1, kh, kw), factorization="tucker",
                                                 implementation="factorized", decompose_weights=True)
        _swap(model, entry["name"], layer)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/mnist-10k",
                        help="a folder of MNIST-format IDX files")
    parser.add_argument("--out", default="compress-mnist", help="folder for the training run and results")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the data set's, 12)")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="the batch of the timings (default 32)")
    parser.add_argument("--runs", type=int, default=5, help="latency measurements per variant (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    dataset = load_dataset(args.data)
    load_before = _load()
    run_dir = out / "vgg_mnist"
    t0 = time.perf_counter()
    if not (run_dir / "metrics.json").exists():
        config = TrainConfig(model="vgg_mnist", data=args.data, epochs=args.epochs, threads=args.threads)
        train(config, run_dir, resume=True, log=lambda line: print(line, flush=True), dataset=dataset)
    train_seconds = time.perf_counter() - t0
    original, _ = load_run(run_dir)
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    base_acc = accuracy(original, x_test, y_test)
    base_macs = _macs(original)
    print(f"vgg_mnist: {100 * base_acc:.2f}% on {len(y_test)} test images, {base_macs / 1e6:.2f} M MACs",
          flush=True)

    rows: list[dict[str, Any]] = []
    budget_layers: list[dict[str, Any]] | None = None
    for label, kwargs, distill in VARIANTS:
        if args.only and label not in args.only:
            continue
        print(f"--- {label}", flush=True)
        t0 = time.perf_counter()
        model, report = compress(original, (1, 28, 28), data=dataset, batch=args.batch, threads=args.threads,
                                 name="vgg_mnist", **kwargs)
        seconds = time.perf_counter() - t0
        sys.stdout.write(report.table())
        if "macs" in kwargs and budget_layers is None:
            budget_layers = report.factorized
        t0 = time.perf_counter()
        finetune(model, dataset, epochs=args.finetune_epochs, teacher=original if distill else None,
                 report=report, threads=args.threads, log=lambda line: print(line, flush=True))
        ft_seconds = time.perf_counter() - t0
        report.plot(out / f"{label.split()[0].replace(':', '_')}{'_kd' if distill else ''}.png")
        rows.append(_row(label, original, model, report.accuracy["compressed"], report.accuracy["finetuned"],
                         base_acc, base_macs, args, seconds, ft_seconds,
                         ranks={r["name"]: r["ranks"] for r in report.factorized},
                         reverted=[r.name for r in report.layers if r.status == "reverted"]))
    if budget_layers is not None:
        tl = _tensorly(original, budget_layers)
        if tl is None:
            print("tensorly-torch is not installed: no comparison with FactorizedConv", flush=True)
        else:
            print("--- tensorly-torch FactorizedConv.from_conv at the budget's ranks", flush=True)
            before_ft = accuracy(tl, x_test, y_test)
            t0 = time.perf_counter()
            finetune(tl, dataset, epochs=args.finetune_epochs, threads=args.threads,
                     log=lambda line: print(line, flush=True))
            rows.append(_row("tensorly-torch, budget's ranks", original, tl, before_ft,
                             accuracy(tl, x_test, y_test), base_acc, base_macs, args, 0.0,
                             time.perf_counter() - t0, ranks={}, reverted=[]))
    result = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
              "load_before": load_before, "load_after": _load(), "original_accuracy": base_acc,
              "original_macs": base_macs,
              "train_seconds": train_seconds, "rows": rows, "command": " ".join(sys.argv)}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(_table(result))
    return 0


def _row(label: str, original: nn.Module, model: nn.Module, compressed_acc: float | None,
         finetuned_acc: float | None, base_acc: float, base_macs: int, args: argparse.Namespace,
         seconds: float, ft_seconds: float, ranks: dict[str, Any], reverted: list[str]) -> dict[str, Any]:
    b1 = _latency(original, model, 1, args.runs)
    bn = _latency(original, model, args.batch, args.runs)
    macs = _macs(model)
    return {"variant": label, "macs_ratio": macs / base_macs, "params_ratio":
            sum(p.numel() for p in model.parameters()) / sum(p.numel() for p in original.parameters()),
            "accuracy_compressed": compressed_acc, "accuracy_finetuned": finetuned_acc,
            "accuracy_delta_points": 100 * ((finetuned_acc or 0.0) - base_acc),
            "latency_b1_ms": [1e3 * b1[0], 1e3 * b1[1]], "latency_b1_ratio": b1[1] / b1[0],
            "latency_bn_ms": [1e3 * bn[0], 1e3 * bn[1]], "latency_bn_ratio": bn[1] / bn[0],
            "compress_seconds": seconds, "finetune_seconds": ft_seconds, "ranks": ranks, "reverted": reverted}


def _table(result: dict[str, Any]) -> str:
    lines = [f"original: {100 * result['original_accuracy']:.2f}%, "
             f"{result['original_macs'] / 1e6:.2f} M MACs; "
             f"{result['cpu']}, {result['threads']} thread(s), torch {result['torch']}, load "
             f"{result['load_before']} -> {result['load_after']}", "",
             "| rank choice | MACs | params | acc. compressed | acc. fine-tuned (delta) | latency b1 (ms) | "
             "latency b32 (ms) |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        comp = f"{100 * r['accuracy_compressed']:.2f}%" if r["accuracy_compressed"] is not None else "-"
        lines.append(
            f"| {r['variant']} | {100 * r['macs_ratio']:.1f}% | {100 * r['params_ratio']:.1f}% | {comp} | "
            f"{100 * r['accuracy_finetuned']:.2f}% ({r['accuracy_delta_points']:+.2f}) | "
            f"{r['latency_b1_ms'][0]:.3f} -> {r['latency_b1_ms'][1]:.3f} ({r['latency_b1_ratio']:.2f}x) | "
            f"{r['latency_bn_ms'][0]:.3f} -> {r['latency_bn_ms'][1]:.3f} ({r['latency_bn_ratio']:.2f}x) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
