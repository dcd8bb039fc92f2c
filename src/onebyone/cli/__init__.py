"""The ``onebyone`` command: argument parsing and printing only; the library does the work.

The package, file by file: this file holds :func:`main`, the parser assembly and what every
subcommand shares (:class:`UsageError`, the argument types, the Ctrl-C handler); explain.py the
``explain`` command; train.py ``train``, ``evaluate`` and ``compare``, the commands on training
runs; cost.py ``cost``; compress.py ``compress``; tune.py ``tune``; tour.py ``tour``. Each of them
lists its commands in ``COMMANDS``: for every one, ``_<name>_parser`` adds its arguments and
``_<name>_run`` calls the library and prints. A usage error or bad input exits with code 2 and
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from .. import __version__

__all__ = ["UsageError", "main"]

# A subcommand: (name, one-line help, add-arguments, run).
Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

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

# The command modules import the shared pieces above from this package, so they come after them.
from . import compress, cost, explain, tour, train, tune  # noqa: E402

# In the order of the help text.
_COMMANDS: list[Command] = [
    *explain.COMMANDS,
    *train.COMMANDS,
    *cost.COMMANDS,
    *compress.COMMANDS,
    *tune.COMMANDS,
    *tour.COMMANDS,
]

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
