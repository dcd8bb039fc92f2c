"""onebyone: the 1x1 (pointwise) convolution, fast, explained, and put to work.

The public API is the names in ``__all__``; everything else is internal.
"""

from .compress import CompressReport, compress, finetune
from .cost import CostReport, bottleneck_cost, cost
from .layers import Conv1x1, ConvNormAct, Inception, MLPConv, NaiveInception, convert
from .models import ablations_of, create_model, list_models, register_model
from .ops import conv1x1
from .tune import TuneReport, tune

__version__ = "0.1.0"

__all__ = [
    "CompressReport",
    "Conv1x1",
    "ConvNormAct",
    "CostReport",
    "Inception",
    "MLPConv",
    "NaiveInception",
    "TuneReport",
    "__version__",
    "ablations_of",
    "bottleneck_cost",
    "compress",
    "conv1x1",
    "convert",
    "cost",
    "create_model",
    "finetune",
    "list_models",
    "register_model",
    "tune",
]
