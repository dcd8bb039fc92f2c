"""Choosing ranks: empirical VBMF, the singular values' energy, a given number, or a global budget.

* ``"vbmf"`` (Kim et al. 2016, section 3.2): the rank of each channel mode is what empirical
  variational Bayesian matrix factorization (EVBMF; Nakajima, Sugiyama, Babacan and Tomioka,
  "Global analytic solution of fully-observed variational Bayesian matrix factorization", JMLR
  2013) finds in that mode's unfolding of the kernel: the number of singular values above the
  noise threshold, the noise variance itself estimated from the matrix. On small trained networks
  this threshold is severe, so the rank is weakened towards the full one, as MUSCO does (Gusak
  et al. 2019, "Automated multi-stage compression of neural networks"): with weakening factor w,
  rank = full - w (full - r_vbmf); w = 1 is plain EVBMF, w = 0 the full rank. ``"vbmf"`` means
  ``"vbmf:0.6"``; give another w as ``"vbmf:0.8"``.
* ``"energy:0.9"``: the fewest singular values of each unfolding holding 90% of the sum of their
  squares.
* an int N (rank N in every mode, capped at the full one) or a float in (0, 1] (that fraction of
  each mode, rounded up).
* a budget (``compress(macs=0.4)``), see :func:`allocate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["VBMF_WEAKENING", "RankRule", "allocate", "candidates", "energy_rank", "evbmf_rank", "parse_rank"]

#: The default weakening factor of ``rank="vbmf"`` (see the module's docstring): on the networks of
#: this project, plain EVBMF (1.0) keeps so few channels that two epochs of fine-tuning do not
#: recover the accuracy; 0.6 keeps about half of what it drops.
VBMF_WEAKENING = 0.6


@dataclass(frozen=True)
class RankRule:
    """How a layer's ranks are chosen: ``kind`` is "vbmf", "energy", "count" or "fraction"."""

    kind: str
    value: float

    def __str__(self) -> str:
        if self.kind == "count":
            return str(int(self.value))
        if self.kind == "fraction":
            return f"{self.value:g}"
        return f"{self.kind}:{self.value:g}"

    def choose(self, unfolding: Tensor) -> int:
        """The rank of one mode whose unfolding (rows: that mode's channels) is given."""
        full = min(unfolding.shape)
        if self.kind == "count":
            r = int(self.value)
        elif self.kind == "fraction":
            r = math.ceil(self.value * full - 1e-9)
        elif self.kind == "energy":
            r = energy_rank(unfolding, self.value)
        else:
            r = round(full - self.value * (full - evbmf_rank(unfolding)))
        return max(1, min(full, r))


def parse_rank(rank: object) -> RankRule:
    """``"vbmf"``, ``"vbmf:W"``, ``"energy:E"``, an int >= 1, a float in (0, 1], or their text."""
    if isinstance(rank, bool):
        raise TypeError(f"rank must be 'vbmf', 'energy:E', an int or a fraction, got {rank!r}")
    if isinstance(rank, int):
        if rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        return RankRule("count", rank)
    if isinstance(rank, float):
        if not 0 < rank <= 1:
            raise ValueError(f"a fractional rank must be in (0, 1], got {rank!r}")
        return RankRule("fraction", rank)
    if not isinstance(rank, str):
        raise TypeError(f"rank must be 'vbmf', 'energy:E', an int or a fraction, got {type(rank).__name__}")
    text = rank.strip().lower()
    kind, _, value = text.partition(":")
    try:
        if kind == "vbmf":
            w = VBMF_WEAKENING if not value else float(value)
            if not 0 <= w <= 1:
                raise ValueError
            return RankRule("vbmf", w)
        if kind == "energy":
            e = float(value)
            if not 0 < e <= 1:
                raise ValueError
            return RankRule("energy", e)
        number = float(text)
    except ValueError:
        raise ValueError(
            f"rank must be 'vbmf', 'vbmf:W' (W in [0, 1]), 'energy:E' (E in (0, 1]), a positive int or a "
            f"fraction in (0, 1], got {rank!r}"
        ) from None
    return parse_rank(int(number) if number.is_integer() and "." not in text else number)


# ---------------------------------------------------------------------- the rules


def energy_rank(matrix: Tensor, energy: float) -> int:
    """The fewest leading singular values whose squares sum to ``energy`` of the total."""
    s2 = torch.linalg.svdvals(matrix.double()) ** 2
    share = torch.cumsum(s2, 0) / s2.sum().clamp_min(1e-300)
    return int((share < energy - 1e-12).sum().item()) + 1


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    return 0.5 * (x - (1 + alpha) + np.sqrt(np.maximum((x - (1 + alpha)) ** 2 - 4 * alpha, 0.0)))


def _free_energy(sigma2: float, l: int, m: int, s: np.ndarray, residual: float, xubar: float) -> float:
    """EVBMF's free energy as a function of the noise variance (Nakajima et al. 2013, eq. 29)."""
    h = len(s)
    alpha = l / m
    x = s**2 / (m * sigma2)
    z1, z2 = x[x > xubar], x[x <= xubar]
    tau_z1 = _tau(z1, alpha)
    eps = np.finfo(float).eps
    return float(np.sum(z2 - np.log(z2 + eps)) + np.sum(z1 - tau_z1) + np.sum(np.log((tau_z1 + 1) / z1))
                 + alpha * np.sum(np.log(tau_z1 / alpha + 1)) + residual / (m * sigma2)
                 + (l - h) * np.log(sigma2))


def evbmf_rank(matrix: Tensor) -> int:
    """The rank EVBMF keeps in ``matrix``: singular values above sqrt(M sigma2 (1 + tau)(1 + alpha/tau)),
    with sigma2 the noise variance that minimises the free energy (Nakajima et al. 2013, theorem 13)."""
    from scipy.optimize import minimize_scalar

    y = matrix.double().cpu().numpy()
    if y.shape[0] > y.shape[1]:
        y = y.T
    l, m = y.shape  # l <= m
    s = np.linalg.svd(y, compute_uv=False)
    if l < 2 or s[0] <= 0:
        return l
    alpha = l / m
    tauubar = 2.5129 * math.sqrt(alpha)  # the threshold's constant, from the paper
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    eh_ub = int(min(math.ceil(l / (1 + alpha)) - 1, l)) - 1
    upper = float(np.sum(s**2)) / (l * m)
    lower = max(s[eh_ub + 1] ** 2 / (m * xubar) if eh_ub + 1 < l else 0.0,
                float(np.mean(s[eh_ub + 1 :] ** 2)) / m if eh_ub + 1 < l else 0.0)
    lower = max(lower, upper * 1e-12)
    if lower >= upper:
        return l
    found = minimize_scalar(_free_energy, args=(l, m, s, 0.0, xubar), bounds=(lower, upper), method="bounded")
    threshold = math.sqrt(m * float(found.x) * (1 + tauubar) * (1 + alpha / tauubar))
    return int(np.sum(s > threshold))


# --------------------------------------------------------------------- the budget


def _rounded(full: int, fraction: float) -> int:
    # multiples of 8 where a layer is wide enough: vector kernels run whole lanes
    r = math.ceil(full * fraction)
    if full >= 32:
        r = 8 * math.ceil(r / 8)
    return max(1, min(full, r))


#: The fractions of each mode the budget may choose (its candidates, per layer).
FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 5 / 16, 3 / 8, 7 / 16, 1 / 2, 5 / 8, 3 / 4, 7 / 8)


def candidates(full: Sequence[int]) -> list[tuple[int, ...]]:
    """The budget's candidate ranks for one layer whose exact ranks are ``full``, smallest first."""
    seen: list[tuple[int, ...]] = []
    for f in FRACTIONS:
        ranks = tuple(_rounded(n, f) for n in full)
        if ranks not in seen:
            seen.append(ranks)
    return seen


@dataclass
class Option:
    """One way to treat a layer: ``ranks`` None keeps the original. ``cost`` is in the budget's unit
    (MACs or parameters), ``error`` the model's relative output error with this layer alone so treated."""

    ranks: tuple[int, ...] | None
    cost: int
    error: float


def allocate(options: Sequence[Sequence[Option]], fixed: int, budget: float) -> list[int] | None:
    """Pick one option per layer so that ``fixed`` + the chosen costs <= ``budget`` and the summed
    errors are small: start every layer at its cheapest option, then, while the budget allows, take
    the step to a costlier option that buys the most error per unit of cost (a greedy solution of
    the multiple-choice knapsack; the errors are measured one layer at a time, so their sum is an
    estimate of their joint effect). Returns the chosen index per layer, or None if even the
    cheapest options exceed the budget.
    """
    pick = [min(range(len(opts)), key=lambda i, o=opts: (o[i].cost, o[i].error)) for opts in options]  # type: ignore[misc]
    total = fixed + sum(opts[i].cost for opts, i in zip(options, pick, strict=True))
    if total > budget:
        return None
    while True:
        best: tuple[float, int, int] | None = None
        for layer, opts in enumerate(options):
            now = opts[pick[layer]]
            for j, o in enumerate(opts):
                extra = o.cost - now.cost
                gain = now.error - o.error
                if extra <= 0 or gain <= 0 or total + extra > budget:
                    continue
                ratio = gain / extra
                if best is None or ratio > best[0]:
                    best = (ratio, layer, j)
        if best is None:
            return pick
        _, layer, j = best
        total += options[layer][j].cost - options[layer][pick[layer]].cost
        pick[layer] = j
