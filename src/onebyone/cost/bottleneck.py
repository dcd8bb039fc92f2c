"""The Inception question: a kxk convolution against a 1x1 reduction followed by the kxk, in
parameters and MACs (:func:`bottleneck_cost`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .rows import _CONVENTION
from .text import _si


@dataclass(frozen=True)
class BottleneckCost:
    """A kxk convolution C -> K, against a 1x1 reduction C -> R followed by the kxk R -> K.

    Both keep H x W ("same" padding); counts are per image, weights only (no bias).
    """

    in_channels: int
    out_channels: int
    reduce_channels: int
    kernel_size: int
    height: int
    width: int

    @property
    def direct_params(self) -> int:
        return self.kernel_size**2 * self.in_channels * self.out_channels

    @property
    def direct_macs(self) -> int:
        return self.height * self.width * self.direct_params

    @property
    def reduce_params(self) -> int:
        return self.in_channels * self.reduce_channels

    @property
    def reduce_macs(self) -> int:
        return self.height * self.width * self.reduce_params

    @property
    def conv_params(self) -> int:
        return self.kernel_size**2 * self.reduce_channels * self.out_channels

    @property
    def conv_macs(self) -> int:
        return self.height * self.width * self.conv_params

    @property
    def bottleneck_params(self) -> int:
        return self.reduce_params + self.conv_params

    @property
    def bottleneck_macs(self) -> int:
        return self.reduce_macs + self.conv_macs

    @property
    def macs_ratio(self) -> float:
        """How many times fewer MACs the bottleneck needs."""
        return self.direct_macs / self.bottleneck_macs

    @property
    def params_ratio(self) -> float:
        return self.direct_params / self.bottleneck_params

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        for key in ("direct_params", "direct_macs", "reduce_params", "reduce_macs", "conv_params",
                    "conv_macs", "bottleneck_params", "bottleneck_macs", "macs_ratio", "params_ratio"):
            d[key] = getattr(self, key)
        d["convention"] = f"{_CONVENTION}; weights only, bias not counted; per image; 'same' padding"
        return d

    def __str__(self) -> str:
        k, c, r, o = self.kernel_size, self.in_channels, self.reduce_channels, self.out_channels
        hw = f"{self.height}x{self.width}"
        rows = [
            (f"{k}x{k} conv {c} -> {o}", self.direct_params, self.direct_macs),
            (f"1x1 reduce {c} -> {r}", self.reduce_params, self.reduce_macs),
            (f"{k}x{k} conv {r} -> {o}", self.conv_params, self.conv_macs),
            ("1x1 reduce + conv", self.bottleneck_params, self.bottleneck_macs),
        ]
        lines = [
            f"the Inception question on a {hw}x{c} input: {k}x{k} convolution to {o} maps, directly or after "
            f"a 1x1 reduction to {r}",
            f"convention: {_CONVENTION}; weights only, bias not counted; per image; padding keeps {hw}",
            "",
            f"{'':<24}{'params':>12}{'MACs':>16}",
        ]
        for label, p, m in rows:
            lines.append(f"{label:<24}{p:>12,}{m:>16,}" + (f"   ({_si(m)} MACs)" if m else ""))
        lines.append("")
        lines.append(
            f"the 1x1 reduction needs {self.macs_ratio:.2f}x fewer MACs "
            f"({_si(self.direct_macs)} -> {_si(self.bottleneck_macs)}) and {self.params_ratio:.2f}x fewer "
            f"parameters ({self.direct_params:,} -> {self.bottleneck_params:,})"
        )
        return "\n".join(lines) + "\n"


def bottleneck_cost(
    in_channels: int, out_channels: int, reduce_channels: int, kernel_size: int, size: int | Sequence[int]
) -> BottleneckCost:
    """Params and MACs of a kxk convolution with and without a 1x1 reduction in front.

    ``bottleneck_cost(192, 32, 16, 5, 28)`` is the Inception example: 5x5 convolutions
    from 192 to 32 maps on 28x28 cost 120 million MACs directly, 12.4 million after a
    1x1 reduction to 16 maps.

    Args:
        in_channels: C, maps coming in.
        out_channels: K, maps the kxk convolution makes.
        reduce_channels: R, maps the 1x1 reduction leaves.
        kernel_size: k, the side of the square kernel.
        size: H x W of the maps (an int for a square, or (H, W)).
    """
    for label, value in (("in_channels", in_channels), ("out_channels", out_channels),
                         ("reduce_channels", reduce_channels), ("kernel_size", kernel_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    hw = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if not isinstance(hw, (list, tuple)) or len(hw) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw
    ):
        raise ValueError(f"size must be a positive int or an (H, W) pair of positive ints, got {size!r}")
    return BottleneckCost(in_channels, out_channels, reduce_channels, kernel_size, int(hw[0]), int(hw[1]))
