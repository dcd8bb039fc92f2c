"""Numbers and errors as text: decimal prefixes, seconds, shapes, an exception in one line."""

from __future__ import annotations

from collections.abc import Sequence


def _si(value: float, unit: str = "") -> str:
    """3 significant digits with a decimal prefix: 1234567 -> '1.23 M'."""
    if value == 0:
        return f"0 {unit}".rstrip()
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"


def _dims(shape: Sequence[int] | None) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
