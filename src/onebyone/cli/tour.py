"""The ``tour`` command: everything onebyone does, in one HTML report."""

from __future__ import annotations

import argparse
import sys

from . import Command, _default_sigint


def _tour_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="onebyone-tour",
        help="folder for the report (default: ./onebyone-tour; an earlier tour's folder is replaced)",
    )
    p.add_argument("--quick", action="store_true", help="shorter timings and training: about a minute")
    p.add_argument("--seed", type=int, default=0, help="random seed for the data splits and training")


def _tour_run(args: argparse.Namespace) -> int:
    from ..tour import run_tour

    _default_sigint()
    result = run_tour(args.out, quick=args.quick, seed=args.seed)
    written = sorted(str(p.relative_to(result.out)) for p in result.out.rglob("*") if p.is_file())
    if result.interrupted:
        print(f"onebyone: tour interrupted; wrote {len(written)} files in {result.out}/", file=sys.stderr)
        print(f"partial report: {result.report.resolve()}")
        return 130
    print(f"report: {result.report.resolve()}")
    return 0


COMMANDS: list[Command] = [
    (
        "tour",
        "run everything onebyone does on the embedded data and write one HTML report",
        _tour_parser,
        _tour_run,
    )
]
