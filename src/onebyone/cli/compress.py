"""The ``compress`` command: 1x1 bottlenecks for a trained model, fine-tuned on request, saved."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import Command, UsageError, _chw, _default_sigint, _positive_int


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] such as 0.4, got {text!r}")
    return value


def _compress_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a registered model, a folder written by `onebyone "
                   "train`, path/to/file.py:factory or package.module:factory")
    p.add_argument("--weights", metavar="W.safetensors", help="the trained weights (not needed for a "
                   "training run's folder)")
    p.add_argument("--input", type=_chw, metavar="CxHxW", help="one sample's size (default: the model's own)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--macs", type=_fraction, metavar="F", help="at most this fraction of the model's "
                        "multiply-adds, ranks allocated by sensitivity")
    budget.add_argument("--params", type=_fraction, metavar="F",
                        help="at most this fraction of its parameters")
    p.add_argument("--rank", default="vbmf", help="without a budget: vbmf (vbmf:W with weakening W), "
                   "energy:0.9, a rank N or a fraction such as 0.25 (default vbmf)")
    p.add_argument("--data", help="images to calibrate on and score (digits, an IDX or CIFAR-10 folder; "
                   "default: a training run's own data)")
    p.add_argument("--finetune-epochs", type=_positive_int, metavar="N",
                   help="fine-tune for N epochs on --data")
    p.add_argument("--distill", action="store_true", help="fine-tune with distillation from the original")
    p.add_argument("--batch", type=_positive_int, default=32, help="batch of the timings (default 32)")
    p.add_argument("--layout", choices=["channels_last", "nchw"], default="channels_last",
                   help="memory format of the timings (default channels_last)")
    p.add_argument("--keep", choices=["faster", "all"], default="faster",
                   help="keep a factorized layer only where it is timed faster (default), or always")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (default: torch's)")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder for the weights, the description, "
                   "the report and its figure")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _compress_run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ..compress import compress, finetune, parse_rank, save_compressed
    from ..compress.folder import check_target

    _default_sigint()
    parse_rank(args.rank)  # bad text fails here, before any work
    out = check_target(args.out)
    if args.finetune_epochs is not None and args.data is None and not Path(args.model).is_dir():
        raise UsageError("--finetune-epochs needs --data")
    model, base, data = _compress_model(args)
    size = args.input or getattr(model, "default_input_size", None)
    if size is None:
        raise UsageError(f"{args.model} does not say its input size; give --input CxHxW")
    dataset = None
    if data is not None:
        from ..data import load_dataset

        dataset = load_dataset(data)
    print(f"compressing {args.model} ({' x '.join(map(str, size))})", flush=True)
    compressed, report = compress(
        model, tuple(size), macs=args.macs, params=args.params, rank=args.rank, keep=args.keep, data=dataset,
        batch=args.batch, channels_last=args.layout == "channels_last", threads=args.threads, name=args.model,
        log=lambda line: print(line, flush=True))
    extra = {}
    if args.finetune_epochs is not None:
        if dataset is None:
            raise UsageError("--finetune-epochs needs --data")
        out.parent.mkdir(parents=True, exist_ok=True)
        run = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.finetune."))
        try:
            finetune(compressed, dataset, epochs=args.finetune_epochs,
                     teacher=model if args.distill else None, report=report, out=run, threads=args.threads,
                     progress=not args.quiet and sys.stderr.isatty(),
                     log=lambda line: print(line, flush=True))
        except BaseException:
            import shutil

            shutil.rmtree(run, ignore_errors=True)
            raise
        extra["finetune"] = run
    classes = list(dataset.classes) if dataset is not None else None
    save_compressed(out, compressed, report, base, data=str(data) if data is not None else None,
                    classes=classes, extra=extra)
    sys.stdout.write(report.table())
    print(f"wrote {out}/ (model.safetensors, compressed.json, report.json, report.txt, report.png)")
    return 0


def _compress_model(args: argparse.Namespace) -> tuple[Any, str, str | None]:
    """The model with its weights, the spec that rebuilds it, and the data it knows of."""
    from ..compress.folder import is_compressed
    from ..trained import load_trained

    if is_compressed(args.model):
        raise UsageError(f"{args.model} is already compressed; compress the model it came from")
    if args.weights is None and not Path(args.model).is_dir():
        raise UsageError(f"compress {args.model} needs --weights W.safetensors (the trained weights)")
    trained = load_trained(args.model, args.weights)
    return trained.model, trained.spec, args.data or trained.data


COMMANDS: list[Command] = [
    (
        "compress",
        "make a trained model cheaper with 1x1 bottlenecks (Tucker-2, SVD), measured; fine-tune it",
        _compress_parser,
        _compress_run,
    )
]
