"""The commands on training runs: ``train``, ``evaluate`` and ``compare``."""

from __future__ import annotations

import argparse
import sys

from . import Command, UsageError, _default_sigint, _positive_int


def _train_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default="digits",
        help="'digits' (the embedded 8x8 digits, default) or a folder of MNIST-format IDX files "
        "(train-images-idx3-ubyte[.gz], ...) or CIFAR-10 python batches",
    )
    p.add_argument(
        "--epochs", type=_positive_int, help="passes over the training images (default: per data set)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for weights, shuffles, augmentation, dropout (default 0)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=_positive_int,
        help="CPU threads per process (default 1: faster for these small models, and safe "
        "on a busy machine; use torchrun for more cores)",
    )


def _train_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="nin_digits",
        help="a registered model (default nin_digits); see "
        "`python -c 'import onebyone; print(onebyone.list_models())'`",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the run: checkpoint, model.safetensors, config.json, metrics.json, plots",
    )
    _train_common(p)
    p.add_argument("--batch-size", type=_positive_int, help="images per step, over all processes")
    p.add_argument("--lr", type=float, help="peak learning rate of SGD (Nesterov momentum 0.9)")
    p.add_argument("--weight-decay", type=float, help="L2 penalty on weights (not on biases or norms)")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random shifts (and flips for CIFAR-10) of the training images (default: on)",
    )
    p.add_argument(
        "--subset", type=_positive_int, metavar="N", help="train on the first N training images only"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in DIR from its last checkpoint (or start it if there is none)",
    )


def _train_run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    _default_sigint()
    config = TrainConfig(
        model=args.model,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        augment=args.augment,
        seed=args.seed,
        subset=args.subset,
        device=args.device,
        threads=args.threads,
    )
    train(
        config,
        args.out,
        resume=args.resume,
        progress=not args.quiet and sys.stderr.isatty(),
        log=lambda line: print(line, flush=True),
    )
    return 0


def _evaluate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="DIR", help="a folder written by `onebyone train` or `onebyone compress`")
    p.add_argument("--data", help="score on this data's test split instead of the data it was trained on")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")


def _evaluate_run(args: argparse.Namespace) -> int:
    import json

    from ..compress import evaluate_folder, is_compressed
    from ..train import evaluate

    if is_compressed(args.run):
        result = evaluate_folder(args.run, args.data, device=args.device)
    else:
        result = evaluate(args.run, args.data, device=args.device)
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(
            f"{result['model']} on {result['dataset']}: test accuracy {100 * result['test_accuracy']:.2f}% "
            f"({result['correct']}/{result['test_images']}), loss {result['test_loss']:.4f}"
        )
    return 0


def _compare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="nin_digits", help="the model whose ablations to train (default nin_digits)"
    )
    p.add_argument(
        "--out",
        default="onebyone-compare",
        metavar="DIR",
        help="folder for the runs, compare.json and compare.png (default ./onebyone-compare)",
    )
    _train_common(p)
    p.add_argument(
        "--ablations",
        metavar="A,B",
        help="comma-separated ablation suffixes, e.g. no1x1,fc (default: all registered)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue unfinished runs in DIR, reuse finished ones"
    )


def _compare_run(args: argparse.Namespace) -> int:
    from ..train import compare

    ablations = None
    if args.ablations is not None:
        ablations = [a.strip() for a in args.ablations.split(",") if a.strip()]
        if not ablations:
            raise UsageError(f"--ablations expects suffixes such as no1x1,fc, got {args.ablations!r}")
    result = compare(
        args.model,
        args.data,
        args.out,
        ablations=ablations,
        epochs=args.epochs,
        seed=args.seed,
        threads=args.threads,
        resume=args.resume,
        progress=not args.quiet and sys.stderr.isatty(),
        log=lambda line: print(line, flush=True),
    )
    print()
    sys.stdout.write(result.table())
    print(f"wrote {result.out / 'compare.json'} and {result.out / 'compare.png'}")
    return 0


COMMANDS: list[Command] = [
    (
        "train",
        "train a registered model on the embedded digits, MNIST-format files or CIFAR-10",
        _train_parser,
        _train_run,
    ),
    ("evaluate", "score the weights of a training run on held-out images", _evaluate_parser, _evaluate_run),
    (
        "compare",
        "train a model and its ablations alike and show them side by side",
        _compare_parser,
        _compare_run,
    ),
]
