"""The definition of the 1x1 convolution, written literally in NumPy float64.

This is the seed's "math view": a C x H x W stack of feature maps becomes K x H x W
by a weighted sum across channels at every pixel,

    output[k, i, j] = sum over c of  w[k, c] * x[c, i, j]  +  b[k]

Nothing here is fast and nothing here is clever: every loop is spelled out so that a
reader can check it against the formula, and the tests use it as the oracle that
:func:`onebyone.conv1x1` must agree with. Grouped and strided variants follow the
same formula, restricted to a group's channels and to every ``stride``-th pixel.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["conv1x1_reference", "pixel_sum"]


def pixel_sum(x: ArrayLike, w: ArrayLike, i: int, j: int, k: int = 0) -> list[tuple[float, float]]:
    """The terms ``(w[k, c], x[c, i, j])`` whose products add up to output pixel ``[k, i, j]``.

    ``x`` is C x H x W and ``w`` is K x C (or C for a single filter). Used to print the
    arithmetic of one output cell, as the seed does for T[0, 0].
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if x.ndim != 3 or w.ndim != 2 or w.shape[1] != x.shape[0]:
        raise ValueError(f"expected x of shape C x H x W and w of shape K x C, got {x.shape} and {w.shape}")
    return [(float(w[k, c]), float(x[c, i, j])) for c in range(x.shape[0])]


def conv1x1_reference(
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
) -> np.ndarray:
    """The 1x1 convolution by its definition, in float64.

    Args:
        x: input maps, C x H x W or N x C x H x W.
        w: the filters, K x (C / groups) (a trailing 1 x 1 is accepted), or a single
           filter of C weights.
        b: optional bias, K values.
        stride: keep every ``stride``-th row and column (an int or a (row, col) pair).
        groups: split the channels into this many groups; filter k sees only the
           channels of group ``k // (K / groups)``.
        activation: ``None``, ``"relu"`` (max(0, v)) or ``"relu6"`` (min(max(0, v), 6)),
           applied to every output value.

    Returns:
        K x H' x W' (or N x K x H' x W') float64 array, H' = ceil(H / stride).
    """
    if activation not in (None, "relu", "relu6"):
        raise ValueError(f"activation must be None, 'relu' or 'relu6' in the reference, got {activation!r}")
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 4:
        w = w[:, :, 0, 0]
    if w.ndim == 1:
        w = w[None, :]
    if x.ndim not in (3, 4) or w.ndim != 2:
        raise ValueError(
            f"expected x as C x H x W or N x C x H x W and w as K x C, got {x.shape} and {w.shape}"
        )
    batched = x.ndim == 4
    if not batched:
        x = x[None]
    n, c, h, wd = x.shape
    k = w.shape[0]
    if c % groups or k % groups or w.shape[1] != c // groups:
        raise ValueError(f"x has {c} channels, w is {w.shape}, groups={groups}: shapes do not agree")
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    bias = np.zeros(k) if b is None else np.asarray(b, dtype=np.float64)
    if bias.shape != (k,):
        raise ValueError(f"b must hold {k} values, one per filter, got shape {bias.shape}")
    cg, kg = c // groups, k // groups
    rows = range(0, h, sh)
    cols = range(0, wd, sw)
    out = np.zeros((n, k, len(rows), len(cols)))
    for s in range(n):
        for kk in range(k):
            g = kk // kg
            for oi, i in enumerate(rows):
                for oj, j in enumerate(cols):
                    total = bias[kk]
                    for cc in range(cg):
                        total += w[kk, cc] * x[s, g * cg + cc, i, j]
                    out[s, kk, oi, oj] = total
    if activation == "relu":
        out = np.maximum(out, 0.0)
    elif activation == "relu6":
        out = np.minimum(np.maximum(out, 0.0), 6.0)
    return out if batched else out[0]
