""":func:`evaluate`: a finished run's weights scored again, on its own data or another's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import Dataset, load_dataset
from .checkpoint import load_run
from .config import _check_fits
from .distributed import _device_for, _Dist
from .epoch import _score, _tensors
from .pinning import _pinned


def evaluate(
    run_dir: str | Path, data: str | None = None, *, dataset: Dataset | None = None, device: str | None = None
) -> dict[str, Any]:
    """Score the weights saved in ``run_dir`` on the test split of ``data`` (default: the data
    they were trained on). Returns accuracy, loss, the confusion matrix and the counts."""
    model, run_config = load_run(run_dir)
    data = run_config["data"] if data is None else data
    if dataset is None:
        dataset = load_dataset(data)
    _check_fits(model, run_config["model"], dataset)
    dev = _device_for(device, _Dist())
    model.to(dev)
    _, _, x_test, y_test = _tensors(dataset, None)
    threads = int(run_config.get("train", {}).get("threads") or 1)
    with _pinned(threads, run_config.get("conv1x1_choices")):  # as the run scored itself
        loss, confusion = _score(model, x_test, y_test, dataset.num_classes, _Dist(), dev)
    correct = int(confusion.diagonal().sum())
    return {"model": run_config["model"], "data": data, "dataset": repr(dataset),
            "test_accuracy": correct / len(y_test), "test_loss": loss, "correct": correct,
            "test_images": len(y_test), "confusion": confusion.tolist()}
