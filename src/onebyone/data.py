"""Data sets: the seed's digit patterns, and (below) real digits.

Everything here is loaded from memory, from a dependency, or from a file the user names;
nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

__all__ = ["seed_digit_maps"]


# ------------------------------------------------------------- the seed's 2 and 3

# The seed draws each digit as two 5 x 3 feature maps. Map 1 (three horizontal strokes)
# is the same for both digits; map 2 holds the vertical strokes, as the symbol b, and is
# where they differ: digit 2's lower stroke is on the left (row 3, column 0), digit 3's
# on the right (row 3, column 2). Rows and columns count from 0.
_STROKES = np.array(
    [
        [1, 1, 1],
        [0, 0, 0],
        [1, 1, 1],
        [0, 0, 0],
        [1, 1, 1],
    ],
    dtype=np.float64,
)
_VERTICAL = {
    2: np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float64),
    3: np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float64),
}


def seed_digit_maps(digit: int, a: float = 1.0, b: float = 1.0) -> np.ndarray:
    """The seed's two 5 x 3 feature maps of ``digit`` (2 or 3), as a 2 x 5 x 3 float64 array.

    ``a`` is the value of the horizontal strokes (map 1), ``b`` of the vertical strokes
    (map 2), the two symbols the seed uses.
    """
    if digit not in _VERTICAL:
        raise ValueError(f"the seed draws only the digits 2 and 3, got {digit!r}")
    return np.stack([a * _STROKES, b * _VERTICAL[digit]])
