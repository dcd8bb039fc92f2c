""":func:`cost`: the model run once under the tracer (and timed with ``measure``), each row put
on this machine's roofline, the parameters no row used listed."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..machine import Peaks, peaks, roofline_seconds
from .report import CostReport
from .text import _dims, _one_line
from .tracer import _Tracer


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check_size(input_size: Any) -> tuple[int, ...]:
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size,)
    if not isinstance(input_size, (tuple, list, torch.Size)) or not input_size or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_size
    ):
        raise ValueError(
            f"input_size must be a sequence of positive ints such as (3, 224, 224), got {input_size!r}"
        )
    return tuple(int(d) for d in input_size)


def cost(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    batch_size: int = 1,
    count_bias: bool = True,
    measure: bool = False,
    repeats: int = 5,
    device: str | torch.device | None = None,
    limits: Peaks | None = None,
    name: str | None = None,
    progress: bool = False,
) -> CostReport:
    """Count what one forward pass of ``model`` costs, layer call by layer call.

    Args:
        model: any ``nn.Module``; it runs once (``1 + repeats`` more times with ``measure``)
            in eval mode without autograd, and its train/eval flags are restored after.
        input_size: one sample's shape without the batch, e.g. ``(3, 224, 224)``.
        batch_size: samples per forward pass; every count is for the whole batch.
        count_bias: count the bias of convolutions and linear layers (parameters, and one
            FLOP per output element for its adds). MACs never include it.
        measure: also time every layer call (median of ``repeats`` runs, after one warm-up)
            and the whole forward pass.
        repeats: timed runs per layer with ``measure``.
        device: where to run; None means where the model's parameters are. A model on
            another device is refused rather than moved. A model on ``"meta"`` (built
            under ``torch.device("meta")`` or moved with ``model.to("meta")``) is counted
            from shapes alone, in no time and memory, without ``measure``.
        limits: the machine's peaks for the roofline; None reads them from the cache
            (measuring them once, a few seconds, if needed).
        name: the model's name in the report (default: its class name).
        progress: show a progress bar over the timed runs (stderr).

    Returns:
        A :class:`CostReport`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a bad size, batch or device, or the model fails on the input (the
            message carries the model's error in one line).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cost expects an nn.Module, got {type(model).__name__}")
    size = _check_size(input_size)
    for label, value in (("batch_size", batch_size), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    here = _model_device(model)
    dev = here if device is None else torch.device(device)
    other_index = dev.index is not None and here.index is not None and dev.index != here.index
    if dev.type != here.type or other_index:
        raise ValueError(
            f"the model is on {here} but device={str(dev)!r} was asked for; move it with model.to()"
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    dtype = _model_dtype(model)
    if dev.type == "meta":
        # shapes without data: every count is exact, nothing is computed, nothing can be timed
        if measure:
            raise ValueError("measure=True needs a real device; a model on 'meta' has no data to time")
        x = torch.empty((batch_size, *size), device=dev, dtype=dtype)
    else:
        gen = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn((batch_size, *size), generator=gen, device=dev, dtype=dtype)
    label = name or type(model).__name__

    modes = {m: m.training for m in model.modules()}
    tracer = _Tracer(model, count_bias, dev)
    forward_times: list[float] = []
    try:
        model.eval()
        with torch.no_grad():
            try:
                with tracer:
                    model(x)
            except Exception as exc:  # the model's own error, in one line, with the input it got
                raise ValueError(f"{label} failed on input {_dims(x.shape)}: {_one_line(exc)}") from exc
            if measure:
                passes = range(repeats + 1)
                if progress:
                    from tqdm import tqdm

                    passes = tqdm(passes, desc="timing layers", unit="pass", file=sys.stderr, leave=False)
                for i in passes:
                    tracer.start_pass("time")
                    with tracer:
                        model(x)
                    if i == 0:  # warm-up: first calls allocate and pick kernels
                        tracer.times.clear()
                tracer.remove()
                model(x)
                for _ in range(repeats):
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t0 = time.perf_counter()
                    model(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    forward_times.append(time.perf_counter() - t0)
    finally:
        tracer.remove()
        for m, training in modes.items():
            m.train(training)

    lim = limits if limits is not None else peaks(dev if dev.type != "meta" else "cpu")
    for r in tracer.rows:
        moved = r.bytes_moved
        r.intensity = r.flops / moved if moved else None
        r.est_seconds = roofline_seconds(r.flops, moved, lim)
        if measure:
            samples = tracer.times.get(r.name)
            r.measured_seconds = statistics.median(samples) if samples else None

    named = dict(model.named_parameters())
    used = tracer.seen_params | tracer.excluded_bias
    unattributed = {n: p.numel() for n, p in named.items() if id(p) not in used}
    excluded = sum(p.numel() for p in named.values() if id(p) in tracer.excluded_bias)
    return CostReport(
        model=label,
        input_shape=list(x.shape),
        dtype=str(dtype).replace("torch.", ""),
        device=str(dev),
        count_bias=count_bias,
        peaks=lim,
        layers=tracer.rows,
        not_counted=dict(tracer.not_counted),
        unattributed_params=unattributed,
        excluded_bias_params=excluded,
        model_params=sum(p.numel() for p in named.values()),
        repeats=repeats if measure else None,
        forward_seconds=statistics.median(forward_times) if forward_times else None,
    )
