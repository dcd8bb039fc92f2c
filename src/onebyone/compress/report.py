"""CompressReport: what compress did to every layer and to the whole model, as a table, JSON and a figure.

Conventions as everywhere in onebyone: MACs are multiply-adds of one image (1 MAC = 2 FLOPs),
weight x activation products only, bias adds not counted; parameters include biases. Times are
seconds per forward pass (eval mode, no autograd), the median of interleaved rounds, on the
machine and thread count the report names.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .._files import atomic_write
from ..layers import Conv1x1

__all__ = ["CompressReport", "LayerResult", "describe"]


def describe(m: nn.Module) -> str:
    """A layer's shape in one line: ``64->128 3x3/2`` per convolution, `` | `` between the parts."""
    parts = []
    for leaf in (x for x in m.modules() if isinstance(x, (nn.Conv2d, Conv1x1, nn.Linear))):
        if isinstance(leaf, nn.Linear):
            parts.append(f"{leaf.in_features}->{leaf.out_features} linear")
            continue
        kernel = "1x1" if isinstance(leaf, Conv1x1) else "x".join(map(str, leaf.kernel_size))
        stride = leaf.stride if isinstance(leaf.stride, int) else max(leaf.stride)
        text = f"{leaf.in_channels}->{leaf.out_channels} {kernel}" + (f"/{stride}" if stride != 1 else "")
        if leaf.groups != 1:
            text += f" g{leaf.groups}"
        parts.append(text)
    return " | ".join(parts)


@dataclass
class LayerResult:
    """One convolution or linear layer. ``status``: "factorized" (kept), "reverted" (timed slower,
    the original kept), "original" (the budget kept it), or "skipped" (not factorizable)."""

    name: str
    type: str
    method: str | None  # "tucker2", "svd", or None
    status: str
    reason: str
    before: str
    after: str = ""
    ranks: list[int] | None = None
    full_ranks: list[int] | None = None
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    seconds_before: float | None = None  # at the report's batch and layout
    seconds_after: float | None = None
    error: float | None = None  # the layer's output, relative error on the calibration images
    model_error: float | None = None  # the model's output, with this layer alone factorized


@dataclass
class CompressReport:
    """The result of :func:`onebyone.compress`; ``finetune(..., report=r)`` adds the fine-tuned accuracy."""

    model: str
    input_size: list[int]
    rank: str
    budget: dict[str, Any] | None
    keep: str
    batch: int
    layout: str
    rounds: int
    threads: int
    machine: str
    torch: str
    layers: list[LayerResult] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    output_error: float | None = None
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    accuracy: dict[str, float | None] = field(
        default_factory=lambda: {"original": None, "compressed": None, "finetuned": None})
    accuracy_data: str | None = None
    finetune: dict[str, Any] | None = None
    seconds: float = 0.0

    # ---- what the model's description needs

    @property
    def factorized(self) -> list[dict[str, Any]]:
        """The kept factorizations: name, method and ranks, in the model's order."""
        return [{"name": r.name, "method": r.method, "ranks": r.ranks} for r in self.layers
                if r.status == "factorized"]

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(self.macs_before, 1)

    @property
    def params_ratio(self) -> float:
        return self.params_after / max(self.params_before, 1)

    def convention(self) -> str:
        return ("MACs: multiply-adds of one image, weight x activation products, bias adds not counted; "
                "1 MAC = 2 FLOPs; parameters include biases; times: seconds per forward pass at the given "
                f"batch, {self.layout}, eval mode without autograd, median of {self.rounds} interleaved "
                f"rounds, {self.threads} thread(s) on {self.machine}, torch {self.torch}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [asdict(r) for r in self.layers]
        d["macs_ratio"], d["params_ratio"] = self.macs_ratio, self.params_ratio
        d["factorized"] = self.factorized
        d["convention"] = self.convention()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    # ---- the table

    def table(self) -> str:
        head = (f"{'layer':<30} {'before':<16} {'after':<34} {'ranks':<9} {'params':>15} {'M MACs':>13} "
                f"{'ms b' + str(self.batch):>15} {'error':>7}  status")
        lines = [f"compress {self.model} ({' x '.join(map(str, self.input_size))}), ranks: {self.rank}"
                 + (f" (budget {self.budget['unit']} <= {self.budget['fraction']:g}"
                    f"{'' if self.budget['met'] else ', NOT met'})" if self.budget else ""),
                 head, "-" * len(head)]
        for r in self.layers:
            ranks = "x".join(map(str, r.ranks)) if r.ranks else "-"
            ms = (f"{1e3 * r.seconds_before:.3f}>{1e3 * r.seconds_after:.3f}"
                  if r.seconds_before is not None and r.seconds_after is not None else "-")
            err = f"{r.error:.3f}" if r.error is not None else "-"
            lines.append(f"{r.name[-30:]:<30} {r.before[:16]:<16} {r.after[:34]:<34} {ranks:<9} "
                         f"{r.params_before:>7,}>{r.params_after:<7,} "
                         f"{r.macs_before / 1e6:>6.2f}>{r.macs_after / 1e6:<6.2f} {ms:>15} {err:>7}  "
                         f"{r.status if r.status != 'reverted' else 'reverted (slower)'}")
        lines.append("")
        error = self.output_error if self.output_error is not None else float("nan")
        lines.append(f"model: params {self.params_before:,} -> {self.params_after:,} "
                     f"({self.params_ratio:.1%}), "
                     f"MACs {self.macs_before / 1e6:.2f} M -> {self.macs_after / 1e6:.2f} M "
                     f"({self.macs_ratio:.1%}), output error {error:.4f}")
        for key, t in self.latency.items():
            lines.append(f"latency {key.replace('_', ' ')}: {1e3 * t['before']:.3f} ms -> "
                         f"{1e3 * t['after']:.3f} ms ({t['after'] / t['before']:.2f}x)")
        acc = {k: v for k, v in self.accuracy.items() if v is not None}
        if acc:
            lines.append("accuracy" + (f" on {self.accuracy_data}" if self.accuracy_data else "") + ": "
                         + ", ".join(f"{k} {100 * v:.2f}%" for k, v in acc.items()))
        lines.append(self.convention())
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.table()

    # ---- the figure

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """A PNG: per layer, MACs before and after, the ranks chosen against the full ones, and time."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.layers if r.method is not None]
        names = [r.name for r in rows]
        y = range(len(rows))
        fig, axes = plt.subplots(1, 3, figsize=(16, 1.6 + 0.32 * max(len(rows), 3)), sharey=True)
        ax = axes[0]
        ax.barh([i - 0.2 for i in y], [r.macs_before / 1e6 for r in rows], 0.4, label="original", color="C7")
        ax.barh([i + 0.2 for i in y], [r.macs_after / 1e6 for r in rows], 0.4, label="compressed", color="C0")
        ax.set(xlabel="M MACs per image", title="multiply-adds")
        ax.legend(loc="lower right", fontsize=8)
        ax = axes[1]
        for i, r in enumerate(rows):
            full = r.full_ranks or []
            chosen = r.ranks if r.status == "factorized" and r.ranks else full
            for j, (c, f) in enumerate(zip(chosen, full, strict=False)):
                off = -0.2 + 0.4 * j if len(full) == 2 else 0.0
                ax.barh(i + off, f, 0.38, color="C7", alpha=0.35)
                color = ("C0" if j == 0 else "C1") if r.status == "factorized" else "C3"
                ax.barh(i + off, c, 0.38, color=color)
        ax.set(xlabel="rank (grey: full; blue R1 / input, orange R2 / output; red: kept original)",
               title=f"ranks chosen ({self.rank})")
        ax = axes[2]
        timed = [(i, r) for i, r in enumerate(rows)
                 if r.seconds_before is not None and r.seconds_after is not None]
        ax.barh([i - 0.2 for i, _ in timed], [1e3 * (r.seconds_before or 0) for _, r in timed], 0.4,
                color="C7", label="original")
        ax.barh([i + 0.2 for i, _ in timed], [1e3 * (r.seconds_after or 0) for _, r in timed], 0.4,
                color=["C0" if r.status == "factorized" else "C3" for _, r in timed], label="factorized")
        ax.set(xlabel=f"ms per call, batch {self.batch}, {self.layout}",
               title="measured time (red: reverted)")
        ax.legend(loc="lower right", fontsize=8)
        axes[0].set_yticks(list(y), names, fontsize=7)
        axes[0].invert_yaxis()
        for a in axes:
            a.grid(axis="x", alpha=0.3)
        lat = self.latency.get(f"batch_{self.batch}")
        acc = {k: v for k, v in self.accuracy.items() if v is not None}
        fig.suptitle(
            f"{self.model}: MACs {self.macs_ratio:.0%} of the original, params {self.params_ratio:.0%}"
            + (f", latency at batch {self.batch} {lat['after'] / lat['before']:.2f}x" if lat else "")
            + ("; accuracy " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in acc.items()) if acc else ""),
            fontsize=10)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        out = Path(path)
        atomic_write(out, buffer.getvalue())
        return out
