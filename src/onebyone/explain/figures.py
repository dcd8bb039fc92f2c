"""The document's figures: PNG heatmaps of the maps, kernels and outputs (matplotlib, Agg)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write
from ._util import _bytes, _count, _num, _prepare_dir


def _show(fig: Any, ax: Any, m: Any, title: str, *, annotate: bool = True, cmap: str = "viridis") -> None:
    data = np.asarray(m, dtype=np.float64)
    im = ax.imshow(data, cmap=cmap)
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(data.shape[1]) if data.shape[1] <= 8 else [])
    ax.set_yticks(range(data.shape[0]) if data.shape[0] <= 8 else [])
    ax.tick_params(labelsize=7)
    if annotate and data.size <= 64:
        lo, hi = float(data.min()), float(data.max())
        for (i, j), v in np.ndenumerate(data):
            light = hi > lo and (v - lo) / (hi - lo) < 0.6
            ax.text(
                j, i, _num(v, 2), ha="center", va="center", fontsize=7, color="white" if light else "black"
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, buf.getvalue())
    return path


def write_figures(doc: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """PNG figures of every example (input maps, kernels, outputs, with colour bars) in ``out_dir``."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas only

    out = _prepare_dir(out_dir)
    written = []

    m = doc["math"]
    fig = Figure(figsize=(15, 3.4), layout="constrained")
    axes = fig.subplots(1, 5, width_ratios=[1, 1, 1, 0.35, 1])
    for c in range(3):
        _show(fig, axes[c], m["inputs"]["maps"][c], f"input map X[{c}]")
    _show(fig, axes[3], np.array(m["inputs"]["kernel"])[:, None], "1x1 kernel", cmap="magma")
    _show(fig, axes[4], m["output"], "output T = conv1x1(X, kernel)", cmap="cividis")
    fig.suptitle(m["title"])
    written.append(_save(fig, out / "math_view.png"))

    d = doc["digits"]
    fig = Figure(figsize=(13, 6.4), layout="constrained")
    axes = fig.subplots(2, 5)
    for row, digit in enumerate(("2", "3")):
        g = d["digits"][digit]
        _show(fig, axes[row, 0], g["maps"][0], f"digit {digit}: map 1 (a)")
        _show(fig, axes[row, 1], g["maps"][1], f"digit {digit}: map 2 (b)")
        _show(fig, axes[row, 2], g["output"], "weights (1, 1): output", cmap="cividis")
        _show(
            fig,
            axes[row, 3],
            d["learned"]["outputs"][digit]["output"],
            "learned weights: output",
            cmap="cividis",
        )
    _show(fig, axes[0, 4], np.array(d["learned"]["weight"])[:, None], "learned 1x1 kernel", cmap="magma")
    _show(fig, axes[1, 4], d["learned"]["readout"], "learned readout weights", cmap="coolwarm")
    fig.suptitle(d["title"])
    written.append(_save(fig, out / "digits.png"))

    adv = doc["advanced"]
    fig = Figure(figsize=(14, 5.4), layout="constrained")
    grid = fig.add_gridspec(2, 7, width_ratios=[1, 1, 1, 1, 1, 1.5, 1])
    for c, mp in enumerate(adv["inputs"]["maps"]):
        _show(fig, fig.add_subplot(grid[c // 5, c % 5]), mp, f"input {c}", annotate=False)
    # drawn transposed, one column per filter: tall and narrow, it fits beside the maps
    kernels = np.array(adv["inputs"]["weight"]).T  # 10 x 4
    _show(
        fig,
        fig.add_subplot(grid[:, 5]),
        kernels,
        "1x1 kernels\n(rows: input maps,\ncolumns: filters)",
        cmap="magma",
    )
    sub = grid[:, 6].subgridspec(4, 1)
    for k, mp in enumerate(adv["output"]):
        _show(fig, fig.add_subplot(sub[k]), mp, f"output {k}", annotate=False, cmap="cividis")
    fig.suptitle(adv["title"])
    written.append(_save(fig, out / "advanced_view.png"))

    dep = doc["depth"]
    last = dep["more_filters"][-1]
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=[0.6, 1, 1, 1])
    _show(fig, axes[0], last["filters"], "3 filters x 3 weights", cmap="magma")
    for k, mp in enumerate(last["output"]):
        _show(fig, axes[k + 1], mp, f"output map {k}", cmap="cividis")
    fig.suptitle("Depth: each added 1x1 filter adds one output map")
    written.append(_save(fig, out / "depth.png"))

    inc = doc["inception"]
    red = doc["reduction"]
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    names = ["direct", "1x1 reduction"]
    macs_bars = ax1.bar(
        names, [inc["direct"]["macs"] / 1e6, inc["reduced"]["macs"] / 1e6], color=["#b44", "#4a4"]
    )
    ax1.bar_label(
        macs_bars, labels=[_count(inc["direct"]["macs"]), _count(inc["reduced"]["macs"])], fontsize=8
    )
    ax1.set_ylabel("million MACs")
    ax1.set_title(f"Inception 5x5 branch: {inc['macs_ratio']:.2f}x fewer MACs", fontsize=9)
    parts = {
        "input": red["bytes"]["input"],
        "output": red["bytes"]["output"],
        "weights": red["bytes"]["weights"],
    }
    bars = ax2.bar(list(parts), [v / 1e6 for v in parts.values()], color="#468")
    # the weights are too small to see as a bar: every bar carries its number
    ax2.bar_label(bars, labels=[_bytes(v).split(" (")[0] for v in parts.values()], fontsize=8)
    ax2.set_ylabel("MB (float32)")
    ax2.set_title(f"{red['title']}: memory", fontsize=9)
    fig.suptitle("Cost of the 1x1 reductions")
    written.append(_save(fig, out / "cost.png"))
    return written
