"""The plots of a run (loss and accuracy curves, the confusion matrix, a 1x1 layer's weights) and
of a comparison (bars per model), each written atomically as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..layers import Conv1x1
from .files import _save_figure


def plot_curves(history: Sequence[dict[str, float]], path: Path, *, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and test, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-"), ("test", "--")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        ax_acc.plot(epochs, [100 * h[f"{split}_accuracy"] for h in history], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (train: with label smoothing)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save_figure(fig, path)
    return path


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: Path, *, title: str = "") -> Path:
    """The confusion matrix: rows are the true classes, columns the predictions, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(confusion, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                color = "white" if confusion[i, j] > confusion.max() / 2 else "black"
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(n), classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _save_figure(fig, path)
    return path


def plot_conv1x1(layer: Conv1x1, path: Path, *, title: str = "") -> Path:
    """A 1x1 layer's weights as the K x C matrix it is: row k mixes the C input maps into output map k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = layer.weight.detach().cpu().reshape(layer.out_channels, -1).numpy()  # K x C/groups
    limit = float(np.abs(w).max()) or 1.0
    k, c = w.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + c / 12), min(10.0, 1.5 + k / 12)))
    image = ax.imshow(w, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="weight")
    ax.set(xlabel=f"input map (C = {c})", ylabel=f"output map (K = {k})",
           title=title + "\nthe learned 1x1 weights: each row is one output map's mix of the input maps")
    _save_figure(fig, path)
    return path


def plot_compare(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Test accuracy, parameters, MACs and seconds of each model, as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    panels = (("test accuracy (%)", [100 * r["test_accuracy"] for r in rows]),
              ("parameters (thousands)", [r["params"] / 1e3 for r in rows]),
              ("M MACs per image", [r["macs"] / 1e6 for r in rows]),
              ("training seconds", [r["seconds"] for r in rows]))
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2 + 0.25 * len(rows)))
    for ax, (label, values) in zip(axes, panels, strict=True):
        bars = ax.barh(names, values, color=[f"C{i}" for i in range(len(rows))])
        ax.bar_label(bars, fmt="%.2f" if "accuracy" in label else "%.1f", fontsize=8)
        ax.set_title(label)
        ax.invert_yaxis()
        if "accuracy" in label:
            ax.set_xlim(max(0.0, min(values) - 5), 100)
        ax.margins(x=0.2)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle(title)
    _save_figure(fig, path)
    return path
