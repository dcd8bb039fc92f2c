"""What a row is: the kinds a row can have (:data:`KINDS`), one layer call's counts
(:class:`LayerCost`), and what a counting rule hands the tracer (``_Count``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Every kind a row can have, with how its arithmetic is counted.
KINDS: dict[str, str] = {
    "conv1x1": "pointwise convolution (1x1 kernel, any groups): MACs = output elements x C/groups",
    "conv": "convolution: MACs = output elements x C/groups x kernel area (padding positions included)",
    "depthwise": "depthwise convolution (groups = C): MACs = output elements x kernel area",
    "grouped": "grouped convolution: MACs = output elements x C/groups x kernel area",
    "conv_transpose": "transposed convolution: MACs = input elements x K/groups x kernel area",
    "linear": "linear layer on any number of leading dims: MACs = output elements x in_features",
    "matmul": "matrix product: MACs = output elements x the contracted length",
    "pool": "pooling: 1 op per window element per output element (adaptive windows counted exactly)",
    "norm": "normalisation: ops per element as the row's rule says",
    "activation": "activation: 1 op per element (softmax and log-softmax: 3)",
    "dropout": "dropout: identity at inference, 0 ops",
    "elementwise": "element-wise arithmetic: 1 op per output element",
    "reduction": "reduction (sum, mean, max...): 1 op per input element",
    "concat": "copy (cat, stack, pad, clone...): 0 ops, bytes only",
    "reshape": "flatten / identity: 0 ops, bytes only",
}

_CONVENTION = "1 MAC (multiply-add) = 2 FLOPs; MACs count weight x activation products only"


@dataclass
class LayerCost:
    """One layer call. Counts are for the whole batch; ``rule`` says how they were made."""

    name: str  # module path, "#k" for its k-th call; "<module>.<function>" for a function
    kind: str  # one of KINDS
    type: str  # module class or function name
    input_shapes: list[list[int]]
    output_shape: list[int]
    kernel: list[int] | None = None
    stride: list[int] | None = None
    padding: list[int] | None = None
    dilation: list[int] | None = None
    groups: int | None = None
    params: int = 0  # parameters this layer uses (bias per the switch)
    unique_params: int = 0  # of those, the ones no earlier row used (shared modules count once)
    macs: int = 0
    flops: int = 0  # 2 x MACs + other ops (+ bias adds when counted)
    weight_bytes: int = 0  # parameters and buffers read
    input_bytes: int = 0
    output_bytes: int = 0  # activation memory written
    intensity: float | None = None  # FLOPs per byte moved (weights + input + output)
    est_seconds: float = 0.0  # roofline lower bound
    measured_seconds: float | None = None  # median over repeats, with measure=True
    rule: str = ""

    @property
    def bytes_moved(self) -> int:
        return self.weight_bytes + self.input_bytes + self.output_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Count:
    """What a counting rule finds; the tracer adds shapes, bytes and parameters."""

    kind: str
    macs: int = 0
    ops: int = 0  # arithmetic other than MACs, in FLOPs
    bias_adds: int = 0  # 1 FLOP per output element when a bias is present
    rule: str = ""
    kernel: Sequence[int] | None = None
    stride: Sequence[int] | None = None
    padding: Sequence[int] | None = None
    dilation: Sequence[int] | None = None
    groups: int | None = None
