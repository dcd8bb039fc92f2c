"""The tracer: forward hooks on every module plus a ``TorchFunctionMode`` for every torch function
called outside a known module; one row per layer call ("trace"), or the same calls timed ("time")."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .functions import _CREATION_FUNCS, _MAYBE_COPY_FUNCS, _VIEW_FUNCS, _arg, _base_name, _count_function
from .modules import _KNOWN_MODULES, _count_module
from .rows import LayerCost, _Count


def _tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a (nested) tuple/list/dict, in order."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class _Tracer(TorchFunctionMode):
    """Forward hooks on every module plus a function mode for what runs outside known modules.

    In "trace" mode each layer call becomes a LayerCost; in "time" mode the same calls
    are timed and the seconds appended to ``times[name]``.
    """

    def __init__(self, model: nn.Module, count_bias: bool, device: torch.device) -> None:
        super().__init__()
        self.count_bias = count_bias
        self.device = device
        self.names: dict[int, str] = {}
        self.param_names: dict[int, str] = {}
        self.weight_ids: set[int] = set()  # parameters and buffers: weights, not activations
        for name, p in model.named_parameters():
            self.param_names[id(p)] = name
            self.weight_ids.add(id(p))
        for _, b in model.named_buffers():
            self.weight_ids.add(id(b))
        self.mode = "trace"
        self.rows: list[LayerCost] = []
        self.seen_params: set[int] = set()
        self.excluded_bias: set[int] = set()
        self.not_counted: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.calls: Counter[str] = Counter()
        self.owners: list[str] = []  # module paths being run, innermost last
        self.known_depth = 0  # > 0 while inside a known module: its insides are not looked at
        self.starts: list[float] = []
        self.busy = False  # our own tensor calls inside hooks are not the model's
        # views of weights (w.t(), w.view(...)) made during the pass, kept alive so ids stay unique
        self.aliases: dict[int, tuple[Tensor, Tensor]] = {}
        self.handles: list[Any] = []
        for name, m in model.named_modules():
            self.names[id(m)] = name
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post, with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def start_pass(self, mode: str) -> None:
        self.mode = mode
        self.calls.clear()
        self.owners.clear()
        self.known_depth = 0
        self.starts.clear()
        self.aliases.clear()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _call_name(self, base: str) -> str:
        self.calls[base] += 1
        k = self.calls[base]
        return base if k == 1 else f"{base}#{k}"

    # ---- module hooks

    def _pre(self, m: nn.Module, args: Any, kwargs: Any) -> None:
        self.busy = True
        try:
            self.owners.append(self.names.get(id(m), type(m).__name__))
            if isinstance(m, _KNOWN_MODULES):
                self.known_depth += 1
                if self.known_depth == 1 and self.mode == "time":
                    self._sync()
                    self.starts.append(time.perf_counter())
        finally:
            self.busy = False

    def _post(self, m: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        self.busy = True
        try:
            owner = self.owners.pop()
            if not isinstance(m, _KNOWN_MODULES):
                return
            self.known_depth -= 1
            if self.known_depth > 0:
                return  # a known module inside a known module: the outer one is the row
            name = self._call_name(owner or type(m).__name__)
            if self.mode == "time":
                self._sync()
                self.times.setdefault(name, []).append(time.perf_counter() - self.starts.pop())
                return
            inputs = list(_tensors((args, kwargs)))
            outputs = list(_tensors(output))
            if not inputs or not outputs:
                self.not_counted[f"{name} ({type(m).__name__} without tensor input or output)"] += 1
                return
            count = _count_module(m, inputs[0], outputs[0])
            weights = [(n, t) for n, t in m.named_parameters()] + [(n, t) for n, t in m.named_buffers()]
            is_conv_or_linear = count.kind in ("conv1x1", "conv", "depthwise", "grouped", "conv_transpose",
                                               "linear")
            bias = getattr(m, "bias", None) if is_conv_or_linear else None
            self._record(name, type(m).__name__, count, inputs, [t for _, t in weights], outputs, bias)
        finally:
            self.busy = False

    # ---- functions outside known modules

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if self.busy or self.known_depth > 0:
            return func(*args, **kwargs)
        base = _base_name(func)
        if base in _CREATION_FUNCS:
            return func(*args, **kwargs)
        if base in _VIEW_FUNCS:
            out = func(*args, **kwargs)
            weight = next((w for w in map(self._weight, _tensors((args, kwargs))) if w is not None), None)
            if weight is not None:
                for t in _tensors(out):
                    self.aliases[id(t)] = (t, weight)
            return out
        timing = self.mode == "time"
        if timing:
            self._sync()
            t0 = time.perf_counter()
        out = func(*args, **kwargs)
        if timing:
            self._sync()
            seconds = time.perf_counter() - t0
        outputs = list(_tensors(out))
        if base == "numpy" and not timing:
            # the data leaves PyTorch (onebyone.conv1x1 may multiply with NumPy's BLAS): what
            # NumPy computes is invisible here, so say so rather than count it as nothing
            owner = self.owners[-1] if self.owners else ""
            self.not_counted[f"{owner + '.' if owner else ''}numpy (work done in NumPy)"] += 1
        if not outputs:
            return out  # metadata (size, dim, shape, item...): no tensor, no work
        if base in _MAYBE_COPY_FUNCS and args and outputs[0] is args[0]:
            return out  # already contiguous / of that dtype: nothing was done
        owner = self.owners[-1] if self.owners else ""
        name = self._call_name(f"{owner}.{base}" if owner else base)
        if timing:
            self.times.setdefault(name, []).append(seconds)
            return out
        inputs: list[Tensor] = []
        weights: list[Tensor] = []
        for t in _tensors((args, kwargs)):
            w = self._weight(t)
            if w is None:
                inputs.append(t)
            elif all(w is not seen for seen in weights):
                weights.append(w)
        count = _count_function(base, args, kwargs, inputs, outputs[0])
        if count is None:
            self.not_counted[name] += 1
            return out
        bias = None
        if count.kind in ("conv1x1", "conv", "depthwise", "grouped", "conv_transpose", "linear"):
            bias = _arg(args, kwargs, 2, "bias")
        self._record(name, base, count, inputs, weights, outputs, bias)
        return out

    def _weight(self, t: Tensor) -> Tensor | None:
        """The parameter or buffer ``t`` is, or is a view of; None for an activation."""
        if id(t) in self.weight_ids:
            return t
        alias = self.aliases.get(id(t))
        return alias[1] if alias is not None and alias[0] is t else None

    # ---- one row

    def _record(self, name: str, type_name: str, count: _Count, inputs: list[Tensor], weights: list[Tensor],
                outputs: list[Tensor], bias: Tensor | None) -> None:
        params = unique = 0
        for t in weights:
            if not isinstance(t, nn.Parameter):
                continue
            if t is bias and not self.count_bias:
                self.excluded_bias.add(id(t))
                continue
            params += t.numel()
            if id(t) not in self.seen_params:
                self.seen_params.add(id(t))
                unique += t.numel()
        ops = count.ops + (count.bias_adds if self.count_bias else 0)
        rule = count.rule
        if count.bias_adds:
            rule += "; bias adds: " + ("1 FLOP per output element" if self.count_bias else "not counted")
        row = LayerCost(
            name=name, kind=count.kind, type=type_name,
            input_shapes=[list(t.shape) for t in inputs], output_shape=list(outputs[0].shape),
            kernel=list(count.kernel) if count.kernel is not None else None,
            stride=list(count.stride) if count.stride is not None else None,
            padding=list(count.padding) if count.padding is not None else None,
            dilation=list(count.dilation) if count.dilation is not None else None,
            groups=count.groups, params=params, unique_params=unique, macs=count.macs,
            flops=2 * count.macs + ops, weight_bytes=sum(_nbytes(t) for t in weights),
            input_bytes=sum(_nbytes(t) for t in inputs), output_bytes=sum(_nbytes(t) for t in outputs),
            rule=rule,
        )
        self.rows.append(row)
