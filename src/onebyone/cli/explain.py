"""The ``explain`` command: the seed's examples as text, JSON, figures, a page or a local server."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import Command, UsageError, _default_sigint, _positive_int


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def _indices(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected held-out image indices such as 0,5,17, got {text!r}")
    return values


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
    net = p.add_argument_group(
        "inside a trained network", "add the section that shows the learned 1x1 layers of a network"
    )
    net.add_argument(
        "--run", metavar="DIR", help="a folder written by `onebyone train` (or `onebyone compress`)"
    )
    net.add_argument(
        "--model",
        metavar="M",
        help="a registered model, path/to/file.py:factory or package.module:factory (with --weights)",
    )
    net.add_argument("--weights", metavar="W.safetensors", help="the trained weights of --model")
    net.add_argument(
        "--data",
        metavar="D",
        help="its held-out images: digits, an IDX or CIFAR-10 folder (default: the run's own data; "
        "digits for a model of 1 x 8 x 8 images)",
    )
    net.add_argument(
        "--images",
        type=_indices,
        metavar="I,J,...",
        help="held-out images whose activations the page carries, such as 0,5,17 (default: the "
        "first held-out 2 and 3)",
    )


def _trained_section(args: argparse.Namespace) -> dict | None:
    """The trained network's view when --run or --model asks for it."""
    from pathlib import Path

    if args.run is None and args.model is None:
        for option in ("weights", "data", "images"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option} goes with --run DIR or --model M")
        return None
    if args.run is not None and args.model is not None:
        raise UsageError("--run and --model: choose one (a run's folder brings its own model and weights)")
    if args.run is not None:
        if args.weights is not None:
            raise UsageError("--weights goes with --model; a run's folder brings its own weights")
        if not Path(args.run).is_dir():
            raise UsageError(f"--run {args.run}: not a folder; expected one written by `onebyone train`")
    elif args.weights is None:
        raise UsageError(f"--model {args.model} needs --weights W.safetensors (the trained weights)")
    from ..data import load_dataset
    from ..explain import trained_view
    from ..trained import load_trained

    trained = load_trained(args.run if args.run is not None else args.model, args.weights)
    data = args.data or trained.data
    if data is None and tuple(getattr(trained.model, "default_input_size", ())) == (1, 8, 8):
        data = "digits"
    if data is None:
        raise UsageError(f"--data D: which held-out images should {trained.spec} be shown on?")
    view = trained_view(
        trained.model,
        load_dataset(data),
        images=args.images,
        name=trained.spec,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    source = [args.run] if args.run is not None else [args.model, "--weights", args.weights]
    data_arg = [] if args.data is None else ["--data", args.data]
    view["compress_command"] = shlex.join(
        ["onebyone", "compress", *source, *data_arg, "--rank", "energy:0.9", "--out", "smaller"]
    )
    return view


def _explain_run(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    from .. import explain

    if args.serve:
        _default_sigint()

    if args.port is not None and not args.serve:
        raise UsageError(f"--port {args.port} needs --serve")
    for option in ("out", "html"):
        folder = getattr(args, option)
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise UsageError(f"--{option} expects a directory, got the file {folder!r}")
    trained = _trained_section(args)
    doc = explain.examples(
        timing=not args.no_timing, repeats=args.repeats, progress=not args.quiet and sys.stderr.isatty()
    )
    if trained is not None:
        doc["trained"] = trained
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


COMMANDS: list[Command] = [
    (
        "explain",
        "the seed's examples of the 1x1 convolution, computed, drawn and interactive",
        _explain_parser,
        _explain_run,
    )
]
