"""The report: :class:`CostReport`, its totals, its breakdowns (by kind, by block) and its
renderings (text table, JSON, CSV; the PNG is drawn by :mod:`.plot`)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import atomic_write
from ..machine import Peaks
from .rows import _CONVENTION, KINDS, LayerCost
from .text import _dims, _seconds, _si


@dataclass
class CostReport:
    """The cost of one forward pass, per layer call, with totals and a breakdown by kind.

    Attributes:
        model: the model's class name (or the name it was loaded by).
        input_shape: the input, batch first.
        layers: one LayerCost per layer call, in the order they ran.
        not_counted: functions that returned a tensor and have no counting rule, with how
            many times each ran. They are not in any total.
        unattributed_params: parameters of the model that no counted layer used, by name.
        model_params: every distinct parameter of the model.
        forward_seconds: median time of a whole forward pass (``measure=True``).
    """

    model: str
    input_shape: list[int]
    dtype: str
    device: str
    count_bias: bool
    peaks: Peaks
    layers: list[LayerCost]
    not_counted: dict[str, int] = field(default_factory=dict)
    unattributed_params: dict[str, int] = field(default_factory=dict)
    excluded_bias_params: int = 0
    model_params: int = 0
    repeats: int | None = None
    forward_seconds: float | None = None

    # ---- totals

    @property
    def params(self) -> int:
        """Distinct parameters used by counted layers (bias per the switch)."""
        return sum(r.unique_params for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.layers)

    @property
    def activation_bytes(self) -> int:
        """Bytes of all layer outputs: the activation memory written in one forward pass."""
        return sum(r.output_bytes for r in self.layers)

    @property
    def est_seconds(self) -> float:
        return sum(r.est_seconds for r in self.layers)

    @property
    def measured_seconds(self) -> float | None:
        """Sum of the per-layer medians (``measure=True``)."""
        if any(r.measured_seconds is None for r in self.layers) or not self.layers:
            return None
        return sum(r.measured_seconds or 0.0 for r in self.layers)

    def convention(self) -> str:
        """The counting convention in one paragraph, as printed with every report."""
        bias = (
            "bias counted: bias parameters in params, each bias add 1 FLOP per output element (not a MAC)"
            if self.count_bias
            else "bias not counted: bias parameters and bias adds left out"
        )
        return (
            f"{_CONVENTION}; {bias}; pools, norms, activations and element-wise ops are in FLOPs at the "
            "per-element rate each row's rule states; inference (eval mode, no autograd); "
            "bytes = weights + inputs + outputs of each layer; intensity = FLOPs per byte"
        )

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per kind: layer calls, params, MACs, FLOPs, estimated time, and their shares of the totals."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.layers:
            k = out.setdefault(r.kind, {"layers": 0, "params": 0, "macs": 0, "flops": 0, "est_seconds": 0.0,
                                        "measured_seconds": None})
            k["layers"] += 1
            k["params"] += r.unique_params
            k["macs"] += r.macs
            k["flops"] += r.flops
            k["est_seconds"] += r.est_seconds
            if r.measured_seconds is not None:
                k["measured_seconds"] = (k["measured_seconds"] or 0.0) + r.measured_seconds
        tp, tm, tf, te = self.params, self.macs, self.flops, self.est_seconds
        for k in out.values():
            k["params_share"] = k["params"] / tp if tp else 0.0
            k["macs_share"] = k["macs"] / tm if tm else 0.0
            k["flops_share"] = k["flops"] / tf if tf else 0.0
            k["est_share"] = k["est_seconds"] / te if te else 0.0
        return dict(sorted(out.items(), key=lambda kv: (-kv[1]["macs"], -kv[1]["flops"], kv[0])))

    def group(self, depth: int = 1) -> dict[str, dict[str, Any]]:
        """Totals per block: layers grouped by the first ``depth`` parts of their dotted name."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        out: dict[str, dict[str, Any]] = {}
        for r in self.layers:
            key = ".".join(r.name.split("#")[0].split(".")[:depth])
            g = out.setdefault(key, {"layers": 0, "params": 0, "macs": 0, "flops": 0, "est_seconds": 0.0})
            g["layers"] += 1
            g["params"] += r.unique_params
            g["macs"] += r.macs
            g["flops"] += r.flops
            g["est_seconds"] += r.est_seconds
        return out

    # ---- output

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as plain JSON types."""
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "device": self.device,
            "convention": {
                "mac_flops": 2,
                "count_bias": self.count_bias,
                "text": self.convention(),
                "kinds": dict(KINDS),
            },
            "machine": self.peaks.to_dict(),
            "totals": {
                "params": self.params,
                "model_params": self.model_params,
                "excluded_bias_params": self.excluded_bias_params,
                "macs": self.macs,
                "flops": self.flops,
                "activation_bytes": self.activation_bytes,
                "est_seconds": self.est_seconds,
                "measured_seconds": self.measured_seconds,
                "forward_seconds": self.forward_seconds,
                "repeats": self.repeats,
            },
            "by_kind": self.by_kind(),
            "layers": [r.to_dict() for r in self.layers],
            "not_counted": dict(self.not_counted),
            "unattributed_params": dict(self.unattributed_params),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    _CSV_FIELDS = (
        "name", "kind", "type", "input_shapes", "output_shape", "kernel", "stride", "padding", "dilation",
        "groups", "params", "unique_params", "macs", "flops", "weight_bytes", "input_bytes", "output_bytes",
        "intensity", "est_seconds", "measured_seconds", "rule",
    )

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """One row per layer call, raw numbers (MACs, FLOPs, bytes, seconds); written atomically."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self._CSV_FIELDS)
        for r in self.layers:
            d = r.to_dict()
            row = []
            for key in self._CSV_FIELDS:
                v = d[key]
                if key == "input_shapes":
                    v = " ".join(_dims(s) for s in v)
                elif isinstance(v, list):
                    v = _dims(v)
                row.append("" if v is None else v)
            w.writerow(row)
        out = Path(path)
        atomic_write(out, buf.getvalue().encode())
        return out

    def table(self) -> str:
        """The report as text: header with conventions, one line per layer, totals, kinds."""
        measured = any(r.measured_seconds is not None for r in self.layers)
        head = ["#", "layer", "kind", "output", "k/s/g", "params", "MACs", "FLOPs", "out bytes", "FLOP/B",
                "est"] + (["measured"] if measured else [])
        rows: list[list[str]] = []
        for i, r in enumerate(self.layers):
            ksg = "-"
            if r.kernel is not None:
                ksg = _dims(r.kernel)
                if r.stride is not None:
                    ksg += "/" + _dims(r.stride)
                if r.groups is not None:
                    ksg += f"/{r.groups}"
            params = _si(r.params) + ("*" if r.params and not r.unique_params else "")
            rows.append([
                str(i), r.name, r.kind, _dims(r.output_shape), ksg, params, _si(r.macs), _si(r.flops),
                _si(r.output_bytes, "B"), "-" if r.intensity is None else f"{r.intensity:.3g}",
                _seconds(r.est_seconds),
            ] + ([_seconds(r.measured_seconds)] if measured else []))
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        widths[1] = min(widths[1], 44)
        left = {1, 2, 3, 4}

        def line(cells: list[str]) -> str:
            parts = []
            for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
                if len(c) > w:
                    c = "..." + c[-(w - 3):]
                parts.append(c.ljust(w) if i in left else c.rjust(w))
            return "  ".join(parts).rstrip()

        p = self.peaks
        out = [
            f"cost of {self.model} on input {_dims(self.input_shape)} ({self.dtype}, {self.device})",
            f"convention: {self.convention()}",
            f"roofline: {p.gemm_gflops:g} GFLOP/s float32 GEMM peak ({p.gemm_by}), "
            f"{p.bandwidth_gbs:g} GB/s memory bandwidth "
            f"({p.name}, {p.threads} threads, measured {p.measured_at})",
            "",
            line(head),
            line(["-" * w for w in widths]),
        ]
        out += [line(r) for r in rows]
        out.append("")
        out.append(
            f"total: {self.params:,} params ({_si(self.params)}), {self.macs:,} MACs "
            f"({_si(self.macs)} MACs = "
            f"{_si(2 * self.macs)} FLOPs), {_si(self.flops)} FLOPs with other ops, "
            f"{_si(self.activation_bytes, 'B')} of activations written, roofline estimate "
            f"{_seconds(self.est_seconds)}"
        )
        if measured:
            out.append(
                f"measured (median of {self.repeats} runs): layers sum {_seconds(self.measured_seconds)}, "
                f"whole forward pass {_seconds(self.forward_seconds)}"
            )
        if any(r.params and not r.unique_params for r in self.layers):
            out.append("* parameters shared with an earlier row (a module called again), counted once")
        if self.excluded_bias_params:
            out.append(f"bias parameters left out by the switch: {self.excluded_bias_params:,}")
        out.append(f"parameters in the model: {self.model_params:,}")
        if self.unattributed_params:
            items = ", ".join(f"{n} ({v:,})" for n, v in self.unattributed_params.items())
            out.append(f"parameters used by no counted layer (not in the total): {items}")
        out.append("")
        out.append("by kind:       calls    params  share      MACs  share     FLOPs    est  share")
        for kind, k in self.by_kind().items():
            out.append(
                f"  {kind:<14}{k['layers']:>4}  {_si(k['params']):>8}  {k['params_share']:>5.1%}  "
                f"{_si(k['macs']):>8}  {k['macs_share']:>5.1%}  {_si(k['flops']):>8}  {k['est_share']:>5.1%}"
            )
        if self.not_counted:
            items = ", ".join(f"{n}" + (f" (x{c})" if c > 1 else "") for n, c in self.not_counted.items())
            out.append(f"not counted (no rule; not in any total): {items}")
        else:
            out.append("not counted: nothing (every operation that produced a tensor has a rule)")
        return "\n".join(out) + "\n"

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | os.PathLike[str], *, top: int = 40) -> Path:
        """A PNG of where the MACs go: the ``top`` layers by MACs, and the share of each kind."""
        from .plot import plot_report

        return plot_report(self, path, top=top)
