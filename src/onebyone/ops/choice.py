"""Which library runs each pass: measured on this machine, on first sight of each key, and kept.

Every pass (forward, grad_input, grad_weight, and both gradients at once) of every key (layout,
shape, output channels, stride, groups, dtype, threads) runs each candidate that is correct for it
(passes.py), interleaved, within a budget of TIMING_BUDGET seconds, and keeps the one with the
least median time; cache.py keeps the choices on disk for this machine, so a second process starts
with them. Where the budget only let the candidates run on a slice of the call, the ones the slice
left close are then tried on the caller's own whole calls (a Trial) before the key settles, and
overturn the slice's pick only where the median of one beat every call of it. Nothing
here knows which library wins where: that is measured, not fitted.
"""

from __future__ import annotations

import mmap
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from .cache import CACHE, Key, key_text
from .pool import FRESH_BYTES, fault_seconds

#: The policies: "auto" measures; "fixed" never does (onebyone's kernels wherever they apply, else
#: PyTorch's BLAS: the same libraries on every machine); the others force one where it applies.
BACKENDS = ("auto", "fixed", "torch", "numpy", "onednn", "native", "amx")

#: Seconds a new key may spend timing its candidates, all of them together.
TIMING_BUDGET = 0.05
# A candidate within this share of the fastest counts as tied, and a tie goes to the earlier one
# in the candidates' order (PyTorch's BLAS first): timing noise, not a constant of any machine.
_TIE = 1.02
_MAX_ROUNDS = 9
# A slice sits in the cache from round to round where the whole call streams from memory, so it can
# rank close candidates unlike the call (on the Zen 3, three libraries tied on 8 images of
# 528x14x14->256 channels_last, where oneDNN ran the 32 images 1.2x faster than the tie's pick,
# BENCHMARKS.md): candidates within _CONTEND
# of the fastest slice, the best _MAX_CONTENDERS of them, then run _TRIAL_CALLS whole calls each.
_CONTEND = 1.5
_MAX_CONTENDERS = 3
_TRIAL_CALLS = 3

_policy = "auto"
_choices: dict[Key, str] = {}
_pins: dict[str, str] = {}
_timings: dict[Key, dict[str, float]] = {}
_samples: dict[Key, dict[str, Any]] = {}  # what each timing in this process ran on, and its seconds
# Calls already seen, by their arguments' signature (operator.py): the forward's library, the
# checked arguments and, per wanted gradients, the library of a training call's whole step, so a
# repeated call skips the checks and the key (small layers feel every microsecond); the backward's
# libraries under ("backward", signature, want_x, want_w). Cleared with _choices.
_plans: dict[tuple[Any, ...], Any] = {}
# Training calls whose whole step was too long to time, by their step key, and how many of
# their calls said so (ops/step.py)
_gated: dict[tuple[Any, ...], int] = {}
_lock = threading.Lock()
R = TypeVar("R")


class Trial(str):
    """The library one whole call of a key on trial runs on: a str of its name, which the passes'
    dispatch times on the way (:func:`timed`)."""

    key: Key


class _OnTrial:
    """A key whose close candidates take turns on whole calls."""

    def __init__(self, order: Sequence[str], contenders: Sequence[str], seconds: dict[str, float],
                 sample: dict[str, Any], favourite: str) -> None:
        self.order = [n for n in order if n in contenders]  # a tie goes to the earlier, as in decide
        self.calls: dict[str, list[float]] = {n: [] for n in contenders}
        self.seconds, self.sample = seconds, sample
        self.favourite = favourite  # the slice's own pick, which the whole calls must overturn

    def next(self, key: Key) -> Trial:
        name = Trial(min(self.calls, key=lambda n: len(self.calls[n])))  # round-robin
        name.key = key
        return name


_trials: dict[Key, _OnTrial] = {}


def set_backend(name: str = "auto") -> str:
    """Choose how conv1x1 picks the library for CPU tensors; returns the previous policy.

    ``"auto"`` (the default) times every candidate that is correct for a pass on the first call of
    each key (layout, shape, stride, groups, dtype, threads), within 50 ms, and keeps the fastest,
    on disk too (:func:`choices_path`). ``"fixed"`` never times: onebyone's own kernels wherever
    they apply, PyTorch's BLAS elsewhere (or what :func:`pin_choices` pinned). ``"torch"``,
    ``"numpy"``, ``"onednn"``, ``"native"`` (float32) or ``"amx"`` (the bfloat16 forward where the
    CPU has AMX) force one library wherever it applies, PyTorch's BLAS elsewhere. CUDA tensors
    always run on PyTorch's own kernels.
    """
    global _policy
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    with _lock:
        before, _policy = _policy, name
        _choices.clear()
        _plans.clear()
        _gated.clear()
        _trials.clear()
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
    """Forget every choice and pin in this process (the next sight of a key reads this machine's
    cache file again); with ``disk``, delete that file too."""
    with _lock:
        _choices.clear()
        _plans.clear()
        _gated.clear()
        _timings.clear()
        _samples.clear()
        _trials.clear()
        _pins.clear()
    CACHE.clear(disk=disk)


def pin_choices(choices: Mapping[Any, str]) -> None:
    """Use these choices (key -> library, as :func:`chosen_backends` gives them, or their text
    form 'forward|nchw|...') without timing; a pin whose library does not apply is ignored."""
    names = set(BACKENDS[2:]) | {"native_turned", "native_flat", "amx_turned", "torch_images", "widened",
                                   "joined", "passes", "op", "aten", "thnn", "conv2d"}
    for key, name in choices.items():
        if name not in names:
            raise ValueError(f"pin {key!r}: library must be one of {sorted(names)}, got {name!r}")
    with _lock:
        _pins.update({k if isinstance(k, str) else key_text(k): v for k, v in choices.items()})
        _choices.clear()
        _plans.clear()
        _gated.clear()
        _trials.clear()


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


def untimed(key: Key) -> str | None:
    """What :func:`decide` gives this key without timing it (chosen, pinned, on disk, or a
    policy's), or None where it would time the key now."""
    text = key_text(key)
    if key in _choices or key in _trials:
        return _choices.get(key, "on trial")
    if text in _pins:
        return _pins[text]
    if _policy != "auto":
        return _policy
    entry = CACHE.get(text)
    return None if entry is None else str(entry["choice"])


def decide(
    key: Key,
    names: Sequence[str],
    run: Callable[..., object],
    args: tuple[Any, ...],
    steps: tuple[int, ...],
    fresh: Mapping[str, int] | None = None,
    trial: bool = True,
) -> str:
    """The library for this key: pinned, remembered, read from the cache, or timed now.

    ``run(name, *args)`` runs a candidate; the tensors with a non-zero ``steps`` (rows per output
    row) may be timed on a slice of their images and rows (see :func:`_time`). ``fresh`` names the
    candidates that allocate their output themselves, not from the output pool, with its bytes on
    the whole call: see :func:`_charge_faults`. With ``trial`` (where the caller runs the name it
    gets through a dispatch that times a :class:`Trial`), candidates a slice left close are then
    tried on whole calls: until the key settles, each call gets the next of them.
    """
    if len(names) == 1:
        return names[0]
    chosen = _choices.get(key)
    if chosen is not None:
        return chosen
    on_trial = _trials.get(key)
    if on_trial is not None:
        return on_trial.next(key)
    text = key_text(key)
    pinned = _pins.get(text)
    if pinned is not None and pinned in names:
        _choices[key] = pinned
        return pinned
    if _policy != "auto":
        return _untimed(names)
    entry = CACHE.get(text)
    if entry is not None and entry["choice"] in names:
        _timings[key] = dict(entry.get("calls") or entry.get("seconds") or {})
        listed = entry.get("contenders")
        pending = [n for n in listed if n in names and trial] if isinstance(listed, list) else []
        if len(pending) > 1:  # timed by an earlier process that ended before its trial did
            sample = {"images": entry.get("images", 0), "rows": entry.get("rows", 0)}
            _trials[key] = _OnTrial(names, pending, dict(entry.get("seconds") or {}), sample, entry["choice"])
            return _trials[key].next(key)
        _choices[key] = entry["choice"]
        return entry["choice"]
    seconds, sample = _time(names, run, args, steps)
    if fresh:
        _charge_faults(seconds, sample, fresh)
    fastest = min(seconds.values())
    chosen = next(n for n in names if n in seconds and seconds[n] <= _TIE * fastest)
    _timings[key], _samples[key] = seconds, sample
    contenders = _contenders(seconds, sample) if trial else []
    if contenders:
        sample["contenders"] = contenders
    CACHE.record(key, chosen, seconds, sample)
    if contenders:
        _trials[key] = _OnTrial(names, contenders, seconds, sample, chosen)
        return _trials[key].next(key)
    _choices[key] = chosen
    return chosen


def _contenders(seconds: dict[str, float], sample: dict[str, Any]) -> list[str]:
    """The candidates to try on whole calls: those close to the fastest where a slice was timed."""
    if sample["fraction"] >= 1:
        return []
    fastest = min(seconds.values())
    close = sorted((n for n, s in seconds.items() if s <= _CONTEND * fastest), key=seconds.__getitem__)
    return close[:_MAX_CONTENDERS] if len(close) > 1 else []


def timed(name: Trial, run: Callable[..., R], *args: Any) -> R:
    """``run(name, *args)``, one whole call of a key on trial, its seconds counted for the key."""
    t0 = time.perf_counter()
    out = run(str(name), *args)
    _observe(name.key, str(name), time.perf_counter() - t0)
    return out


def _observe(key: Key, name: str, seconds: float) -> None:
    """Count one whole call; after each round from the second, drop the contenders beyond _CONTEND
    of the best so far, and settle the key once one is left or each ran _TRIAL_CALLS calls."""
    with _lock:
        trial = _trials.get(key)
        if trial is None or name not in trial.calls:  # settled meanwhile, or cleared
            return
        trial.calls[name].append(seconds)
        counts = {len(v) for v in trial.calls.values()}
        if len(counts) > 1:  # the round is not over
            return
        medians = {n: statistics.median(v) for n, v in trial.calls.items()}
        best = min(medians.values())
        done = counts.pop()
        if done > 1:  # a first whole call may still pay a first use (a workspace faulting in)
            trial.calls = {n: v for n, v in trial.calls.items() if medians[n] <= _CONTEND * best}
        if len(trial.calls) > 1 and done < _TRIAL_CALLS:
            return
        del _trials[key]
    chosen = next(n for n in trial.order if n in trial.calls and medians[n] <= _TIE * best)
    favourite = trial.favourite
    if favourite in trial.calls and chosen != favourite and medians[chosen] >= min(trial.calls[favourite]):
        # a few whole calls vary by a fifth on a busy host: they overturn the slice's many rounds
        # only where the challenger's median beat every call of the slice's pick (BENCHMARKS.md)
        chosen = favourite
    sample = {**trial.sample, "calls": medians, "fastest_calls": {n: min(v) for n, v in trial.calls.items()},
              "favourite": favourite}
    sample.pop("contenders", None)
    _choices[key], _timings[key], _samples[key] = chosen, medians, sample
    CACHE.record(key, chosen, trial.seconds, sample)


def _charge_faults(seconds: dict[str, float], sample: dict[str, Any], fresh: Mapping[str, int]) -> None:
    """Add to a candidate's time the page faults its own output costs on the whole call.

    An output of at least pool.FRESH_BYTES is a fresh mapping on every call, and its faults cost as
    much as the product itself on some machines (102 MB out: 27 ms of faults beside 12 ms of work,
    BENCHMARKS.md). A slice is timed with a small output that malloc recycles, so it cannot see them:
    they are charged here, at this machine's measured cost a page, in the slice's share of the call.
    """
    charged = {}
    for name, nbytes in fresh.items():
        if name in seconds and nbytes >= FRESH_BYTES:
            charged[name] = fault_seconds() * -(-nbytes // mmap.PAGESIZE) * sample["fraction"]
            seconds[name] += charged[name]
    if charged:
        sample["fault_seconds"] = charged


def _sliced(args: tuple[Any, ...], steps: tuple[int, ...], m: int, r: int) -> tuple[Any, ...]:
    """args with each sliced tensor cut to its first m images and the rows that give r output rows
    (``steps`` holds each tensor's rows per output row: its stride for an input, 1 for a gradient;
    0 leaves it whole), packed in its layout as the passes expect."""
    out = []
    for a, step in zip(args, steps, strict=True):
        if step and isinstance(a, Tensor):
            rows = min(a.shape[2], r * step)
            if m < a.shape[0] or rows < a.shape[2]:
                fmt = torch.contiguous_format if a.is_contiguous() else torch.channels_last
                a = a[:m, :, :rows].contiguous(memory_format=fmt)
        out.append(a)
    return tuple(out)


def _sizes(n: int, rows: int) -> list[tuple[int, int]]:
    """(images, output rows) from one row of one image doubling up to the whole batch."""
    sizes, r = [], 1
    while r < rows:
        sizes.append((1, r))
        r *= 2
    sizes.append((1, rows))
    m = 2
    while m < n:
        sizes.append((m, rows))
        m *= 2
    if n > 1:
        sizes.append((n, rows))
    return sizes


def _time(
    names: Sequence[str], run: Callable[..., object], args: tuple[Any, ...], steps: tuple[int, ...]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds a call per candidate, interleaved rounds within TIMING_BUDGET, and what was
    timed (images, output rows, the seconds the timing took).

    The first candidate runs on one row of one image, then on twice as much, until a call would
    not leave room in what is left of the budget for a warm-up and three rounds of every
    candidate; there the others run once too, and if one of them is fast enough to double the
    slice again it paces the growth on (the others' next first calls in the order of their last
    ones). The candidates are timed on the last size reached (a 1x1 convolution works pixel by
    pixel, so a slice is a smaller copy of the same product). From the third round on, a candidate
    whose median so far is more than twice the best is dropped.
    """
    start = time.perf_counter()
    first = next((i for i, (a, s) in enumerate(zip(args, steps, strict=True)) if s and isinstance(a, Tensor)),
                 None)

    def room() -> float:  # what one call of the slice may take: the budget left over 4 calls each
        return (TIMING_BUDGET - (time.perf_counter() - start)) / (4 * len(live))

    m, r, n, rows = 1, 1, 1, 1
    if first is None:
        sizes = [(1, 1)]
    else:
        n, rows = args[first].shape[0], -(-args[first].shape[2] // steps[first])
        sizes = _sizes(n, rows)
    live = list(names)
    pacer, i = names[0], 0
    before: dict[str, float] = {}  # each candidate's first call at the last size they all ran
    while True:
        m, r = sizes[i]
        sub = _sliced(args, steps, m, r)
        t0 = time.perf_counter()
        run(pacer, *sub)
        took = {pacer: time.perf_counter() - t0}
        grow = sizes[i + 1][0] * sizes[i + 1][1] / (m * r) if i + 1 < len(sizes) else 0.0
        if grow and took[pacer] * grow <= room():
            i += 1
            continue
        # first calls of the others at this size: thread pools start, pages fault in, oneDNN builds
        # its kernel. The fastest of their first calls at the last size go first: where the budget
        # runs out before all have run, those left untimed are the slowest seen
        for name in sorted((n for n in live if n != pacer), key=lambda n: before.get(n, 0.0)):
            if time.perf_counter() - start > TIMING_BUDGET:
                live.remove(name)  # cannot be timed in the budget: the others took it all
                continue
            t0 = time.perf_counter()
            run(name, *sub)
            took[name] = time.perf_counter() - t0
        fastest = min(took, key=took.__getitem__)
        before = took
        if not grow or fastest == pacer or took[fastest] * grow > room():
            break
        # a faster candidate paces the slice on: one that is slow on a sliver (MKL took 2 ms on one
        # 7-pixel row of 2048x7x7->512, 1 ms on the whole image) must not leave every candidate
        # timed on a sliver that ranks them unlike the whole call
        pacer, i = fastest, i + 1
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(_MAX_ROUNDS):
        shift = rnd % len(live)
        round_start = time.perf_counter()
        for name in live[shift:] + live[:shift]:  # the start rotates
            t0 = time.perf_counter()
            run(name, *sub)
            samples[name].append(time.perf_counter() - t0)
        if rnd >= 2:  # from the third round, by the medians so far: one slow sample (the host
            # busy for a moment) dropped a candidate on it alone, its median that one sample
            medians = {name: statistics.median(samples[name]) for name in live}
            best = min(medians.values())
            live = [name for name in live if medians[name] <= 2 * best]
        spent = time.perf_counter() - start
        if spent + (time.perf_counter() - round_start) > TIMING_BUDGET:
            break
    seconds = {name: statistics.median(v) for name, v in samples.items() if v}
    fraction = m * r / (n * rows) if n * rows else 1.0  # an empty batch: nothing to scale
    sample = {"images": m, "rows": r, "fraction": fraction, "spent": time.perf_counter() - start}
    return seconds, sample
