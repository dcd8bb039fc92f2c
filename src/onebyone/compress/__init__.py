"""compress: make a trained network cheaper with 1x1 bottlenecks, and measure what it bought.

The package, file by file: factorize.py holds the two factorizations (Tucker-2 for k x k
convolutions, SVD for 1x1 convolutions and linear layers) and their modules; ranks.py the ways
to choose ranks (EVBMF, energy, a number, a budget); measure.py the MAC counts, errors and
paired timings; core.py :func:`compress` itself; report.py the :class:`CompressReport`;
finetune.py :func:`finetune` on the project's trainer; folder.py the compressed model on disk.
"""

from .core import accuracy, compress
from .factorize import LowRank, Tucker2, factorize
from .finetune import finetune
from .folder import evaluate_folder, is_compressed, load_compressed, save_compressed
from .ranks import VBMF_WEAKENING, evbmf_rank, parse_rank
from .report import CompressReport, LayerResult

__all__ = [
    "VBMF_WEAKENING",
    "CompressReport",
    "LayerResult",
    "LowRank",
    "Tucker2",
    "accuracy",
    "compress",
    "evaluate_folder",
    "evbmf_rank",
    "factorize",
    "finetune",
    "is_compressed",
    "load_compressed",
    "parse_rank",
    "save_compressed",
]
