"""The seed's inputs, written down: its three 6 x 6 maps, its kernel, the digit weights, the sizes."""

from __future__ import annotations

import numpy as np

#: The seed's "three feature maps" of the math view, 3 x 6 x 6 (channel, row, column).
MATH_MAPS = np.array(
    [
        [
            [1, 2, 3, 2, 2, 3],
            [4, 5, 6, 2, 2, 3],
            [2, 1, 7, 2, 1, 3],
            [3, 2, 4, 2, 2, 3],
            [3, 2, 4, 2, 2, 3],
            [3, 2, 4, 2, 2, 3],
        ],
        [
            [3, 2, 4, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [1, 2, 3, 3, 2, 2],
            [4, 5, 6, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [2, 1, 7, 2, 1, 3],
        ],
        [
            [1, 2, 3, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [4, 5, 6, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [2, 1, 7, 2, 1, 3],
        ],
    ],
    dtype=np.float64,
)
MATH_MAPS.flags.writeable = False

#: The seed's "1x1 kernel of depth 1": one weight per input map.
MATH_KERNEL = (0.1, 0.2, 0.4)

#: The cells whose arithmetic the seed spells out (T[0,0] and T[1,0]).
MATH_CELLS = ((0, 0), (1, 0))

#: The seed combines the digit maps with a plain "+": weight 1 for each map.
SEED_DIGIT_WEIGHTS = (1.0, 1.0)

#: The sizes the seed names: advanced view, dimensionality reduction, Inception (GoogLeNet 3a's 5x5 branch).
ADVANCED_SIZES = {"channels": 10, "height": 32, "width": 32, "filters": 4}
REDUCTION_SIZES = {"channels": 50, "height": 600, "width": 600, "filters": 20}
INCEPTION_SIZES = {"size": 28, "channels": 192, "reduce": 16, "out": 32, "kernel": 5}
