"""Pre-tune a model: every 1x1 layer's passes measured (or read from the cache) before real work.

``tune(model, (C, H, W))`` runs the model (forward, and backward with ``train``) on a copy whose
1x1 ``nn.Conv2d`` layers are ``Conv1x1``: conv1x1 times every candidate of every pass it has not
seen on this machine and keeps the fastest in its cache (ops/cache.py), running again while close
candidates are tried on whole calls (at most ten runs), so that later processes, and the user's
own run, start with the choices made. The report says, per layer and
pass, what was chosen, by how much it beat the runner-up, and whether it was measured now or read.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from . import ops
from .layers import Conv1x1, convert
from .ops import choice
from .ops.cache import CACHE, key_text
from .ops.checks import _is_channels_last, _pair
from .ops.choice import choice_key

__all__ = ["TuneReport", "TuneRow", "tune"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TuneRow:
    layer: str
    pass_: str
    shape: str  # N x C x H x W -> K, stride, groups
    chosen: str
    runner_up: str | None
    speedup: float | None  # runner-up's time / the chosen one's
    source: str  # "measured", "cache", "pinned", "only candidate" or "not timed" (a long training step)


@dataclass
class TuneReport:
    model: str
    input_shape: list[int]
    dtype: str
    layout: str
    train: bool
    cache: str
    rows: list[TuneRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    def __str__(self) -> str:
        head = (f"{self.model} on {'x'.join(map(str, self.input_shape))} {self.dtype} {self.layout}"
                f"{', training' if self.train else ''}: {len(self.rows)} passes of "
                f"{len({r.layer for r in self.rows})} 1x1 layers (cache: {self.cache})\n")
        cols = ("layer", "pass", "shape", "chosen", "runner-up", "faster by", "from")
        table = [cols] + [
            (r.layer, r.pass_, r.shape, r.chosen, r.runner_up or "-",
             "-" if r.speedup is None else f"{r.speedup:.2f}x", r.source)
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table]
        return head + "\n".join(lines) + "\n"


def tune(
    model: nn.Module,
    input_size: tuple[int, int, int],
    *,
    batch: int = 1,
    train: bool = False,
    dtype: str | torch.dtype = "float32",
    channels_last: bool = False,
    threads: int | None = None,
    name: str | None = None,
) -> TuneReport:
    """Measure (or read) conv1x1's choice for every pass of every 1x1 layer of ``model``.

    The model is left untouched (a converted copy runs). ``dtype`` is "float32", "bfloat16" or
    "float16"; ``train`` adds the backward passes of a training step; ``threads`` (default: torch's
    current count) is part of every key, so tune with the count the real run will use (``onebyone
    train`` uses 1 unless told otherwise). Measures whatever the policy (:func:`ops.set_backend`) is.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        dtype = _DTYPES[dtype]
    if len(input_size) != 3 or any(int(v) < 1 for v in input_size):
        raise ValueError(f"input_size must be (C, H, W) of positive sizes, got {tuple(input_size)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    net = convert(copy.deepcopy(model)).to(dtype).eval()
    if channels_last:  # as a channels_last run converts its model: its other layers keep the layout
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    layers = {m: n or type(model).__name__ for n, m in net.named_modules() if isinstance(m, Conv1x1)}
    if not layers:
        raise ValueError(f"{name or type(model).__name__} has no 1x1 convolution to tune")
    # each layer's input as the op saw it: its layout too (a model may turn channels_last input NCHW)
    seen: list[tuple[str, tuple[int, ...], Conv1x1, bool]] = []
    hooks = [m.register_forward_pre_hook(
        lambda m, a: seen.append((layers[m], tuple(a[0].shape), m, _is_channels_last(a[0])))) for m in layers]
    before = CACHE.keys()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, *input_size, dtype=dtype).contiguous(memory_format=fmt)
    threads_before = torch.get_num_threads()
    policy = ops.set_backend("auto")
    try:
        torch.set_num_threads(threads or threads_before)
        # again while a pass is on trial (its close candidates tried on whole calls, ops/choice.py),
        # and in training once more after: a step's choice waits until its passes settle (ops/step.py)
        settled = 0
        for step in range(2 + choice._TRIAL_CALLS * choice._MAX_CONTENDERS):
            if step and not choice._trials:
                settled += 1
                if settled > train:
                    break
            with torch.set_grad_enabled(train):
                out = net(x)
                if train:
                    outs = [out] if isinstance(out, torch.Tensor) else list(out)
                    torch.stack([o.float().sum() for o in outs]).sum().backward()
            if step == 0:  # the first run saw every layer
                for h in hooks:
                    h.remove()
        report = _report(name or type(model).__name__, batch, input_size, dtype, channels_last, train, seen,
                         before)
    finally:
        for h in hooks:
            h.remove()
        ops.set_backend(policy)
        torch.set_num_threads(threads_before)
    return report


def _report(model: str, batch: int, input_size: tuple[int, int, int], dtype: torch.dtype, channels_last: bool,
            train: bool, seen: list[tuple[str, tuple[int, ...], Conv1x1, bool]], before: set[str]
            ) -> TuneReport:
    """The rows of every pass the run saw (call while the thread count of the run holds: it is part
    of every key)."""
    report = TuneReport(model, [batch, *input_size], str(dtype).removeprefix("torch."),
                        "channels_last" if channels_last else "nchw", train, ops.choices_path())
    chosen, timings = ops.chosen_backends(), ops.choice_timings()
    for layer, shape, m, layer_cl in seen:
        training = ["grad_input", "grad_weight", "backward", "step", "step_weight"]
        passes = ["forward"] + (training if train else [])
        stride = _pair(m.stride, "stride")
        for pass_ in passes:
            key = choice_key(pass_, layer_cl, shape, m.out_channels, stride, m.groups, dtype)
            desc = f"{'x'.join(map(str, shape))}->{m.out_channels}"
            if layer_cl != channels_last:  # the layer ran in the other layout
                desc += " channels_last" if layer_cl else " nchw"
            desc += f" s{stride[0]}x{stride[1]}" if stride != (1, 1) else ""
            desc += f" g{m.groups}" if m.groups != 1 else ""
            if key not in chosen:
                if pass_ in ("forward", "grad_weight"):
                    report.rows.append(TuneRow(layer, pass_, desc, "torch", None, None, "only candidate"))
                continue  # grad_input of a first layer, a backward with one library: not run
            seconds = timings.get(key, {})
            ranked = sorted((s, n) for n, s in seconds.items() if n != chosen[key])
            runner = ranked[0][1] if ranked else None
            mine = seconds.get(chosen[key])
            speedup = ranked[0][0] / mine if ranked and mine else None
            text = key_text(key)
            # "not timed": a training step too long for the budget, kept on the op (ops/step.py)
            source = ("cache" if text in before else "measured" if seconds
                      else "pinned" if text in choice._pins else "not timed")
            report.rows.append(TuneRow(layer, pass_, desc, chosen[key], runner, speedup, source))
    return report
