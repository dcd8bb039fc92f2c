"""The ``onebyone`` command: argument parsing and printing only; the library does the work.

Every subcommand is a pair of functions in its own section below: ``_<name>_parser``
adds its arguments, ``_<name>_run`` calls the library and prints. A usage error or bad
input exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__

__all__ = ["UsageError", "main"]


class UsageError(Exception):
    """Bad arguments or bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")



def _default_sigint() -> None:
    """Ctrl-C stops a long command even when it was started with SIGINT ignored, as shells start
    background jobs (Python then leaves it ignored): the default handler, KeyboardInterrupt, back."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# Each entry: (name, one-line help, add-arguments, run). Sections below append to it.
_COMMANDS: list[
    tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = []


# ------------------------------------------------------------------------ explain


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def _explain_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print every example, its inputs and outputs, and the "
        "disagreements with the seed as one JSON document",
    )
    p.add_argument("--out", metavar="DIR", help="write PNG figures of the examples to DIR")
    p.add_argument(
        "--html", metavar="DIR", help="write the interactive page (index.html and its files) to DIR"
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="serve the page on 127.0.0.1 (from --html DIR, or a temporary folder) until Ctrl-C",
    )
    p.add_argument(
        "--port", type=_port, default=None, help="port for --serve, 0 for any free port (default 8000)"
    )
    p.add_argument(
        "--repeats",
        type=_positive_int,
        default=5,
        help="timed runs of the reduction example; the median is shown (default 5)",
    )
    p.add_argument("--no-timing", action="store_true", help="skip timing the reduction example")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _explain_run(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    from . import explain

    if args.serve:
        _default_sigint()

    if args.port is not None and not args.serve:
        raise UsageError(f"--port {args.port} needs --serve")
    for option in ("out", "html"):
        folder = getattr(args, option)
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise UsageError(f"--{option} expects a directory, got the file {folder!r}")
    doc = explain.examples(
        timing=not args.no_timing, repeats=args.repeats, progress=not args.quiet and sys.stderr.isatty()
    )
    if args.json:
        print(json.dumps(doc, allow_nan=False))
    else:
        sys.stdout.write(explain.render_text(doc))
    info = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the document alone
    if args.out is not None:
        for path in explain.write_figures(doc, args.out):
            print(f"wrote {path}", file=info)
    if args.html is not None:
        print(
            f"wrote {explain.write_page(doc, args.html)} (open it in a browser; it needs no network)",
            file=info,
        )
    if args.serve:
        with tempfile.TemporaryDirectory(prefix="onebyone-page-") as tmp:
            folder = args.html if args.html is not None else tmp
            if args.html is None:
                explain.write_page(doc, folder)
            server = explain.page_server(folder, 8000 if args.port is None else args.port)
            print(
                f"serving the page at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)",
                file=info,
                flush=True,
            )
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()
            print("stopped", file=info)
    return 0


_COMMANDS.append(
    (
        "explain",
        "the seed's examples of the 1x1 convolution, computed, drawn and interactive",
        _explain_parser,
        _explain_run,
    )
)


# -------------------------------------------------------------------------- train


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
    from .train import TrainConfig, train

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

    from .compress import evaluate_folder, is_compressed
    from .train import evaluate

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
    from .train import compare

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


_COMMANDS.append(
    (
        "train",
        "train a registered model on the embedded digits, MNIST-format files or CIFAR-10",
        _train_parser,
        _train_run,
    )
)
_COMMANDS.append(
    ("evaluate", "score the weights of a training run on held-out images", _evaluate_parser, _evaluate_run)
)
_COMMANDS.append(
    (
        "compare",
        "train a model and its ablations alike and show them side by side",
        _compare_parser,
        _compare_run,
    )
)


# --------------------------------------------------------------------------- cost


def _dims_arg(text: str, n: int, what: str) -> tuple[int, ...]:
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != n or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected {what} (positive integers), got {text!r}")
    return values


def _chw(text: str) -> tuple[int, ...]:
    return _dims_arg(text, 3, "CxHxW such as 3x224x224")


def _hw(text: str) -> tuple[int, ...]:
    if text.isdigit():
        text = f"{text}x{text}"
    return _dims_arg(text, 2, "HxW such as 28x28, or one number for a square")


def _cost_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a registered model name, path/to/file.py:factory or package.module:factory "
        "(the factory is called with no arguments and returns an nn.Module), or a folder written by "
        "`onebyone compress`",
    )
    p.add_argument("--input", type=_chw, metavar="CxHxW",
                   help="one sample's size, e.g. 3x224x224 (required but for a compressed folder)")
    p.add_argument("--batch", type=_positive_int, default=1, help="samples per forward pass (default 1)")
    p.add_argument(
        "--bias",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count the bias of convolutions and linear layers: its parameters, and 1 FLOP per "
        "output element for its adds (default: counted)",
    )
    p.add_argument("--measure", action="store_true", help="also time every layer (median of --repeats runs)")
    p.add_argument(
        "--repeats", type=_positive_int, default=5, help="timed runs per layer with --measure (default 5)"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where to run the model: cpu (default), cuda, cuda:1, or "
        "meta (counted from shapes alone, instantly; no --measure)",
    )
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON document")
    p.add_argument("--csv", metavar="FILE", help="write one row per layer call to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG chart of where the multiply-adds go")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "the Inception question",
        "--bottleneck compares a kxk convolution C -> K with a 1x1 reduction C -> R followed by the kxk "
        "R -> K, in parameters and multiply-adds. Defaults: the Inception example, 28x28x192 -> 32 maps "
        "with 5x5 kernels, reduced to 16.",
    )
    g.add_argument("--bottleneck", action="store_true", help="answer the Inception question instead of MODEL")
    g.add_argument("--channels", type=_positive_int, metavar="C", help="input maps (default 192)")
    g.add_argument("--out-channels", type=_positive_int, metavar="K", help="output maps (default 32)")
    g.add_argument(
        "--reduce", type=_positive_int, metavar="R", help="maps after the 1x1 reduction (default 16)"
    )
    g.add_argument("--kernel", type=_positive_int, metavar="k", help="kernel side (default 5)")
    g.add_argument("--size", type=_hw, metavar="HxW", help="map size (default 28x28)")


def _cost_run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .cost import bottleneck_cost, cost, load_model

    info = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the document alone
    shape_options = ("channels", "out_channels", "reduce", "kernel", "size")
    bottleneck_flags = [f"--{n.replace('_', '-')}" for n in shape_options if getattr(args, n) is not None]
    if args.bottleneck:
        model_flags = [
            flag
            for flag, given in (
                ("MODEL", args.model is not None),
                ("--input", args.input is not None),
                ("--batch", args.batch != 1),
                ("--measure", args.measure),
                ("--csv", args.csv is not None),
                ("--plot", args.plot is not None),
            )
            if given
        ]
        if model_flags:
            raise UsageError(f"--bottleneck takes no {', '.join(model_flags)}")
        result = bottleneck_cost(
            args.channels or 192,
            args.out_channels or 32,
            args.reduce or 16,
            args.kernel or 5,
            tuple(args.size or (28, 28)),
        )
        if args.json:
            print(json.dumps(result.to_dict(), allow_nan=False))
        else:
            sys.stdout.write(str(result))
        return 0
    if bottleneck_flags:
        raise UsageError(f"{', '.join(bottleneck_flags)} only go with --bottleneck")
    from .compress import is_compressed, load_compressed

    compressed = args.model is not None and is_compressed(args.model)
    if compressed:
        loaded, description = load_compressed(args.model)
        args.input = args.input or tuple(description["input_size"])
    if args.model is None:
        raise UsageError(
            "cost needs MODEL (a registered name, path/to/file.py:factory or "
            "package.module:factory) or --bottleneck"
        )
    if args.input is None:
        raise UsageError("cost needs --input CxHxW, e.g. --input 3x224x224")
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot expects a file name ending in .png, got {args.plot!r}")
    for option in ("csv", "plot"):
        target = getattr(args, option)
        if target is not None and Path(target).is_dir():
            raise UsageError(f"--{option} expects a file, got the directory {target!r}")
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device expects cpu, cuda or cuda:N, got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available here")
    model = (loaded if compressed else load_model(args.model)).to(device)
    report = cost(
        model,
        args.input,
        batch_size=args.batch,
        count_bias=args.bias,
        measure=args.measure,
        repeats=args.repeats,
        device=device,
        name=args.model,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    if args.json:
        print(report.to_json())
    else:
        sys.stdout.write(report.table())
    if args.csv is not None:
        print(f"wrote {report.to_csv(args.csv)}", file=info)
    if args.plot is not None:
        print(f"wrote {report.plot(args.plot)}", file=info)
    return 0


_COMMANDS.append(
    (
        "cost",
        "parameters, multiply-adds, memory and time per layer, for any model; the Inception question",
        _cost_parser,
        _cost_run,
    )
)


# ----------------------------------------------------------------------- compress


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

    from .compress import compress, finetune, parse_rank, save_compressed
    from .compress.folder import check_target

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
        from .data import load_dataset

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
    from pathlib import Path

    from .cost import load_model

    if Path(args.model).is_dir():
        from .train import load_run

        if args.weights is not None:
            raise UsageError("a training run's folder brings its own weights; --weights goes with a model "
                             "name")
        model, run_config = load_run(args.model)
        return model, run_config["model"], args.data or run_config.get("data")
    if args.weights is None:
        raise UsageError(f"compress {args.model} needs --weights W.safetensors (the trained weights)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = load_model(args.model)
    try:
        state = load_file(args.weights)
    except (SafetensorError, FileNotFoundError, OSError) as exc:
        raise UsageError(f"--weights {args.weights}: not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UsageError(f"--weights {args.weights} do not fit {args.model} ({first})") from None
    return model.eval(), args.model, args.data


_COMMANDS.append(
    (
        "compress",
        "make a trained model cheaper with 1x1 bottlenecks (Tucker-2, SVD), measured; fine-tune it",
        _compress_parser,
        _compress_run,
    )
)


# --------------------------------------------------------------------------- tune


def _tune_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a registered model name, path/to/file.py:factory or package.module:factory")
    p.add_argument("--input", type=_chw, required=True, metavar="CxHxW",
                   help="one sample's size, e.g. 3x224x224")
    p.add_argument("--batch", type=_positive_int, default=1, help="samples per pass (default 1)")
    p.add_argument("--train", action="store_true", help="also the backward passes of a training step")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="the model's dtype (default float32)")
    p.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw",
                   help="the input's memory format (default nchw)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads, part of every choice's key: the count the real run will use "
                        "(onebyone train uses 1 unless told otherwise; default: PyTorch's)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")


def _tune_run(args: argparse.Namespace) -> int:
    from .cost import load_model
    from .tune import tune

    model = load_model(args.model)
    report = tune(model, args.input, batch=args.batch, train=args.train, dtype=args.dtype,
                  channels_last=args.layout == "channels_last", threads=args.threads, name=args.model)
    print(report.to_json() if args.json else str(report), end="\n" if args.json else "")
    return 0


_COMMANDS.append(
    (
        "tune",
        "measure conv1x1's fastest library for every 1x1 layer of a model, once for this machine",
        _tune_parser,
        _tune_run,
    )
)


# --------------------------------------------------------------------------- tour


def _tour_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="onebyone-tour",
        help="folder for the report (default: ./onebyone-tour; an earlier tour's folder is replaced)",
    )
    p.add_argument("--quick", action="store_true", help="shorter timings and training: about a minute")
    p.add_argument("--seed", type=int, default=0, help="random seed for the data splits and training")


def _tour_run(args: argparse.Namespace) -> int:
    from .tour import run_tour

    _default_sigint()
    result = run_tour(args.out, quick=args.quick, seed=args.seed)
    written = sorted(str(p.relative_to(result.out)) for p in result.out.rglob("*") if p.is_file())
    if result.interrupted:
        print(f"onebyone: tour interrupted; wrote {len(written)} files in {result.out}/", file=sys.stderr)
        print(f"partial report: {result.report.resolve()}")
        return 130
    print(f"report: {result.report.resolve()}")
    return 0


_COMMANDS.append(
    (
        "tour",
        "run everything onebyone does on the embedded data and write one HTML report",
        _tour_parser,
        _tour_run,
    )
)


# ------------------------------------------------------------------------- driver


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="onebyone",
        description="The 1x1 (pointwise) convolution: explained, fast, and put to work.",
    )
    parser.add_argument("--version", action="version", version=f"onebyone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text, add_arguments, run in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"onebyone: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        # bad input reaches the library as one of these; say it in one line
        print(f"onebyone: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onebyone: interrupted", file=sys.stderr)
        return 130
