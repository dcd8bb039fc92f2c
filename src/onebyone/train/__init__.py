"""Train, evaluate and compare the registered models on real images.

The package, file by file: config.py holds the configuration (:class:`TrainConfig`) and its
per-data-set defaults (``DATA_DEFAULTS``); files.py the run folder's file names and the writing
of each file atomically; checkpoint.py the checkpoint (safetensors, with its JSON inside) and
:func:`load_run`; epoch.py what one epoch does (and the test scoring after it); pinning.py the
thread count and conv1x1's choices a run pins; distributed.py the multi-process parts;
run.py :func:`train`; evaluation.py :func:`evaluate`; comparison.py :func:`compare` (a model
against its ablations); plots.py the plots.

Determinism and resuming. Every random choice of epoch ``e`` (the shuffle, the
augmentation, dropout) is drawn from generators seeded from ``(seed, e, rank)`` at the
start of the epoch, so the random state at an epoch boundary is fully described by the
seed and the epoch number. A checkpoint written after every epoch holds the weights,
the BatchNorm statistics, the optimizer's state and the epoch (and the history so far);
a resumed run therefore continues with exactly the numbers an uninterrupted one would
have used, and ends with bitwise the same weights (same machine, same thread count).

Multi-process. Under ``torchrun --nproc-per-node N`` the same call trains with
DistributedDataParallel (gloo on CPU, nccl on GPU): every global batch is cut into N
equal slices, one per process, and the gradients are averaged, which is the
single-process step on the whole batch. Only rank 0 writes files.
"""

from .checkpoint import load_run
from .comparison import CompareResult, compare
from .config import DATA_DEFAULTS, TrainConfig
from .evaluation import evaluate
from .run import TrainResult, train

__all__ = [
    "DATA_DEFAULTS",
    "CompareResult",
    "TrainConfig",
    "TrainResult",
    "compare",
    "evaluate",
    "load_run",
    "train",
]
