"""Which library runs each pass: measured on this machine, on first sight of each key, and kept.

Every pass (forward, grad_input, grad_weight, and both gradients at once) of every key (layout,
shape, output channels, stride, groups, dtype, threads) runs each candidate that is correct for it
(candidates.py), interleaved, within a budget of TIMING_BUDGET seconds, and keeps the one with the
least median time; cache.py keeps the choices on disk for this machine, so a second process starts
with them. Nothing here knows which library wins where: that is measured, not fitted.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from .cache import CACHE, Key, key_text

#: The policies: "auto" measures; "fixed" never does (onebyone's kernels wherever they apply, else
#: PyTorch's BLAS: the same libraries on every machine); the others force one where it applies.
BACKENDS = ("auto", "fixed", "torch", "numpy", "onednn", "native")

#: Seconds a new key may spend timing its candidates, all of them together.
TIMING_BUDGET = 0.05
# A candidate within this share of the fastest counts as tied, and a tie goes to the earlier one
# in the candidates' order (PyTorch's BLAS first): timing noise, not a constant of any machine.
_TIE = 1.02
_MAX_ROUNDS = 9

_policy = "auto"
_choices: dict[Key, str] = {}
_pins: dict[str, str] = {}
_timings: dict[Key, dict[str, float]] = {}
_lock = threading.Lock()
R = TypeVar("R")


def set_backend(name: str = "auto") -> str:
    """Choose how conv1x1 picks the library for CPU tensors; returns the previous policy.

    ``"auto"`` (the default) times every candidate that is correct for a pass on the first call of
    each key (layout, shape, stride, groups, dtype, threads), within 50 ms, and keeps the fastest,
    on disk too (:func:`choices_path`). ``"fixed"`` never times: onebyone's own kernels wherever
    they apply, PyTorch's BLAS elsewhere (or what :func:`pin_choices` pinned). ``"torch"``,
    ``"numpy"``, ``"onednn"`` or ``"native"`` force one library wherever it applies, PyTorch's BLAS
    elsewhere. CUDA tensors always run on PyTorch's own kernels.
    """
    global _policy
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    with _lock:
        before, _policy = _policy, name
        _choices.clear()
    return before


def chosen_backends() -> dict[Key, str]:
    """The library chosen so far in this process for each key (measured now, read from the cache
    or pinned)."""
    return dict(_choices)


def choice_timings() -> dict[Key, dict[str, float]]:
    """Seconds each candidate took (median of the rounds) for each key timed or read from the cache."""
    return {k: dict(v) for k, v in _timings.items()}


def choices_path() -> str:
    """The file that keeps this machine's measured choices."""
    from .cache import cache_path

    return str(cache_path())


def clear_choices(*, disk: bool = False) -> None:
    """Forget every choice and pin in this process; with ``disk``, delete this machine's cache file."""
    with _lock:
        _choices.clear()
        _timings.clear()
        _pins.clear()
    CACHE.clear(disk=disk)


def pin_choices(choices: Mapping[Any, str]) -> None:
    """Use these choices (key -> library, as :func:`chosen_backends` gives them, or their text
    form 'forward|nchw|...') without timing; a pin whose library does not apply is ignored."""
    names = set(BACKENDS[2:]) | {"native_turned", "passes"}
    for key, name in choices.items():
        if name not in names:
            raise ValueError(f"pin {key!r}: library must be one of {sorted(names)}, got {name!r}")
    with _lock:
        _pins.update({k if isinstance(k, str) else key_text(k): v for k, v in choices.items()})
        _choices.clear()


def choice_key(pass_: str, channels_last: bool, x_shape: Sequence[int], k: int, stride: tuple[int, int],
               groups: int, dtype: torch.dtype) -> Key:
    """The key a pass's choice is kept under."""
    n, c, h, w = x_shape
    return (pass_, "channels_last" if channels_last else "nchw", n, c, h, w, k, stride[0], stride[1],
            groups, str(dtype).removeprefix("torch."), torch.get_num_threads())


def _untimed(names: Sequence[str]) -> str:
    if _policy in names:
        return _policy
    if _policy == "fixed":
        return next((n for n in ("native", "passes") if n in names), names[0])
    return names[0]


def decide(
    key: Key,
    names: Sequence[str],
    run: Callable[..., object],
    args: tuple[Any, ...],
    batched: tuple[bool, ...],
) -> str:
    """The library for this key: pinned, remembered, read from the cache, or timed now.

    ``run(name, *args)`` runs a candidate; the arguments marked in ``batched`` are sliced along the
    batch when a whole call would not fit the budget.
    """
    if len(names) == 1:
        return names[0]
    chosen = _choices.get(key)
    if chosen is not None:
        return chosen
    text = key_text(key)
    pinned = _pins.get(text)
    if pinned is not None and pinned in names:
        _choices[key] = pinned
        return pinned
    if _policy != "auto":
        return _untimed(names)
    entry = CACHE.load().get(text)
    if entry is not None and entry["choice"] in names:
        _timings[key] = dict(entry.get("seconds") or {})
        _choices[key] = entry["choice"]
        return entry["choice"]
    seconds, images = _time(names, run, args, batched)
    fastest = min(seconds.values())
    chosen = next(n for n in names if seconds[n] <= _TIE * fastest)
    _choices[key], _timings[key] = chosen, seconds
    CACHE.record(key, chosen, seconds, images)
    return chosen


def _sliced(args: tuple[Any, ...], batched: tuple[bool, ...], m: int) -> tuple[Any, ...]:
    return tuple(a[:m] if b else a for a, b in zip(args, batched, strict=True))


def _time(
    names: Sequence[str], run: Callable[..., object], args: tuple[Any, ...], batched: tuple[bool, ...]
) -> tuple[dict[str, float], int]:
    """Median seconds a call per candidate, interleaved rounds within TIMING_BUDGET, and the images
    timed.

    A single image of the first candidate estimates what a whole call costs; a batch whose calls
    would not leave room for a warm-up and three rounds of every candidate is timed on its first
    m images instead (the choice is then the one for m images, which the batch shares).
    """
    start = time.perf_counter()
    n = next((a.shape[0] for a, b in zip(args, batched, strict=True) if b and isinstance(a, Tensor)), 1)
    m = n
    if n > 1:
        t0 = time.perf_counter()
        run(names[0], *_sliced(args, batched, 1))
        one = time.perf_counter() - t0
        room = TIMING_BUDGET / (4 * len(names))  # a warm-up and three rounds each
        m = max(1, min(n, math.floor(room / max(one, 1e-9))))
    sub = _sliced(args, batched, m) if m < n else args
    warm: dict[str, float] = {}
    for name in names:  # first calls: thread pools start, pages fault in, oneDNN builds its kernel
        t0 = time.perf_counter()
        run(name, *sub)
        warm[name] = time.perf_counter() - t0
    left = TIMING_BUDGET - (time.perf_counter() - start)
    rounds = max(1, min(_MAX_ROUNDS, math.floor(left / max(sum(warm.values()), 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = list(names[r % len(names):]) + list(names[: r % len(names)])  # the start rotates
        for name in order:
            t0 = time.perf_counter()
            run(name, *sub)
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}, m
