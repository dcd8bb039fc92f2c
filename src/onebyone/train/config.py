"""What to train, on what, and how: :class:`TrainConfig`, the per-data-set defaults that fill
its ``None`` fields, and the checks that the model fits the data."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import Dataset
from ..models import create_model, list_models


@dataclass(frozen=True)
class TrainConfig:
    """What to train, on what, and how. ``None`` fields take the data set's defaults.

    Args:
        model: a registered model name (see :func:`onebyone.list_models`).
        data: ``"digits"`` (embedded) or a folder of MNIST-format IDX files or CIFAR-10 batches.
        epochs, batch_size, lr, weight_decay: SGD with Nesterov momentum 0.9; the learning
            rate warms up linearly over the first epoch, then follows a cosine to zero.
        augment: random shifts of the images (and left-right flips for CIFAR-10).
        label_smoothing: of the cross-entropy loss.
        seed: weights, shuffles, augmentation and dropout all follow from it.
        subset: train on the first ``subset`` training images only (tests, quick looks).
        device: ``"cpu"``, ``"cuda"``, or ``None`` for CUDA when available.
        threads: CPU threads per process (``torch.set_num_threads``) while training; ``None``
            means 1. The models here are small: on 8 x 8 and 28 x 28 images each operation is
            too short to share between threads, and on a busy machine a second thread that
            waits for a core made a training step 20 times slower (see BENCHMARKS.md). For
            more cores, run more processes (``torchrun --nproc-per-node N``).
    """

    model: str = "nin_digits"
    data: str = "digits"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    augment: bool | None = None
    label_smoothing: float | None = None
    seed: int = 0
    subset: int | None = None
    device: str | None = None
    threads: int | None = None


#: Defaults per data set (by :attr:`Dataset.name`), chosen on this project's benchmarks
#: (see BENCHMARKS.md): enough epochs to converge, small enough to run on a laptop CPU.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 30, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "augment": True,
               "label_smoothing": 0.1, "shift": 1},
    "mnist-format": {"epochs": 12, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "augment": True,
                     "label_smoothing": 0.1, "shift": 2},
    "cifar10": {"epochs": 60, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4, "augment": True,
                "label_smoothing": 0.1, "shift": 4},
    # images handed over as tensors (fine-tuning): nothing is known about them, so no augmentation
    "tensors": {"epochs": 2, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "augment": False,
                "label_smoothing": 0.0, "shift": 0},
}

#: Knowledge distillation (Hinton, Vinyals and Dean 2015): the loss is (1 - w) x cross-entropy +
#: w x T^2 x KL(teacher's softened outputs || the student's), at temperature T.
DISTILL_TEMPERATURE = 4.0
DISTILL_WEIGHT = 0.5


def _resolve(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """``config`` with every ``None`` hyperparameter set from the data set's defaults, checked."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    defaults = DATA_DEFAULTS[dataset.name]
    filled = {k: defaults[k] if getattr(config, k) is None else getattr(config, k)
              for k in ("epochs", "batch_size", "lr", "weight_decay", "augment", "label_smoothing")}
    out = dataclasses.replace(config, **filled)
    for name in ("epochs", "batch_size"):
        value = getattr(out, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    subset = out.subset
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be a positive int or None, got {out.subset!r}")
    if not (isinstance(out.lr, (int, float)) and out.lr > 0 and math.isfinite(out.lr)):
        raise ValueError(f"lr must be a positive number, got {out.lr!r}")
    if not (isinstance(out.weight_decay, (int, float)) and out.weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {out.weight_decay!r}")
    if not (isinstance(out.label_smoothing, (int, float)) and 0 <= out.label_smoothing < 1):
        raise ValueError(f"label_smoothing must be in [0, 1), got {out.label_smoothing!r}")
    if isinstance(out.seed, bool) or not isinstance(out.seed, int) or out.seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {out.seed!r}")
    return out


def _check_fits(model: nn.Module, name: str, dataset: Dataset) -> None:
    """The model must have been sized for the data: same channels, height, width and classes."""
    expected = _input_size_of(model)
    if expected != dataset.input_size:
        with torch.device("meta"):  # build without allocating, only to read the sizes
            fits = [n for n in list_models() if _input_size_of(create_model(n)) == dataset.input_size]
        hint = f"; models sized for it: {', '.join(fits)}" if fits else ""
        c, h, w = dataset.input_size
        raise ValueError(
            f"model {name!r} expects {' x '.join(map(str, expected))} images but data {dataset.name!r} has "
            f"{c} x {h} x {w}{hint}"
        )
    classes = getattr(model, "num_classes", None)
    if classes != dataset.num_classes:
        raise ValueError(f"model {name!r} has {classes} classes but the data has {dataset.num_classes}")


def _input_size_of(model: nn.Module) -> tuple[int, ...]:
    size = getattr(model, "default_input_size", None)
    if size is None:
        raise TypeError(f"{type(model).__name__} has no default_input_size; expected a registered model")
    return tuple(int(v) for v in size)
