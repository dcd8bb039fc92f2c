"""The seed's worked examples, computed by the library, checked against the seed's text; and the
same view inside a trained network.

The seed teaches the 1x1 convolution with a handful of examples. Every number shown here is
computed, with :func:`onebyone.conv1x1`, :class:`onebyone.Conv1x1` and the float64 definition in
:mod:`onebyone.reference`; the seed's printed results are kept apart, in :data:`SEED_PRINTED`, and
used only to list where the text and the computation disagree. The files follow the seed:

- ``inputs``: the seed's inputs (the three 6 x 6 maps, the kernel, the sizes), written down;
- ``examples``: one function per example, each returning a JSON-ready dict (:func:`math_view`,
  :func:`digit_view`, :func:`advanced_view`, :func:`reduction_example`, :func:`depth_view`,
  :func:`inception_reduction`);
- ``claims``: what the seed printed (:data:`SEED_PRINTED`) and :func:`check_seed`, every printed
  claim against the computation;
- ``document``: :func:`examples`, all of the above as one document (what ``--json`` prints);
- ``trained``: :func:`trained_view`, the math view on the learned 1x1 layers of a trained network,
  for a few held-out images;
- presentation: ``text`` (:func:`render_text`), ``figures`` (:func:`write_figures`, PNG) and
  ``page`` (:func:`write_page`, the self-contained interactive page, and :func:`page_server`,
  127.0.0.1 only).

Conventions: a pixel ``[i, j]`` is row ``i``, column ``j``, counting from 0 (the seed's own
``T[1,0]`` arithmetic reads its map this way). 1 multiply-add (MAC) = 2 FLOPs; bias additions are
not counted in MACs. Sizes in bytes assume float32 (4 bytes).
"""

from .claims import SEED_PRINTED, check_seed
from .document import examples
from .examples import (
    advanced_view,
    conv_cost,
    depth_view,
    digit_view,
    inception_reduction,
    math_view,
    reduction_example,
)
from .figures import write_figures
from .inputs import MATH_KERNEL, MATH_MAPS
from .page import page_server, write_page
from .text import render_text
from .trained import decode_array, pointwise_layers, trained_view

__all__ = [
    "MATH_KERNEL",
    "MATH_MAPS",
    "SEED_PRINTED",
    "advanced_view",
    "check_seed",
    "conv_cost",
    "decode_array",
    "depth_view",
    "digit_view",
    "examples",
    "inception_reduction",
    "math_view",
    "page_server",
    "pointwise_layers",
    "reduction_example",
    "render_text",
    "trained_view",
    "write_figures",
    "write_page",
]
