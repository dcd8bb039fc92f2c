"""The ``explain`` command: the seed's examples as text, JSON, figures, a page or a local server."""

from __future__ import annotations

import argparse
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

    from .. import explain

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


COMMANDS: list[Command] = [
    (
        "explain",
        "the seed's examples of the 1x1 convolution, computed, drawn and interactive",
        _explain_parser,
        _explain_run,
    )
]
