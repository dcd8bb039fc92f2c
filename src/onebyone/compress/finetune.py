"""finetune(): train a compressed model a little, on the project's trainer, to win back its accuracy.

Kim et al. fine-tune every compressed network; a few epochs at a tenth of the training learning
rate bring most of the accuracy back. This is onebyone.train's loop (progress bar, safetensors
checkpoints after every epoch, resume), handed the model itself instead of a name to build, with
knowledge distillation from the original when ``teacher`` is given.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .report import CompressReport

__all__ = ["finetune"]

#: The fine-tuning learning rate, as a share of the data set's training one (DATA_DEFAULTS).
LR_SHARE = 0.1


def _dataset(data: Any) -> Any:
    """A :class:`onebyone.data.Dataset` from a data name, a Dataset, a DataLoader or (images, labels)."""
    from torch.utils.data import DataLoader

    from ..data import Dataset, load_dataset

    if isinstance(data, (str, Path)):
        return load_dataset(data)
    if isinstance(data, Dataset):
        return data
    if isinstance(data, DataLoader):
        xs, ys = [], []
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise TypeError("a DataLoader for finetune must yield (images, labels) batches")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        data = (torch.cat(xs), torch.cat(ys))
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or not len(y):
            raise ValueError(f"data must be N x C x H x W images and N labels, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        xn = x.detach().cpu().float().contiguous().numpy()
        yn = y.detach().cpu().long().numpy()
        classes = tuple(str(c) for c in range(int(yn.max()) + 1))
        # the images given are both what is trained on and what is scored
        return Dataset("tensors", "tensors given to finetune", xn, yn, xn, yn, classes)
    raise TypeError("data must be a data name ('digits', an IDX or CIFAR-10 folder), a Dataset, a DataLoader "
                    f"or an (images, labels) pair, got {type(data).__name__}")


def finetune(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float | None = None,
    teacher: nn.Module | None = None,
    report: CompressReport | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Fine-tune ``model`` in place on ``data`` for ``epochs`` and return it.

    Args:
        data: a data name the trainer knows (``"digits"``, a folder of MNIST-format IDX files or
            CIFAR-10 batches), a Dataset, a DataLoader of (images, labels), or an (images, labels)
            pair (then trained and scored on those same images).
        lr: peak learning rate (warm-up then cosine, as in training); None: a tenth of the data
            set's training rate.
        teacher: the original model: its softened outputs are distilled into ``model``.
        report: the CompressReport of ``model``: gets the accuracy after fine-tuning.
        out: folder for the trainer's checkpoints, weights, metrics and plots (None: a temporary one);
            ``resume`` continues an interrupted fine-tuning there.
    """
    from ..train import DATA_DEFAULTS, TrainConfig, train

    if not isinstance(model, nn.Module):
        raise TypeError(f"finetune expects an nn.Module, got {type(model).__name__}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module or None, got {type(teacher).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    dataset = _dataset(data)
    if lr is None:
        lr = LR_SHARE * DATA_DEFAULTS[dataset.name]["lr"]
    if not hasattr(model, "default_input_size"):
        model.default_input_size = dataset.input_size
    if not hasattr(model, "num_classes"):
        model.num_classes = dataset.num_classes
    label = f"{getattr(report, 'model', type(model).__name__)} (compressed)"
    config = TrainConfig(model=label, data=str(data) if isinstance(data, (str, Path)) else dataset.name,
                         epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, threads=threads,
                         device=str(next(model.parameters()).device.type))
    with tempfile.TemporaryDirectory(prefix="onebyone-finetune-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        result = train(config, folder, resume=resume, progress=progress, log=log, dataset=dataset,
                       model=model, teacher=teacher)
    model.eval()
    if report is not None:
        report.accuracy["finetuned"] = float(result.metrics["test_accuracy"])
        report.finetune = {"epochs": epochs, "lr": lr, "distilled": teacher is not None,
                           "data": repr(dataset), "seconds": float(result.metrics["seconds"])}
        if report.accuracy_data is None:
            report.accuracy_data = f"{dataset.name} test split ({len(dataset.y_test)} images)"
    return model
