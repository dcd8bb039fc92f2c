"""Small helpers the explanation's files share: numbers as a reader writes them, checks, folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _to_list(t: torch.Tensor | np.ndarray | None) -> Any:
    if t is None:
        return None
    return t.detach().cpu().tolist() if isinstance(t, torch.Tensor) else np.asarray(t).tolist()


def _max_abs(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a64 = a.detach().double().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    b64 = b.detach().double().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)))


def _num(v: float, digits: int = 4) -> str:
    """A number as a reader writes it: 1.1, not 1.1000000000000003; 2, not 2.0."""
    r = round(float(v), digits)
    if r == 0:
        r = 0.0  # no "-0"
    return np.format_float_positional(r, trim="-")


def _symbol(ca: float, cb: float) -> str:
    """ca * a + cb * b written as the seed writes it: 'a', 'b', '0', '0.5a+2b'."""
    parts = []
    for coef, name in ((ca, "a"), (cb, "b")):
        if abs(coef) < 1e-12:
            continue
        c = _num(coef, 3)
        parts.append(name if c == "1" else f"-{name}" if c == "-1" else f"{c}{name}")
    return "+".join(parts).replace("+-", "-") if parts else "0"


def _check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _prepare_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"expected a directory to write into, got the file {str(path)!r}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit} ({_count(n)} B)"
    return f"{_count(n)} B"


FLOAT32_BYTES = 4
