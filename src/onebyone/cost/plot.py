"""The report as a picture: where the MACs go, the biggest layers and the share of each kind."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import atomic_write
from .text import _dims, _si

if TYPE_CHECKING:
    from .report import CostReport


def plot_report(report: CostReport, path: str | os.PathLike[str], *, top: int = 40) -> Path:
    """A PNG of where the MACs go: the ``top`` layers by MACs, and the share of each kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"plot path must end in .png, got {str(path)!r}")
    kinds = report.by_kind()
    palette = plt.get_cmap("tab10")
    colour = {k: palette(i % 10) for i, k in enumerate(kinds)}
    ranked = sorted((r for r in report.layers if r.macs), key=lambda r: -r.macs)[:top]
    ranked.reverse()  # barh draws bottom up: the biggest on top
    height = max(4.0, 0.22 * len(ranked) + 1.5)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, height), gridspec_kw={"width_ratios": [3, 2]})
    ax1.barh([r.name for r in ranked], [r.macs / 1e6 for r in ranked],
             color=[colour[r.kind] for r in ranked])
    ax1.set_xlabel("multiply-adds (millions; 1 MAC = 2 FLOPs)")
    shown = f"top {len(ranked)} of {sum(1 for r in report.layers if r.macs)}" if ranked else "no"
    ax1.set_title(f"{shown} layers by MACs")
    ax1.tick_params(axis="y", labelsize=7)
    from matplotlib.patches import Patch

    drawn = list(dict.fromkeys(r.kind for r in reversed(ranked)))
    if drawn:
        ax1.legend(handles=[Patch(color=colour[k], label=k) for k in drawn], loc="lower right")
    names = [k for k, v in kinds.items() if v["macs"] or v["params"]]
    ys = list(range(len(names)))
    macs_pct = [kinds[k]["macs_share"] * 100 for k in names]
    params_pct = [kinds[k]["params_share"] * 100 for k in names]
    ax2.barh([y - 0.2 for y in ys], macs_pct, height=0.4, color=[colour[k] for k in names])
    ax2.barh([y + 0.2 for y in ys], params_pct, height=0.4, color=[colour[k] for k in names], alpha=0.45,
             hatch="//")
    for y, m, q in zip(ys, macs_pct, params_pct, strict=True):
        ax2.text(m + 1, y - 0.2, f"{m:.1f}% of MACs", va="center", fontsize=8)
        ax2.text(q + 1, y + 0.2, f"{q:.1f}% of params", va="center", fontsize=8)
    ax2.set_yticks(ys, names)
    ax2.invert_yaxis()
    ax2.set_xlim(0, 125)
    ax2.set_xlabel("share of the model's total (%)")
    ax2.set_title("by kind: MACs (solid) and parameters (hatched)")
    bias = "bias counted" if report.count_bias else "bias not counted"
    fig.suptitle(f"{report.model}, input {_dims(report.input_shape)}: {_si(report.macs)} MACs, "
                 f"{_si(report.params)} params ({bias})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(out, buf.getvalue())
    return out
