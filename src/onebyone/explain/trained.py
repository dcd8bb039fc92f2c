"""The math view inside a trained network: its learned 1x1 layers, on a few held-out images.

For each 1x1 layer (a :class:`onebyone.Conv1x1`, or an ``nn.Conv2d`` with a 1 x 1 kernel and no
padding), captured by forward hooks:

- what reaches it and what leaves it for each chosen image: the C input maps as the network
  computed them, and the K output maps recomputed by :func:`onebyone.conv1x1` from those inputs,
  before the layer's own activation (so a reader can redo ``y = b + sum_c w[k,c] x[c]``), each
  checked against the float64 definition in :mod:`onebyone.reference` and against the layer's
  own output;
- how far its weights reduce: the singular values of the K x C weight matrix (block-diagonal for a
  grouped layer) and the ranks that keep 90% and 99% of their energy (sum of squares);
- how much it matters: held-out accuracy with the layer's output replaced by that of the rank-r
  approximation of its weights, for a few r;
- what tells two digits apart (the seed's 2 and 3): the output channel whose spatial mean differs
  most between the two classes, in units of its spread (d'), and the input channels that carry
  the difference, ``w[k,c] * (mean x[c] over 2s - mean x[c] over 3s)``, which sum to it exactly.

Arrays travel as base64 float32 (little-endian) with their shape, so a page with a few images
stays small; everything else is plain JSON.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..layers import Conv1x1, _is_pointwise
from ..ops import conv1x1
from ..reference import conv1x1_reference

__all__ = ["MAX_IMAGES", "decode_array", "pointwise_layers", "trained_view"]

#: The most images whose activations one page carries.
MAX_IMAGES = 8
#: Held-out images scored for each rank-r replacement (the first ones of the test split).
EVAL_IMAGES = 2000
#: Held-out images per class for the two-class question.
PAIR_IMAGES = 500
_BATCH = 256


def pointwise_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's 1x1 layers, by name, in the order of ``named_modules``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Conv1x1) or _is_pointwise(m)]


def _array(a: Tensor | np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(a.detach().cpu().float().numpy() if isinstance(a, Tensor) else a, dtype="<f4")
    return {"shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(entry: dict[str, Any]) -> np.ndarray:
    """An array written by this module, back as float32."""
    return np.frombuffer(base64.b64decode(entry["b64"]), dtype="<f4").reshape(entry["shape"])


def _pair(stride: Any) -> tuple[int, int]:
    s = tuple(stride) if isinstance(stride, (tuple, list)) else (stride, stride)
    return int(s[0]), int(s[1])


def _dense_weight(m: Any) -> Tensor:
    """The K x C matrix of the layer; a grouped layer's is block-diagonal."""
    k, cg = m.weight.shape[0], m.weight.shape[1]
    g = m.groups
    w = m.weight.detach().float().reshape(k, cg)
    dense = torch.zeros(k, cg * g)
    kg = k // g
    for i in range(g):
        dense[i * kg : (i + 1) * kg, i * cg : (i + 1) * cg] = w[i * kg : (i + 1) * kg]
    return dense


def _bias(m: Any) -> Tensor | None:
    return None if m.bias is None else m.bias.detach().float()


def _activation(m: nn.Module) -> str | None:
    return getattr(m, "activation", None) if isinstance(m, Conv1x1) else None


@contextmanager
def _hooks(modules: Sequence[nn.Module], hook: Any) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _check_images(
    images: Sequence[int] | None, labels: np.ndarray, pair_ids: tuple[int, int] | None
) -> list[int]:
    n = len(labels)
    if images is None:
        if pair_ids is not None:
            return [int(np.flatnonzero(labels == c)[0]) for c in pair_ids]
        return list(range(min(2, n)))
    images = list(images)
    if not images:
        raise ValueError("images: choose at least one held-out image")
    if len(images) > MAX_IMAGES:
        raise ValueError(
            f"images: at most {MAX_IMAGES} (the page carries their activations), got {len(images)}"
        )
    for i in images:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < n:
            raise ValueError(
                f"image index {i!r} is out of range: the held-out split has {n} images (0 to {n - 1})"
            )
    return [int(i) for i in images]


def _pair_ids(
    classes: Sequence[str], pair: Sequence[str] | None, labels: np.ndarray
) -> tuple[int, int] | None:
    if pair is None:
        return None
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ValueError(f"pair must name two different classes, got {pair!r}")
    names = [str(c) for c in classes]
    if not all(str(p) in names for p in pair):
        return None
    ids = (names.index(str(pair[0])), names.index(str(pair[1])))
    return ids if all((labels == c).any() for c in ids) else None


def _order(model: nn.Module, x: Tensor) -> list[str]:
    """The names of the leaf modules in the order one forward pass calls them."""
    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children())]
    called: list[str] = []
    with _hooks(leaves, lambda m, i, o: called.append(names[m])), torch.no_grad():
        model(x)
    return called


def _neighbours(order: list[str], name: str) -> tuple[str | None, str | None]:
    if name not in order:
        return None, None
    i = order.index(name)
    return (order[i - 1] if i > 0 else None), (order[i + 1] if i + 1 < len(order) else None)


def _energy_ranks(s: np.ndarray) -> tuple[list[float], int, int]:
    energy = np.cumsum(s.astype(np.float64) ** 2)
    energy = energy / energy[-1] if energy[-1] > 0 else np.ones_like(energy)
    r90 = int(np.searchsorted(energy, 0.90 - 1e-12) + 1)
    r99 = int(np.searchsorted(energy, 0.99 - 1e-12) + 1)
    return energy.tolist(), min(r90, len(s)), min(r99, len(s))


def _default_ranks(full: int, r90: int, r99: int) -> list[int]:
    picks = {1, r90, r99, full, max(1, full // 8), max(1, full // 4), max(1, full // 2)}
    return sorted(r for r in picks if 1 <= r <= full)


def _predict(model: nn.Module, x: Tensor, hooks: tuple[list[nn.Module], Any] | None = None) -> Tensor:
    """Class predictions for ``x`` in batches, with ``hooks`` (modules, hook) in place."""
    modules, hook = hooks if hooks is not None else ([], None)
    preds = []
    with _hooks(modules, hook), torch.no_grad():
        for start in range(0, len(x), _BATCH):
            preds.append(model(x[start : start + _BATCH]).argmax(1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def _low_rank_hook(m: nn.Module, u: np.ndarray, s: np.ndarray, vt: np.ndarray, r: int) -> Any:
    w_r = torch.from_numpy((u[:, :r] * s[:r]) @ vt[:r]).float()
    bias, stride, act = _bias(m), _pair(m.stride), _activation(m)

    def hook(mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return conv1x1(inputs[0].float(), w_r, bias, stride=stride, activation=act).to(output.dtype)

    return hook


def _separation(
    mx: dict[int, np.ndarray],
    dense: np.ndarray,
    bias: np.ndarray | None,
    pair: tuple[int, int],
    names: Sequence[str],
) -> dict[str, Any]:
    """The output channel that tells the two classes apart best, and the inputs that carry it."""
    a, b = pair
    z = {c: mx[c] @ dense.T + (0.0 if bias is None else bias) for c in (a, b)}  # n x K spatial means
    mean = {c: z[c].mean(0) for c in (a, b)}
    spread = np.sqrt((z[a].var(0) + z[b].var(0)) / 2)
    diff = mean[a] - mean[b]
    dprime = np.abs(diff) / np.maximum(spread, 1e-12)
    k = int(np.argmax(dprime))
    dx = mx[a].mean(0) - mx[b].mean(0)
    contrib = dense[k] * dx
    order = np.argsort(-np.abs(contrib))
    total_abs = float(np.abs(contrib).sum()) or 1.0
    top = [
        {
            "channel": int(c),
            "weight": float(dense[k, c]),
            "input_difference": float(dx[c]),
            "contribution": float(contrib[c]),
            "share": float(abs(contrib[c]) / total_abs),
        }
        for c in order[:6]
    ]
    ranked = np.argsort(-dprime)[:5]
    return {
        "classes": [str(names[a]), str(names[b])],
        "images": [len(mx[a]), len(mx[b])],
        "channel": k,
        "dprime": float(dprime[k]),
        "mean": [float(mean[a][k]), float(mean[b][k])],
        "difference": float(diff[k]),
        "sum_of_contributions": float(contrib.sum()),
        "inputs": top,
        "next_best": [{"channel": int(c), "dprime": float(dprime[c])} for c in ranked[1:]],
    }


def trained_view(
    model: nn.Module,
    dataset: Any,
    *,
    images: Sequence[int] | None = None,
    pair: Sequence[str] | None = ("2", "3"),
    ranks: Sequence[int] | None = None,
    name: str | None = None,
    eval_images: int = EVAL_IMAGES,
    progress: bool = False,
) -> dict[str, Any]:
    """The learned 1x1 layers of ``model`` on held-out images of ``dataset``: one JSON-ready dict.

    Args:
        model: a trained network whose 1x1 layers are ``Conv1x1`` or ``nn.Conv2d(kernel_size=1)``.
        dataset: a :class:`onebyone.data.Dataset` (its held-out split is used).
        images: indices into the held-out split (at most :data:`MAX_IMAGES`); default: the first
            held-out image of each class of ``pair``, or the first two.
        pair: two class names for the "what tells them apart" question; ``None`` skips it.
        ranks: the ranks r scored for each layer; default: 1, the 90% and 99% energy ranks, full
            rank and a few between.
        name: what to call the model on the page.
        eval_images: held-out images scored for each rank (the first ones of the split).
        progress: a progress bar on stderr.
    """
    from tqdm import tqdm

    layers = pointwise_layers(model)
    if not layers:
        raise ValueError(
            f"{name or type(model).__name__} has no 1x1 layer (Conv1x1 or nn.Conv2d with a 1 x 1 "
            f"kernel and no padding): nothing to explain"
        )
    if ranks is not None and (
        not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks)
    ):
        raise ValueError(f"ranks must be positive ints, got {list(ranks)!r}")
    if isinstance(eval_images, bool) or not isinstance(eval_images, int) or eval_images < 1:
        raise ValueError(f"eval_images must be a positive int, got {eval_images!r}")
    model = model.eval()
    x_test = torch.from_numpy(np.ascontiguousarray(dataset.x_test, dtype=np.float32))
    y_test = np.asarray(dataset.y_test)
    classes = [str(c) for c in dataset.classes]
    pair_ids = _pair_ids(classes, pair, y_test)
    chosen = _check_images(images, y_test, pair_ids)
    expected = getattr(model, "default_input_size", None)
    if expected is not None and tuple(expected) != tuple(x_test.shape[1:]):
        raise ValueError(
            f"{name or type(model).__name__} takes {' x '.join(map(str, expected))} images but the "
            f"data has {' x '.join(map(str, x_test.shape[1:]))}"
        )

    modules = [m for _, m in layers]
    x_chosen = x_test[chosen]
    captured: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def capture(m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured[m] = (inputs[0].detach().float().contiguous(), output.detach().float().contiguous())

    try:
        with _hooks(modules, capture), torch.no_grad():
            logits = model(x_chosen)
    except RuntimeError as exc:
        raise ValueError(
            f"{name or type(model).__name__} cannot run on the data's "
            f"{' x '.join(map(str, x_test.shape[1:]))} images ({str(exc).splitlines()[0]})"
        ) from None
    order = _order(model, x_chosen[:1])

    n_eval = min(eval_images, len(x_test))
    x_eval, y_eval = x_test[:n_eval], torch.from_numpy(y_test[:n_eval])
    baseline = float((_predict(model, x_eval) == y_eval).float().mean())

    # spatial means of each layer's (strided) input over the pair's held-out images
    means: dict[nn.Module, dict[int, np.ndarray]] = {m: {} for m in modules}
    if pair_ids is not None:
        for c in pair_ids:
            xs = x_test[torch.from_numpy(np.flatnonzero(y_test == c)[:PAIR_IMAGES])]
            acc: dict[nn.Module, list[np.ndarray]] = {m: [] for m in modules}

            def mean_hook(m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor, acc=acc) -> None:
                sh, sw = _pair(m.stride)
                acc[m].append(inputs[0].detach().float()[:, :, ::sh, ::sw].mean((2, 3)).double().numpy())

            _predict(model, xs, (modules, mean_hook))
            for m in modules:
                means[m][c] = np.concatenate(acc[m])

    out_layers = []
    bar = tqdm(layers, desc="1x1 layers", unit="layer", file=sys.stderr, disable=not progress, leave=False)
    for lname, m in bar:
        x_in, y_layer = captured[m]
        dense = _dense_weight(m)
        bias = _bias(m)
        stride, act = _pair(m.stride), _activation(m)
        z = conv1x1(
            x_in,
            m.weight.detach().float().reshape(m.weight.shape[0], -1),
            bias,
            stride=stride,
            groups=m.groups,
        )
        z_ref = conv1x1_reference(
            x_in.double().numpy(),
            m.weight.detach().double().reshape(m.weight.shape[0], -1).numpy(),
            None if bias is None else bias.double().numpy(),
            stride=stride,
            groups=m.groups,
        )
        y_act = z.clamp(min=0) if act == "relu" else z.clamp(0, 6) if act == "relu6" else z
        u, s, vt = np.linalg.svd(dense.double().numpy(), full_matrices=False)
        energy, r90, r99 = _energy_ranks(s)
        full = len(s)
        scored = (
            sorted({min(r, full) for r in ranks}) if ranks is not None else _default_ranks(full, r90, r99)
        )
        k, c = dense.shape
        rank_rows = []
        for r in scored:
            pred = _predict(model, x_eval, ([m], _low_rank_hook(m, u, s, vt, r)))
            rank_rows.append(
                {
                    "rank": r,
                    "accuracy": float((pred == y_eval).float().mean()),
                    "params_fraction": r * (k + c) / (k * c),
                }
            )
        before, after = _neighbours(order, lname)
        out_layers.append(
            {
                "name": lname,
                "type": type(m).__name__,
                "in_channels": int(c),
                "out_channels": int(k),
                "groups": int(m.groups),
                "stride": list(stride),
                "activation": act,
                "has_bias": bias is not None,
                "after": before,
                "before": after,
                "input_size": list(x_in.shape[1:]),
                "output_size": list(z.shape[1:]),
                "weight": _array(dense),
                "bias": None if bias is None else _array(bias),
                "inputs": [_array(x_in[i]) for i in range(len(chosen))],
                "outputs": [_array(z[i]) for i in range(len(chosen))],
                "check": {
                    "max_abs_diff_reference": float(np.max(np.abs(z.double().numpy() - z_ref))),
                    "max_abs_diff_layer_output": float((y_act - y_layer).abs().max()),
                },
                "singular_values": s.tolist(),
                "energy": energy,
                "rank_90": r90,
                "rank_99": r99,
                "full_rank": full,
                "rank_accuracy": rank_rows,
                "separation": None
                if pair_ids is None
                else _separation(
                    means[m],
                    dense.double().numpy(),
                    None if bias is None else bias.double().numpy(),
                    pair_ids,
                    classes,
                ),
            }
        )

    preds = logits.argmax(1).tolist()
    return {
        "model": name or type(model).__name__,
        "data": getattr(dataset, "name", "data"),
        "classes": classes,
        "test_images": len(x_test),
        "eval_images": int(n_eval),
        "accuracy": baseline,
        "images": [
            {
                "index": i,
                "label": int(y_test[i]),
                "label_name": classes[int(y_test[i])],
                "prediction": int(p),
                "prediction_name": classes[int(p)] if 0 <= int(p) < len(classes) else str(p),
                "pixels": _array(x_test[i]),
            }
            for i, p in zip(chosen, preds, strict=False)
        ],
        "pair": None if pair_ids is None else [classes[pair_ids[0]], classes[pair_ids[1]]],
        "layers": out_layers,
    }
