"""The ``onebyone`` command: argument parsing and printing only; the library does the work.

Every subcommand is a pair of functions in its own section below: ``_<name>_parser``
adds its arguments, ``_<name>_run`` calls the library and prints. A usage error or bad
input exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__

__all__ = ["UsageError", "main"]


class UsageError(Exception):
    """Bad arguments or bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# Each entry: (name, one-line help, add-arguments, run). Sections below append to it.
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = []


# ------------------------------------------------------------------------ explain


# -------------------------------------------------------------------------- train


# --------------------------------------------------------------------------- cost


# --------------------------------------------------------------------------- tour


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
