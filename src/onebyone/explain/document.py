"""Every example computed and the seed's claims checked: one JSON-ready document (what ``--json`` prints)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from .. import __version__
from .claims import check_seed
from .examples import (
    advanced_view,
    depth_view,
    digit_view,
    inception_reduction,
    math_view,
    reduction_example,
)


def examples(
    *, timing: bool = True, repeats: int = 5, limits: Any = None, progress: bool = False
) -> dict[str, Any]:
    """Every example computed, the seed's claims checked: one JSON-ready document.

    Args:
        timing: time the reduction example (and read the machine's peaks for its roofline).
        repeats: timed runs per op; the median is reported.
        limits: a ``onebyone.machine.Peaks`` to use instead of the measured/cached one.
        progress: show a progress bar on stderr.
    """
    from tqdm import tqdm

    steps = ["math", "digits", "advanced", "reduction", "depth", "inception"]
    doc: dict[str, Any] = {
        "onebyone": __version__,
        "conventions": {
            "pixel": "[i, j] = row i, column j, counting from 0",
            "macs": "1 multiply-add (MAC) = 2 FLOPs; bias additions not counted",
            "bytes": "float32, 4 bytes per value",
        },
    }
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "math": math_view,
        "digits": digit_view,
        "advanced": advanced_view,
        "reduction": functools.partial(reduction_example, timing=timing, repeats=repeats, limits=limits),
        "depth": depth_view,
        "inception": inception_reduction,
    }
    for name in tqdm(steps, desc="explain", file=sys.stderr, disable=not progress, leave=False):
        doc[name] = builders[name]()
    checks = check_seed(doc)
    doc["checks"] = checks
    doc["disagreements"] = [c for c in checks if not c["agrees"]]
    return doc
