"""The seed's worked examples, computed by the library, checked against the seed's text.

The seed teaches the 1x1 convolution with a handful of examples. Every number shown
here is computed, with :func:`onebyone.conv1x1`, :class:`onebyone.Conv1x1` and the
float64 definition in :mod:`onebyone.reference`; the seed's printed results are kept
apart, in :data:`SEED_PRINTED`, and used only to list where the text and the
computation disagree. The file reads top to bottom:

1. the seed's inputs (the three 6 x 6 maps, the kernel, the sizes), written down;
2. what the seed printed (:data:`SEED_PRINTED`), for the comparison only;
3. one function per example, each returning a JSON-ready dict:
   :func:`math_view`, :func:`digit_view`, :func:`advanced_view`,
   :func:`reduction_example`, :func:`depth_view`, :func:`inception_reduction`;
4. :func:`check_seed`: every printed claim against the computation;
5. :func:`examples`, all of the above as one document (what ``--json`` prints);
6. presentation: :func:`render_text`, :func:`write_figures` (PNG), :func:`write_page`
   (the self-contained interactive page) and :func:`page_server` (127.0.0.1 only).

Conventions: a pixel ``[i, j]`` is row ``i``, column ``j``, counting from 0 (the seed's
own ``T[1,0]`` arithmetic reads its map this way). 1 multiply-add (MAC) = 2 FLOPs;
bias additions are not counted in MACs. Sizes in bytes assume float32 (4 bytes).
"""

from __future__ import annotations

import functools
import http.server
import io
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from ._files import atomic_write
from .data import seed_digit_maps
from .layers import Conv1x1
from .ops import conv1x1
from .reference import conv1x1_reference, pixel_sum

__all__ = [
    "MATH_KERNEL",
    "MATH_MAPS",
    "SEED_PRINTED",
    "advanced_view",
    "check_seed",
    "conv_cost",
    "depth_view",
    "digit_view",
    "examples",
    "inception_reduction",
    "math_view",
    "page_server",
    "reduction_example",
    "render_text",
    "write_figures",
    "write_page",
]

FLOAT32_BYTES = 4


# ============================================================ 1. the seed's inputs

#: The seed's "three feature maps" of the math view, 3 x 6 x 6 (channel, row, column).
MATH_MAPS = np.array(
    [
        [
            [1, 2, 3, 2, 2, 3],
            [4, 5, 6, 2, 2, 3],
            [2, 1, 7, 2, 1, 3],
            [3, 2, 4, 2, 2, 3],
            [3, 2, 4, 2, 2, 3],
            [3, 2, 4, 2, 2, 3],
        ],
        [
            [3, 2, 4, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [1, 2, 3, 3, 2, 2],
            [4, 5, 6, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [2, 1, 7, 2, 1, 3],
        ],
        [
            [1, 2, 3, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [4, 5, 6, 3, 2, 2],
            [3, 2, 4, 3, 2, 2],
            [2, 1, 7, 2, 1, 3],
        ],
    ],
    dtype=np.float64,
)
MATH_MAPS.flags.writeable = False

#: The seed's "1x1 kernel of depth 1": one weight per input map.
MATH_KERNEL = (0.1, 0.2, 0.4)

#: The cells whose arithmetic the seed spells out (T[0,0] and T[1,0]).
MATH_CELLS = ((0, 0), (1, 0))

#: The seed combines the digit maps with a plain "+": weight 1 for each map.
SEED_DIGIT_WEIGHTS = (1.0, 1.0)

#: The sizes the seed names: advanced view, dimensionality reduction, Inception (GoogLeNet 3a's 5x5 branch).
ADVANCED_SIZES = {"channels": 10, "height": 32, "width": 32, "filters": 4}
REDUCTION_SIZES = {"channels": 50, "height": 600, "width": 600, "filters": 20}
INCEPTION_SIZES = {"size": 28, "channels": 192, "reduce": 16, "out": 32, "kernel": 5}


# ============================================================ 2. what the seed printed

# Each entry: where in the seed's text the claim is, the text itself, and the claim as
# data. Used ONLY by check_seed() to compare with the computation; nothing is computed
# from these values.
SEED_PRINTED: dict[str, dict[str, Any]] = {
    "math.output_size": {
        "where": "Math view, naive view, the sentence in italics above 'Three feature maps'",
        "text": "3 feature maps of size 6x6(WXH) that were mapped to 1 feature maps of size 5x5(WxH)",
        "value": [5, 5],
    },
    "math.transformation": {
        "where": "Math view, 'Transformation', first line",
        "text": "3 *6*6 --> 3 *1*1 *1 --> 6*6* 1",
        "value": {"input": [3, 6, 6], "filters": [3, 1, 1, 1], "output": [6, 6, 1]},
    },
    "math.transformation_general": {
        "where": "Math view, 'Transformation', second line",
        "text": "C*W*H --> C*W*H *K --> W*H* K",
        "value": {"filters": ["C", "W", "H", "K"]},
    },
    "math.T00_arithmetic": {
        "where": "Math view, 'Output', first line",
        "text": "1 * 0.1 +3 * 0.2 + 1 * 0.4 = 1.1  for output T[0,0]",
        "value": {"cell": [0, 0], "terms": [[1, 0.1], [3, 0.2], [1, 0.4]], "result": 1.1},
    },
    "math.T10_arithmetic": {
        "where": "Math view, 'Output', second line",
        "text": "4 * 0.1 + 3 * 0.2 +3 * 0.4 = 2.2 for ouput T[1,0]",
        "value": {"cell": [1, 0], "terms": [[4, 0.1], [3, 0.2], [3, 0.4]], "result": 2.2},
    },
    "math.T": {
        "where": "Math view, 'Matrix output T after 1x1 convolution'",
        "text": "the 6 x 6 matrix printed with one decimal",
        "value": [
            [1.1, 1.4, 2.3, 2.0, 1.4, 1.5],
            [2.2, 1.7, 3.0, 2.0, 1.4, 1.5],
            [1.6, 1.3, 2.9, 2.0, 1.3, 1.5],
            [2.7, 3.2, 4.0, 2.0, 1.4, 1.5],
            [2.1, 1.4, 2.8, 2.0, 1.4, 1.5],
            [1.5, 0.8, 0.6, 1.4, 0.8, 2.1],
        ],
    },
    "digits.output_1": {
        "where": "Naive view, first matrix equation and its caption",
        "text": "Feature map 1 of digit 2 + Feature map 2 of digit 2 --> Output 1",
        "value": {"caption_digit": 2, "matrix": ["a a a", "0 0 b", "a a a", "b 0 0", "a a a"]},
    },
    "digits.output_2": {
        "where": "Naive view, second matrix equation and its caption",
        "text": "Feature map 1 of digit 2 + Feature map 2 of digit 2 --> Output 2",
        "value": {"caption_digit": 2, "matrix": ["a a a", "0 0 b", "a a a", "0 0 b", "a a a"]},
    },
    "digits.pixel": {
        "where": "Naive view, the bold sentence after the two equations",
        "text": (
            "a single pixel at location (3,2) contains b or not .if b is present network will detect "
            "it as digit 2 if b is not present after transformation network will detect as 3"
        ),
        "value": {"pixel": [3, 2], "b_present_means": 2, "b_absent_means": 3},
    },
    "advanced.shapes": {
        "where": "Advanced view",
        "text": "10 feature maps of 32x32 image is transformed to 4 feature maps of 32x32 image",
        "value": {"input": [10, 32, 32], "output": [4, 32, 32]},
    },
    "reduction.shapes": {
        "where": "Process of dimensionality reduction",
        "text": "50x 600x600 --> 50 x1x1 x20 --> 600x600 x20",
        "value": {"input": [50, 600, 600], "filters": [50, 1, 1, 20], "output": [600, 600, 20]},
    },
}


# ============================================================ helpers


def _to_list(t: torch.Tensor | np.ndarray | None) -> Any:
    if t is None:
        return None
    return t.detach().cpu().tolist() if isinstance(t, torch.Tensor) else np.asarray(t).tolist()


def _max_abs(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a64 = a.detach().double().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    b64 = b.detach().double().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
    return float(np.max(np.abs(a64 - b64)))


def _num(v: float, digits: int = 4) -> str:
    """A number as a reader writes it: 1.1, not 1.1000000000000003; 2, not 2.0."""
    r = round(float(v), digits)
    if r == 0:
        r = 0.0  # no "-0"
    return np.format_float_positional(r, trim="-")


def _symbol(ca: float, cb: float) -> str:
    """ca * a + cb * b written as the seed writes it: 'a', 'b', '0', '0.5a+2b'."""
    parts = []
    for coef, name in ((ca, "a"), (cb, "b")):
        if abs(coef) < 1e-12:
            continue
        c = _num(coef, 3)
        parts.append(name if c == "1" else f"-{name}" if c == "-1" else f"{c}{name}")
    return "+".join(parts).replace("+-", "-") if parts else "0"


def _check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


# ============================================================ 3. the examples


def math_view(
    maps: Any = MATH_MAPS,
    kernel: Sequence[float] = MATH_KERNEL,
    cells: Iterable[tuple[int, int]] = MATH_CELLS,
) -> dict[str, Any]:
    """Three maps, one 1x1 filter: the output map T and the arithmetic of chosen cells.

    T[i, j] = sum over c of kernel[c] * maps[c, i, j]: the filter never looks at a
    neighbour, only down through the channels at one pixel.
    """
    x = torch.as_tensor(np.array(maps, dtype=np.float64))[None]  # 1 x C x H x W
    if x.dim() != 4:
        raise ValueError(f"maps must be C x H x W, got shape {tuple(x.shape[1:])}")
    w = torch.tensor(list(kernel), dtype=torch.float64).reshape(1, -1, 1, 1)  # 1 x C x 1 x 1
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"kernel needs one weight per map: {x.shape[1]} maps, got {w.shape[1]} weights")
    t = conv1x1(x, w)[0, 0]  # H x W
    reference = conv1x1_reference(x[0].numpy(), w[:, :, 0, 0].numpy())[0]
    arithmetic = []
    for i, j in cells:
        terms = pixel_sum(x[0].numpy(), w[:, :, 0, 0].numpy(), i, j)
        arithmetic.append({"cell": [i, j], "terms": [[xv, wv] for wv, xv in terms], "value": float(t[i, j])})
    return {
        "title": "Math view: three 6x6 maps and the 1x1 kernel [0.1, 0.2, 0.4]",
        "inputs": {"maps": _to_list(x[0]), "kernel": [float(v) for v in kernel]},
        "input_shape": list(x.shape[1:]),
        "filter_shape": list(w.shape),
        "output": _to_list(t),
        "output_shape": [1, *t.shape],
        "arithmetic": arithmetic,
        "max_abs_diff_vs_reference": _max_abs(t, reference),
    }


def _digit_examples(n: int, rng: np.random.Generator, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy drawings of 2s and 3s: stroke values a, b in [0.5, 1.5], Gaussian pixel noise."""
    digits = rng.choice([2, 3], size=n)
    a = rng.uniform(0.5, 1.5, n)
    b = rng.uniform(0.5, 1.5, n)
    x = np.stack(
        [seed_digit_maps(int(d), float(aa), float(bb)) for d, aa, bb in zip(digits, a, b, strict=True)]
    )
    x = x + rng.normal(0.0, noise, x.shape)  # N x 2 x 5 x 3
    return torch.as_tensor(x), torch.as_tensor((digits == 2).astype(np.float64))


def _learn_digits(seed: int, steps: int, examples: int, noise: float) -> dict[str, Any]:
    """Learn a Conv1x1(2 -> 1) and a linear readout of its 5 x 3 output map from examples.

    An L1 penalty on the readout lets it keep only the pixels it needs: what it keeps
    shows, without being told, which output pixels tell 2 from 3.
    """
    rng = np.random.default_rng(seed)
    x_train, y_train = _digit_examples(examples, rng, noise)
    x_test, y_test = _digit_examples(examples, rng, noise)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv = Conv1x1(2, 1).double()
        readout = nn.Linear(15, 1).double()
    params = [*conv.parameters(), *readout.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        logits = readout(conv(x_train).flatten(1))[:, 0]  # N
        loss = F.binary_cross_entropy_with_logits(logits, y_train) + 1e-2 * readout.weight.abs().sum()
        loss.backward()
        opt.step()
    with torch.no_grad():

        def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
            return float(((readout(conv(x).flatten(1))[:, 0] > 0).double() == y).double().mean())

        return {
            "weight": _to_list(conv.weight.flatten()),
            "bias": float(conv.bias[0]) if conv.bias is not None else 0.0,
            "readout": _to_list(readout.weight.reshape(5, 3)),
            "readout_bias": float(readout.bias[0]),
            "final_loss": float(loss),
            "train_accuracy": accuracy(x_train, y_train),
            "test_accuracy": accuracy(x_test, y_test),
            "x_test": x_test,  # kept for the hand rule's accuracy; dropped before JSON
            "y_test": y_test,
        }


def digit_view(
    a: float = 1.0,
    b: float = 1.0,
    *,
    seed: int = 0,
    steps: int = 200,
    examples: int = 256,
    noise: float = 0.1,
) -> dict[str, Any]:
    """The seed's digit 2 and digit 3 maps (5 x 3, two channels), combined by a 1x1 convolution.

    The seed's weights (1, 1) add the two maps into one; that one map differs between 2
    and 3 at a single pixel, so reading that pixel classifies the digit. The same is
    then learned: a Conv1x1(2 -> 1) and a readout, from ``examples`` noisy drawings.
    """
    hand = torch.tensor(SEED_DIGIT_WEIGHTS, dtype=torch.float64).reshape(1, 2, 1, 1)  # 1 x 2 x 1 x 1
    digits: dict[str, Any] = {}
    outputs: dict[int, torch.Tensor] = {}
    for d in (2, 3):
        maps = torch.as_tensor(seed_digit_maps(d, a, b))  # 2 x 5 x 3
        y = conv1x1(maps[None], hand)[0, 0]  # 5 x 3
        # the output is linear in a and b: its a- and b-coefficients, from maps with a or b alone
        coef_a = conv1x1(torch.as_tensor(seed_digit_maps(d, 1.0, 0.0))[None], hand)[0, 0]
        coef_b = conv1x1(torch.as_tensor(seed_digit_maps(d, 0.0, 1.0))[None], hand)[0, 0]
        outputs[d] = y
        digits[str(d)] = {
            "maps": _to_list(maps),
            # the strokes alone (a = b = 1): the page scales them by the a and b the reader types
            "unit_maps": _to_list(seed_digit_maps(d, 1.0, 1.0)),
            "output": _to_list(y),
            "symbolic": [
                [_symbol(float(ca), float(cb)) for ca, cb in zip(ra, rb, strict=True)]
                for ra, rb in zip(coef_a, coef_b, strict=True)
            ],
            "coef_a": _to_list(coef_a),
            "coef_b": _to_list(coef_b),
        }
    differ = [[int(i), int(j)] for i, j in torch.nonzero(outputs[2] != outputs[3]).tolist()]
    # the readout pixel: where digit 2 has a stroke and digit 3 has none ("b present -> 2")
    pixel = next((p for p in differ if outputs[2][p[0], p[1]] != 0 and outputs[3][p[0], p[1]] == 0), None)
    if pixel is None:
        raise ValueError(f"with a={a}, b={b} no output pixel tells 2 from 3; expected b != 0")
    threshold = b / 2
    learned = _learn_digits(seed, steps, examples, noise)
    x_test, y_test = learned.pop("x_test"), learned.pop("y_test")
    with torch.no_grad():
        hand_test = conv1x1(x_test, hand)[:, 0, pixel[0], pixel[1]]  # N
        hand_accuracy = float(((hand_test > 0.25).double() == y_test).double().mean())
        learned_outputs = {}
        for d in (2, 3):
            lw = torch.tensor(learned["weight"], dtype=torch.float64).reshape(1, 2, 1, 1)
            lb = torch.tensor([learned["bias"]], dtype=torch.float64)
            ly = conv1x1(torch.as_tensor(seed_digit_maps(d, a, b))[None], lw, lb)[0, 0]  # 5 x 3
            readout = torch.tensor(learned["readout"], dtype=torch.float64)  # 5 x 3
            score = float((ly * readout).sum()) + learned["readout_bias"]
            learned_outputs[str(d)] = {
                "output": _to_list(ly),
                "score": score,
                "p_two": 1 / (1 + math.exp(-score)),
                "reads_as": 2 if score > 0 else 3,
            }
    weights = np.array(learned["readout"])  # 5 x 3
    order = np.argsort(-np.abs(weights), axis=None)[:3]
    learned["strongest_pixels"] = [
        {"pixel": [int(k // weights.shape[1]), int(k % weights.shape[1])], "weight": float(weights.flat[k])}
        for k in order
    ]
    learned["outputs"] = learned_outputs
    learned["examples"] = {"train": examples, "test": examples, "noise": noise, "steps": steps, "seed": seed}
    return {
        "title": "Naive view: digit 2 and digit 3, two 5x3 maps each, combined by a 1x1 convolution",
        "inputs": {"a": a, "b": b, "weights": list(SEED_DIGIT_WEIGHTS)},
        "digits": digits,
        "differing_pixels": differ,
        "readout": {
            "pixel": pixel,
            "threshold": threshold,
            "rule": f"output[{pixel[0]},{pixel[1]}] > {_num(threshold)} -> 2, otherwise 3",
            "values": {str(d): float(outputs[d][pixel[0], pixel[1]]) for d in (2, 3)},
            "reads_as": {str(d): 2 if outputs[d][pixel[0], pixel[1]] > threshold else 3 for d in (2, 3)},
            "test_accuracy": hand_accuracy,
            "test_threshold": 0.25,  # half the smallest stroke value b of the noisy examples
        },
        "learned": learned,
    }


def _wave_maps(channels: int, height: int, width: int) -> np.ndarray:
    """Smooth, distinct test maps (plane waves of varied direction), rounded to 2 decimals."""
    i, j = np.mgrid[0:height, 0:width] / max(height, width)
    maps = [
        np.sin(2 * np.pi * ((1 + c % 3) * i * math.cos(c) + (1 + c // 3) * j * math.sin(c)) + c)
        for c in range(channels)
    ]
    return np.round(np.stack(maps), 2)  # C x H x W


def advanced_view(
    channels: int = ADVANCED_SIZES["channels"],
    height: int = ADVANCED_SIZES["height"],
    width: int = ADVANCED_SIZES["width"],
    filters: int = ADVANCED_SIZES["filters"],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """10 maps of 32 x 32 -> 4 maps of 32 x 32: four filters, each a weighted sum of the ten maps."""
    _check_sizes(channels=channels, height=height, width=width, filters=filters)
    x = torch.as_tensor(_wave_maps(channels, height, width))[None]  # 1 x 10 x 32 x 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = Conv1x1(channels, filters).double()
    with torch.no_grad():
        y = layer(x)[0]  # 4 x 32 x 32
        ref = conv1x1_reference(
            x[0].numpy(), layer.weight.numpy(), layer.bias.numpy() if layer.bias is not None else None
        )
        conv2d = F.conv2d(x, layer.weight, layer.bias)[0]
    params = filters * channels + filters
    return {
        "title": f"Advanced view: {channels} maps of {height}x{width} -> {filters} maps of {height}x{width}",
        "inputs": {
            "maps": _to_list(x[0]),
            "weight": _to_list(layer.weight[:, :, 0, 0]),
            "bias": _to_list(layer.bias),
        },
        "input_shape": [channels, height, width],
        "output_shape": list(y.shape),
        "output": _to_list(y),
        "params": params,
        "params_without_bias": filters * channels,
        "macs": filters * channels * height * width,
        "max_abs_diff_vs_reference": _max_abs(y, ref),
        "max_abs_diff_vs_conv2d": _max_abs(y, conv2d),
    }


def conv_cost(
    in_channels: int, out_channels: int, kernel: int, height: int, width: int, *, bias: bool = False
) -> dict[str, int]:
    """Parameters and multiply-adds of a k x k convolution producing out_channels maps of height x width.

    MACs = out_channels * height * width * (in_channels * k * k): one multiply-add per
    weight per output pixel. Bias additions are never counted in MACs; ``bias`` adds
    ``out_channels`` to the parameter count.
    """
    _check_sizes(
        in_channels=in_channels, out_channels=out_channels, kernel=kernel, height=height, width=width
    )
    weights = out_channels * in_channels * kernel * kernel
    return {
        "params": weights + (out_channels if bias else 0),
        "macs": out_channels * height * width * in_channels * kernel * kernel,
    }


def _median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    fn()  # warm up: the first call allocates and picks kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def reduction_example(
    channels: int = REDUCTION_SIZES["channels"],
    height: int = REDUCTION_SIZES["height"],
    width: int = REDUCTION_SIZES["width"],
    filters: int = REDUCTION_SIZES["filters"],
    *,
    timing: bool = True,
    repeats: int = 5,
    limits: Any = None,
) -> dict[str, Any]:
    """C x H x W -> K x H x W with K filters of C x 1 x 1: parameters, multiply-adds, bytes, time.

    With ``timing``, onebyone.conv1x1 and F.conv2d are each timed on one
    1 x C x H x W float32 input (median of ``repeats`` runs after a warm-up), and the
    roofline time from :mod:`onebyone.machine` (``limits``: a ``machine.Peaks``, or
    measured/cached when None) says how close to the machine's limit the op runs.
    """
    _check_sizes(channels=channels, height=height, width=width, filters=filters, repeats=repeats)
    cost = conv_cost(channels, filters, 1, height, width)
    flops = 2 * cost["macs"]
    in_bytes = channels * height * width * FLOAT32_BYTES
    out_bytes = filters * height * width * FLOAT32_BYTES
    weight_bytes = filters * channels * FLOAT32_BYTES
    result: dict[str, Any] = {
        "title": f"Dimensionality reduction: {channels}x{height}x{width} -> {filters}x{height}x{width}",
        "inputs": {"channels": channels, "height": height, "width": width, "filters": filters},
        "filter_shape": [filters, channels, 1, 1],
        "params": cost["params"],
        "params_with_bias": cost["params"] + filters,
        "macs": cost["macs"],
        "flops": flops,
        "bias_counted": False,
        "bytes": {
            "input": in_bytes,
            "output": out_bytes,
            "weights": weight_bytes,
            "total": in_bytes + out_bytes + weight_bytes,
            "dtype": "float32",
        },
        "arithmetic_intensity": flops / (in_bytes + out_bytes + weight_bytes),
        "timing": None,
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, height, width, generator=gen)  # 1 x 50 x 600 x 600
    w = torch.randn(filters, channels, 1, 1, generator=gen)  # 20 x 50 x 1 x 1
    with torch.no_grad():
        y = conv1x1(x, w)  # 1 x 20 x 600 x 600
        result["output_shape"] = list(y.shape[1:])
        result["max_abs_diff_vs_conv2d"] = _max_abs(y, F.conv2d(x, w))
        if timing:
            from . import machine

            t_ours, runs_ours = _median_seconds(lambda: conv1x1(x, w), repeats)
            t_torch, runs_torch = _median_seconds(lambda: F.conv2d(x, w), repeats)
            peaks = limits if limits is not None else machine.peaks()
            roof = machine.roofline_seconds(flops, in_bytes + out_bytes + weight_bytes, peaks)
            result["timing"] = {
                "conv1x1_s": t_ours,
                "conv2d_s": t_torch,
                "conv1x1_runs_s": runs_ours,
                "conv2d_runs_s": runs_torch,
                "repeats": repeats,
                "statistic": f"median of {repeats} runs after one warm-up",
                "threads": torch.get_num_threads(),
                "machine": peaks.name,
                "torch": torch.__version__,
                "gemm_gflops": peaks.gemm_gflops,
                "bandwidth_gbs": peaks.bandwidth_gbs,
                "roofline_s": roof,
                "roofline_fraction": roof / t_ours,
                "conv1x1_gflops": flops / t_ours / 1e9,
            }
    return result


def depth_view(seed: int = 0) -> dict[str, Any]:
    """More filters, more maps; stacked 1x1 + ReLU is an MLP at every pixel; 1x1 = Linear per pixel."""
    x = torch.as_tensor(np.array(MATH_MAPS))[None]  # 1 x 3 x 6 x 6
    # more filters -> more output maps; each filter's map is independent of the others.
    # The seed's kernel, the same weights reversed, and map 0 minus map 1 (a contrast).
    bank = torch.tensor([MATH_KERNEL, (0.4, 0.2, 0.1), (1.0, -1.0, 0.0)], dtype=torch.float64)  # 3 x 3
    growing = []
    for k in (1, 2, 3):
        y = conv1x1(x, bank[:k])[0]  # k x 6 x 6
        growing.append({"filters": _to_list(bank[:k]), "output_shape": list(y.shape), "output": _to_list(y)})
    first_unchanged = max(
        _max_abs(torch.tensor(g["output"][0]), torch.tensor(growing[0]["output"][0])) for g in growing
    )

    # NiN's "cascaded cross channel parametric pooling": 1x1 -> ReLU -> 1x1 -> ReLU -> 1x1
    widths = (3, 8, 4, 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        convs = [Conv1x1(cin, cout).double() for cin, cout in itertools.pairwise(widths)]
    mlp = nn.Sequential()
    for i, conv in enumerate(convs):
        linear = nn.Linear(conv.in_channels, conv.out_channels).double()
        with torch.no_grad():
            linear.weight.copy_(conv.weight[:, :, 0, 0])
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        mlp.append(linear)
        if i < len(convs) - 1:
            mlp.append(nn.ReLU())
    with torch.no_grad():
        h = x
        for i, conv in enumerate(convs):
            h = conv(h)
            h = torch.relu(h) if i < len(convs) - 1 else h  # 1 x 2 x 6 x 6 at the end
        pixels = x[0].permute(1, 2, 0).reshape(-1, widths[0])  # 36 x 3: one row per pixel
        per_pixel = mlp(pixels).reshape(6, 6, widths[-1]).permute(2, 0, 1)  # 2 x 6 x 6
        mlp_diff = _max_abs(h[0], per_pixel)

        # one 1x1 convolution = one nn.Linear applied at every pixel
        linear = nn.Linear(3, 1).double()
        linear.weight.copy_(torch.tensor([MATH_KERNEL], dtype=torch.float64))
        linear.bias.zero_()
        t_linear = linear(pixels).reshape(6, 6)
        t_conv = conv1x1(x, torch.tensor([MATH_KERNEL], dtype=torch.float64))[0, 0]
    return {
        "title": "Depth: more filters -> more maps; stacked 1x1 + ReLU = an MLP at every pixel",
        "more_filters": growing,
        "first_map_max_change": first_unchanged,
        "mlp": {
            "widths": list(widths),
            "weights": [_to_list(c.weight[:, :, 0, 0]) for c in convs],
            "biases": [_to_list(c.bias) for c in convs],
            "output": _to_list(h[0]),
            "output_shape": list(h.shape[1:]),
            "max_abs_diff_vs_linear_per_pixel": mlp_diff,
        },
        "linear": {
            "output_conv1x1": _to_list(t_conv),
            "output_linear": _to_list(t_linear),
            "max_abs_diff": _max_abs(t_conv, t_linear),
        },
    }


def inception_reduction(
    size: int = INCEPTION_SIZES["size"],
    channels: int = INCEPTION_SIZES["channels"],
    reduce: int = INCEPTION_SIZES["reduce"],
    out: int = INCEPTION_SIZES["out"],
    kernel: int = INCEPTION_SIZES["kernel"],
) -> dict[str, Any]:
    """A k x k convolution straight on C channels against a 1x1 reduction to ``reduce`` channels first.

    Both keep size x size ("same" padding, as in Inception). MACs exclude bias.
    """
    direct = conv_cost(channels, out, kernel, size, size)
    step1 = conv_cost(channels, reduce, 1, size, size)
    step2 = conv_cost(reduce, out, kernel, size, size)
    reduced = {"params": step1["params"] + step2["params"], "macs": step1["macs"] + step2["macs"]}
    return {
        "title": (
            f"Inception reduction: {kernel}x{kernel} conv on {size}x{size}x{channels} -> {out}, "
            f"with and without a 1x1 -> {reduce} first"
        ),
        "inputs": {"size": size, "channels": channels, "reduce": reduce, "out": out, "kernel": kernel},
        "direct": {"layers": [{"name": f"{kernel}x{kernel} conv {channels} -> {out}", **direct}], **direct},
        "reduced": {
            "layers": [
                {"name": f"1x1 conv {channels} -> {reduce}", **step1},
                {"name": f"{kernel}x{kernel} conv {reduce} -> {out}", **step2},
            ],
            **reduced,
        },
        "macs_ratio": direct["macs"] / reduced["macs"],
        "params_ratio": direct["params"] / reduced["params"],
        "bias_counted": False,
    }


# ============================================================ 4. the seed's claims, checked


def _check(claim: str, computed: Any, agrees: bool, why: str) -> dict[str, Any]:
    printed = SEED_PRINTED[claim]
    return {
        "claim": claim,
        "where": printed["where"],
        "text": printed["text"],
        "seed": printed["value"],
        "computed": computed,
        "agrees": bool(agrees),
        "explanation": why,
    }


def _parse_symbolic(rows: Sequence[str]) -> list[list[str]]:
    return [row.split() for row in rows]


_PIXEL_CONVENTIONS: tuple[tuple[str, Callable[[int, int], tuple[int, int]]], ...] = (
    ("(row, column) counting from 0", lambda p, q: (p, q)),
    ("(row, column) counting from 1", lambda p, q: (p - 1, q - 1)),
    ("(column, row) counting from 0", lambda p, q: (q, p)),
    ("(column, row) counting from 1", lambda p, q: (q - 1, p - 1)),
)


def check_seed(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every claim in :data:`SEED_PRINTED` against the computed examples, one entry per claim (T: per cell).

    ``doc`` holds the examples under "math", "digits", "advanced" and "reduction" (as
    :func:`examples` builds it).
    """
    mv, digits, advanced, reduction = doc["math"], doc["digits"], doc["advanced"], doc["reduction"]
    checks = []
    t = np.array(mv["output"])
    h, w = t.shape

    size = SEED_PRINTED["math.output_size"]["value"]
    checks.append(
        _check(
            "math.output_size",
            [h, w],
            [h, w] == size,
            f"conv1x1 maps {h}x{w} inputs to a {h}x{w} output: a 1x1 filter with stride 1 and no padding "
            f"visits every pixel once, so height and width never change. The seed's own 'Transformation' "
            f"line agrees ('--> 6*6* 1'); '{size[0]}x{size[1]}' is what a 2x2 filter would give.",
        )
    )

    tr = SEED_PRINTED["math.transformation"]["value"]
    c = mv["input_shape"][0]
    filters = [c, 1, 1, mv["filter_shape"][0]]
    out = [h, w, mv["output_shape"][0]]
    ok = tr["input"] == mv["input_shape"] and tr["filters"] == filters and tr["output"] == out
    checks.append(
        _check(
            "math.transformation",
            {"input": mv["input_shape"], "filters": filters, "output": out},
            ok,
            f"input {'*'.join(map(str, mv['input_shape']))}, one filter of {c}*1*1, output {h}*{w}*1: "
            "as printed."
            if ok
            else "the computed shapes differ from the printed ones",
        )
    )

    weights_in_bank = int(np.prod(mv["filter_shape"]))
    seed_formula = c * w * h * mv["filter_shape"][0]
    checks.append(
        _check(
            "math.transformation_general",
            {"filters": ["C", "1", "1", "K"], "weights_with_math_view_sizes": weights_in_bank},
            False,
            f"the filter bank is K filters of C x 1 x 1 (weight shape {tuple(mv['filter_shape'])} here): "
            f"C*1*1*K = {weights_in_bank} weights, as the seed's own numeric line '3 *1*1 *1' says. "
            f"'C*W*H *K' would be {seed_formula} weights for the math view, one per input value: "
            f"that is a fully connected layer over the whole map, not a 1x1 convolution.",
        )
    )

    x = np.array(mv["inputs"]["maps"])
    kernel = mv["inputs"]["kernel"]
    for key in ("math.T00_arithmetic", "math.T10_arithmetic"):
        printed = SEED_PRINTED[key]["value"]
        i, j = printed["cell"]
        terms = [[xv, wv] for wv, xv in pixel_sum(x, kernel, i, j)]
        value = float(t[i, j])
        ok = terms == printed["terms"] and round(value, 1) == printed["result"]
        shown = " + ".join(f"{_num(a)}*{_num(b)}" for a, b in terms)
        checks.append(
            _check(
                key,
                {"cell": [i, j], "terms": terms, "result": value},
                ok,
                f"T[{i},{j}] = {shown} = {_num(value)}: the values at row {i}, column {j} of the three maps "
                f"times the kernel"
                + ("; the seed's arithmetic is right." if ok else "; the seed's differs."),
            )
        )

    printed_t = SEED_PRINTED["math.T"]["value"]
    for i in range(h):
        for j in range(w):
            value = float(t[i, j])
            ok = abs(round(value, 1) - printed_t[i][j]) < 1e-9
            terms = [[xv, wv] for wv, xv in pixel_sum(x, kernel, i, j)]
            shown = " + ".join(f"{_num(a)}*{_num(b)}" for a, b in terms)
            why = f"T[{i},{j}] = {shown} = {_num(value)}" + (
                "" if ok else f"; the seed prints {printed_t[i][j]}, the computed {_num(value)} is right"
            )
            entry = _check("math.T", {"cell": [i, j], "value": value}, ok, why)
            entry["seed"] = {"cell": [i, j], "value": printed_t[i][j]}
            checks.append(entry)

    symbolic = {d: digits["digits"][d]["symbolic"] for d in ("2", "3")}
    for key in ("digits.output_1", "digits.output_2"):
        printed = SEED_PRINTED[key]["value"]
        matrix = _parse_symbolic(printed["matrix"])
        match = [int(d) for d in ("2", "3") if symbolic[d] == matrix]
        label = key[-1]
        ok = match == [printed["caption_digit"]]
        if ok:
            why = (
                f"the printed Output {label} is what the 1x1 convolution (weights 1, 1) gives for "
                f"digit {match[0]}."
            )
        elif match:
            why = (
                f"the printed Output {label} equals the computed output of digit {match[0]}, drawn from "
                f"digit {match[0]}'s maps, and differs from digit {printed['caption_digit']}'s; the caption "
                f"says digit {printed['caption_digit']}. The matrix is right; the caption should read "
                f"'digit {match[0]}'."
            )
        else:
            why = f"the printed Output {label} matches neither digit's computed output."
        checks.append(
            _check(key, {"matches_digit": match, "digit_2": symbolic["2"], "digit_3": symbolic["3"]}, ok, why)
        )

    pix = SEED_PRINTED["digits.pixel"]["value"]
    p, q = pix["pixel"]
    readings: list[dict[str, Any]] = []
    for name, convert in _PIXEL_CONVENTIONS:
        i, j = convert(p, q)
        if not (0 <= i < len(symbolic["2"]) and 0 <= j < len(symbolic["2"][0])):
            readings.append({"convention": name, "pixel": [i, j], "in_range": False, "claim_holds": False})
            continue
        b2 = digits["digits"]["2"]["coef_b"][i][j] != 0
        b3 = digits["digits"]["3"]["coef_b"][i][j] != 0
        readings.append(
            {
                "convention": name,
                "pixel": [i, j],
                "in_range": True,
                "digit_2": symbolic["2"][i][j],
                "digit_3": symbolic["3"][i][j],
                "claim_holds": b2 and not b3,
            }
        )
    holds = [r for r in readings if r["claim_holds"]]
    right = digits["readout"]["pixel"]
    parts = []
    for r in readings:
        if not r["in_range"]:
            parts.append(f"{r['convention']}: ({p},{q}) is off the 5x3 map")
        else:
            parts.append(
                f"{r['convention']}: row {r['pixel'][0]}, column {r['pixel'][1]} holds "
                f"{r['digit_2']} for digit 2 and {r['digit_3']} for digit 3"
            )
    why = "; ".join(parts) + ". "
    if holds:
        why += f"The claim holds when (3,2) is read as {holds[0]['convention']}."
    else:
        why += (
            f"No reading makes the claim true. Read as the seed reads T[1,0] (row, column from 0), "
            f"pixel ({p},{q}) holds b for digit 3, not 2: the rule is reversed. The pixel where "
            f"'b present -> 2, absent -> 3' holds is row {right[0]}, column {right[1]} from 0 "
            f"(row {right[0] + 1}, column {right[1] + 1} from 1)."
        )
    checks.append(
        _check("digits.pixel", {"readings": readings, "pixel_where_claim_holds": right}, bool(holds), why)
    )

    adv = SEED_PRINTED["advanced.shapes"]["value"]
    ok = adv["input"] == advanced["input_shape"] and adv["output"] == advanced["output_shape"]
    checks.append(
        _check(
            "advanced.shapes",
            {"input": advanced["input_shape"], "output": advanced["output_shape"]},
            ok,
            f"{advanced['params']} parameters map {'x'.join(map(str, advanced['input_shape']))} to "
            f"{'x'.join(map(str, advanced['output_shape']))}"
            + (": as printed." if ok else ": not as printed."),
        )
    )

    red = SEED_PRINTED["reduction.shapes"]["value"]
    k, cin = reduction["filter_shape"][:2]
    computed = {
        "input": [
            reduction["inputs"]["channels"],
            reduction["inputs"]["height"],
            reduction["inputs"]["width"],
        ],
        "filters": [cin, 1, 1, k],
        "output": [*reduction["output_shape"][1:], reduction["output_shape"][0]],
    }
    ok = computed == red
    checks.append(
        _check(
            "reduction.shapes",
            computed,
            ok,
            f"{k} filters of {cin}x1x1 turn {cin} maps into {k}, each filter one {computed['output'][0]}x"
            f"{computed['output'][1]} map" + (": as printed." if ok else ": not as printed."),
        )
    )
    return checks


# ============================================================ 5. everything, as one document


def examples(
    *, timing: bool = True, repeats: int = 5, limits: Any = None, progress: bool = False
) -> dict[str, Any]:
    """Every example computed, the seed's claims checked: one JSON-ready document.

    Args:
        timing: time the reduction example (and read the machine's peaks for its roofline).
        repeats: timed runs per op; the median is reported.
        limits: a ``onebyone.machine.Peaks`` to use instead of the measured/cached one.
        progress: show a progress bar on stderr.
    """
    from tqdm import tqdm

    steps = ["math", "digits", "advanced", "reduction", "depth", "inception"]
    doc: dict[str, Any] = {
        "onebyone": __version__,
        "conventions": {
            "pixel": "[i, j] = row i, column j, counting from 0",
            "macs": "1 multiply-add (MAC) = 2 FLOPs; bias additions not counted",
            "bytes": "float32, 4 bytes per value",
        },
    }
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "math": math_view,
        "digits": digit_view,
        "advanced": advanced_view,
        "reduction": functools.partial(reduction_example, timing=timing, repeats=repeats, limits=limits),
        "depth": depth_view,
        "inception": inception_reduction,
    }
    for name in tqdm(steps, desc="explain", file=sys.stderr, disable=not progress, leave=False):
        doc[name] = builders[name]()
    checks = check_seed(doc)
    doc["checks"] = checks
    doc["disagreements"] = [c for c in checks if not c["agrees"]]
    return doc


# ============================================================ 6a. terminal text


def _matrix_lines(m: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[c if isinstance(c, str) else _num(c) for c in row] for row in m]
    width = max(len(c) for row in cells for c in row)
    return ["[ " + " ".join(c.rjust(width) for c in row) + " ]" for row in cells]


def _side_by_side(
    titles: Sequence[str], matrices: Sequence[Sequence[Sequence[Any]]], gap: str = "   "
) -> list[str]:
    blocks = [_matrix_lines(m) for m in matrices]
    widths = [max(len(t), *(len(line) for line in b)) for t, b in zip(titles, blocks, strict=True)]
    rows = max(len(b) for b in blocks)
    lines = [gap.join(t.ljust(wd) for t, wd in zip(titles, widths, strict=True)).rstrip()]
    for r in range(rows):
        lines.append(
            gap.join(
                (b[r] if r < len(b) else "").ljust(wd) for b, wd in zip(blocks, widths, strict=True)
            ).rstrip()
        )
    return lines


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit} ({_count(n)} B)"
    return f"{_count(n)} B"


def _heading(n: int, title: str) -> list[str]:
    text = f"{n}. {title}"
    return ["", text, "-" * len(text)]


def render_text(doc: dict[str, Any]) -> str:
    """The examples as readable, aligned text for the terminal."""
    out: list[str] = ["The 1x1 convolution, the seed's examples computed by onebyone " + doc["onebyone"]]
    out.append("Pixels are [row, column] counting from 0. 1 MAC = 2 FLOPs; bias not counted in MACs.")

    m = doc["math"]
    out += _heading(1, m["title"])
    out += _side_by_side(["X[0]", "X[1]", "X[2]"], m["inputs"]["maps"])
    out.append("")
    out.append(
        "kernel (one 1x1 filter, one weight per map): " + ", ".join(_num(v) for v in m["inputs"]["kernel"])
    )
    out.append(
        f"shapes: {'x'.join(map(str, m['input_shape']))} -> filter {'x'.join(map(str, m['filter_shape']))} "
        f"-> {'x'.join(map(str, m['output_shape']))}"
    )
    out.append("")
    out += _side_by_side(
        [f"T = conv1x1(X, kernel)   ({'x'.join(map(str, m['output_shape'][1:]))})"], [m["output"]]
    )
    for cell in m["arithmetic"]:
        i, j = cell["cell"]
        shown = " + ".join(f"{_num(xv)}*{_num(wv)}" for xv, wv in cell["terms"])
        out.append(f"T[{i},{j}] = {shown} = {_num(cell['value'])}")
    out.append(
        "largest difference from the float64 definition (onebyone.reference): "
        f"{m['max_abs_diff_vs_reference']:.1e}"
    )

    d = doc["digits"]
    out += _heading(2, d["title"])
    a, b = d["inputs"]["a"], d["inputs"]["b"]
    for digit in ("2", "3"):
        g = d["digits"][digit]
        out.append(f"digit {digit}:")
        out += [
            "  " + line
            for line in _side_by_side(
                ["map 1 (a)", "map 2 (b)", "1*map1 + 1*map2", f"(a={_num(a)}, b={_num(b)})"],
                [g["maps"][0], g["maps"][1], g["symbolic"], g["output"]],
            )
        ]
    r = d["readout"]
    out.append(
        "pixels where the outputs of 2 and 3 differ: "
        + ", ".join(f"[{i},{j}]" for i, j in d["differing_pixels"])
    )
    out.append(
        f"readout by hand: {r['rule']}; "
        f"digit 2 gives {_num(r['values']['2'])} -> reads as {r['reads_as']['2']}, "
        f"digit 3 gives {_num(r['values']['3'])} -> reads as {r['reads_as']['3']}"
    )
    out.append(
        f"  on {d['learned']['examples']['test']} noisy test drawings (threshold {r['test_threshold']}): "
        f"accuracy {r['test_accuracy']:.1%}"
    )
    learned = d["learned"]
    ex = learned["examples"]
    out.append(
        f"learned: Conv1x1(2 -> 1) + a linear readout of its 5x3 map, {ex['steps']} Adam steps on "
        f"{ex['train']} noisy drawings (noise {ex['noise']}, seed {ex['seed']})"
    )
    out.append(
        f"  1x1 weights {', '.join(_num(v, 3) for v in learned['weight'])}, bias {_num(learned['bias'], 3)}; "
        f"train accuracy {learned['train_accuracy']:.1%}, test accuracy {learned['test_accuracy']:.1%}"
    )
    strongest = ", ".join(
        f"[{s['pixel'][0]},{s['pixel'][1]}] {_num(s['weight'], 3)}" for s in learned["strongest_pixels"]
    )
    out.append(f"  the readout's strongest pixels: {strongest}")
    out.append("  readout weights:")
    out += [
        "    " + line for line in _matrix_lines([[_num(v, 3) for v in row] for row in learned["readout"]])
    ]
    for digit in ("2", "3"):
        lo = learned["outputs"][digit]
        out.append(f"  the seed's digit {digit}: P(digit 2) = {lo['p_two']:.3f} -> reads as {lo['reads_as']}")

    adv = doc["advanced"]
    out += _heading(3, adv["title"])
    out.append(
        f"weights {len(adv['inputs']['weight'])}x{len(adv['inputs']['weight'][0])} "
        f"+ bias {len(adv['inputs']['bias'])}: "
        f"{adv['params']} parameters; {_count(adv['macs'])} MACs"
    )
    out.append(f"output shape {'x'.join(map(str, adv['output_shape']))}")
    out.append(
        f"largest difference: from the float64 definition {adv['max_abs_diff_vs_reference']:.1e}, "
        f"from F.conv2d {adv['max_abs_diff_vs_conv2d']:.1e}"
    )

    red = doc["reduction"]
    out += _heading(4, red["title"])
    ins = red["inputs"]
    out.append(
        f"filters: {ins['filters']} of {ins['channels']}x1x1 "
        f"-> output {'x'.join(map(str, red['output_shape']))}"
    )
    out.append(
        f"parameters: {_count(red['params'])} weights "
        f"({_count(red['params_with_bias'])} with a bias per filter)"
    )
    out.append(f"multiply-adds: {_count(red['macs'])} MACs = {_count(red['flops'])} FLOPs (bias not counted)")
    by = red["bytes"]
    out.append(
        f"memory (float32): input {_bytes(by['input'])}, output {_bytes(by['output'])}, "
        f"weights {_bytes(by['weights'])}"
    )
    out.append(f"arithmetic intensity: {red['arithmetic_intensity']:.2f} FLOPs per byte moved")
    tm = red["timing"]
    if tm is None:
        out.append("time: not measured (--no-timing)")
    else:
        out.append(
            f"time on this machine ({tm['machine']}, {tm['threads']} threads, {tm['statistic']}): "
            f"onebyone.conv1x1 {tm['conv1x1_s'] * 1e3:.2f} ms ({tm['conv1x1_gflops']:.1f} GFLOP/s), "
            f"F.conv2d {tm['conv2d_s'] * 1e3:.2f} ms"
        )
        out.append(
            f"roofline (GEMM {tm['gemm_gflops']:.1f} GFLOP/s, memory {tm['bandwidth_gbs']:.1f} GB/s): "
            f"{tm['roofline_s'] * 1e3:.2f} ms at best; conv1x1 runs at {tm['roofline_fraction']:.0%} of it"
        )

    dep = doc["depth"]
    out += _heading(5, dep["title"])
    mf = dep["more_filters"]
    titles = [f"filter {k}: {', '.join(_num(v, 3) for v in f)}" for k, f in enumerate(mf[-1]["filters"])]
    out += _side_by_side(titles, mf[-1]["output"])
    out.append(
        "1, 2, 3 filters give outputs of shape "
        + ", ".join("x".join(map(str, g["output_shape"])) for g in mf)
        + f"; adding filters changes the first map by {dep['first_map_max_change']:.1e}"
    )
    mlp = dep["mlp"]
    out.append(
        f"stacked 1x1 -> ReLU -> 1x1 -> ReLU -> 1x1 (widths {' -> '.join(map(str, mlp['widths']))}) against "
        f"nn.Linear layers with the same weights applied at each of the 36 pixels: largest difference "
        f"{mlp['max_abs_diff_vs_linear_per_pixel']:.1e}"
    )
    out.append(
        "one 1x1 convolution (the math view's kernel) against nn.Linear(3, 1) at every pixel: "
        "largest difference "
        f"{dep['linear']['max_abs_diff']:.1e}"
    )

    inc = doc["inception"]
    out += _heading(6, inc["title"])
    rows = [(layer["name"], layer["params"], layer["macs"]) for layer in inc["direct"]["layers"]]
    rows.append(("  total, direct", inc["direct"]["params"], inc["direct"]["macs"]))
    rows += [(layer["name"], layer["params"], layer["macs"]) for layer in inc["reduced"]["layers"]]
    rows.append(("  total, with the 1x1 reduction", inc["reduced"]["params"], inc["reduced"]["macs"]))
    name_w = max(len(r[0]) for r in rows)
    out.append(f"{'layer'.ljust(name_w)}  {'parameters':>12}  {'MACs':>14}")
    for name, params, macs in rows:
        out.append(f"{name.ljust(name_w)}  {_count(params):>12}  {_count(macs):>14}")
    out.append(
        f"the 1x1 reduction needs {inc['macs_ratio']:.2f}x fewer MACs and "
        f"{inc['params_ratio']:.2f}x fewer parameters "
        "(weights only, 'same' padding)"
    )

    dis = doc["disagreements"]
    out += _heading(
        7, f"Where the seed's text disagrees with the computation ({len(dis)} of {len(doc['checks'])} claims)"
    )
    for n, c in enumerate(dis, 1):
        out.append(f'({n}) {c["where"]}: "{c["text"]}"')
        out.append(f"    seed: {json.dumps(c['seed'])}")
        computed = c["computed"]
        if c["claim"] == "digits.pixel":
            computed = {"pixel_where_claim_holds": computed["pixel_where_claim_holds"]}
        elif c["claim"].startswith("digits.output"):
            computed = {"matches_digit": computed["matches_digit"]}
        elif c["claim"] == "math.T":
            computed = {"cell": computed["cell"], "value": round(computed["value"], 10)}
        out.append(f"    computed: {json.dumps(computed)}")
        out.append(f"    {c['explanation']}")
    return "\n".join(out) + "\n"


# ============================================================ 6b. files, written atomically



def _prepare_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"expected a directory to write into, got the file {str(path)!r}")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ============================================================ 6c. figures (matplotlib, Agg)


def _show(fig: Any, ax: Any, m: Any, title: str, *, annotate: bool = True, cmap: str = "viridis") -> None:
    data = np.asarray(m, dtype=np.float64)
    im = ax.imshow(data, cmap=cmap)
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(data.shape[1]) if data.shape[1] <= 8 else [])
    ax.set_yticks(range(data.shape[0]) if data.shape[0] <= 8 else [])
    ax.tick_params(labelsize=7)
    if annotate and data.size <= 64:
        lo, hi = float(data.min()), float(data.max())
        for (i, j), v in np.ndenumerate(data):
            light = hi > lo and (v - lo) / (hi - lo) < 0.6
            ax.text(
                j, i, _num(v, 2), ha="center", va="center", fontsize=7, color="white" if light else "black"
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, buf.getvalue())
    return path


def write_figures(doc: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """PNG figures of every example (input maps, kernels, outputs, with colour bars) in ``out_dir``."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas only

    out = _prepare_dir(out_dir)
    written = []

    m = doc["math"]
    fig = Figure(figsize=(15, 3.4), layout="constrained")
    axes = fig.subplots(1, 5, width_ratios=[1, 1, 1, 0.35, 1])
    for c in range(3):
        _show(fig, axes[c], m["inputs"]["maps"][c], f"input map X[{c}]")
    _show(fig, axes[3], np.array(m["inputs"]["kernel"])[:, None], "1x1 kernel", cmap="magma")
    _show(fig, axes[4], m["output"], "output T = conv1x1(X, kernel)", cmap="cividis")
    fig.suptitle(m["title"])
    written.append(_save(fig, out / "math_view.png"))

    d = doc["digits"]
    fig = Figure(figsize=(13, 6.4), layout="constrained")
    axes = fig.subplots(2, 5)
    for row, digit in enumerate(("2", "3")):
        g = d["digits"][digit]
        _show(fig, axes[row, 0], g["maps"][0], f"digit {digit}: map 1 (a)")
        _show(fig, axes[row, 1], g["maps"][1], f"digit {digit}: map 2 (b)")
        _show(fig, axes[row, 2], g["output"], "weights (1, 1): output", cmap="cividis")
        _show(
            fig,
            axes[row, 3],
            d["learned"]["outputs"][digit]["output"],
            "learned weights: output",
            cmap="cividis",
        )
    _show(fig, axes[0, 4], np.array(d["learned"]["weight"])[:, None], "learned 1x1 kernel", cmap="magma")
    _show(fig, axes[1, 4], d["learned"]["readout"], "learned readout weights", cmap="coolwarm")
    fig.suptitle(d["title"])
    written.append(_save(fig, out / "digits.png"))

    adv = doc["advanced"]
    fig = Figure(figsize=(14, 5.4), layout="constrained")
    grid = fig.add_gridspec(2, 7, width_ratios=[1, 1, 1, 1, 1, 1.5, 1])
    for c, mp in enumerate(adv["inputs"]["maps"]):
        _show(fig, fig.add_subplot(grid[c // 5, c % 5]), mp, f"input {c}", annotate=False)
    # drawn transposed, one column per filter: tall and narrow, it fits beside the maps
    kernels = np.array(adv["inputs"]["weight"]).T  # 10 x 4
    _show(
        fig,
        fig.add_subplot(grid[:, 5]),
        kernels,
        "1x1 kernels\n(rows: input maps,\ncolumns: filters)",
        cmap="magma",
    )
    sub = grid[:, 6].subgridspec(4, 1)
    for k, mp in enumerate(adv["output"]):
        _show(fig, fig.add_subplot(sub[k]), mp, f"output {k}", annotate=False, cmap="cividis")
    fig.suptitle(adv["title"])
    written.append(_save(fig, out / "advanced_view.png"))

    dep = doc["depth"]
    last = dep["more_filters"][-1]
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=[0.6, 1, 1, 1])
    _show(fig, axes[0], last["filters"], "3 filters x 3 weights", cmap="magma")
    for k, mp in enumerate(last["output"]):
        _show(fig, axes[k + 1], mp, f"output map {k}", cmap="cividis")
    fig.suptitle("Depth: each added 1x1 filter adds one output map")
    written.append(_save(fig, out / "depth.png"))

    inc = doc["inception"]
    red = doc["reduction"]
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    names = ["direct", "1x1 reduction"]
    macs_bars = ax1.bar(
        names, [inc["direct"]["macs"] / 1e6, inc["reduced"]["macs"] / 1e6], color=["#b44", "#4a4"]
    )
    ax1.bar_label(
        macs_bars, labels=[_count(inc["direct"]["macs"]), _count(inc["reduced"]["macs"])], fontsize=8
    )
    ax1.set_ylabel("million MACs")
    ax1.set_title(f"Inception 5x5 branch: {inc['macs_ratio']:.2f}x fewer MACs", fontsize=9)
    parts = {
        "input": red["bytes"]["input"],
        "output": red["bytes"]["output"],
        "weights": red["bytes"]["weights"],
    }
    bars = ax2.bar(list(parts), [v / 1e6 for v in parts.values()], color="#468")
    # the weights are too small to see as a bar: every bar carries its number
    ax2.bar_label(bars, labels=[_bytes(v).split(" (")[0] for v in parts.values()], fontsize=8)
    ax2.set_ylabel("MB (float32)")
    ax2.set_title(f"{red['title']}: memory", fontsize=9)
    fig.suptitle("Cost of the 1x1 reductions")
    written.append(_save(fig, out / "cost.png"))
    return written


# ============================================================ 6d. the interactive page


_PAGE_FILES = ("index.html", "app.js", "style.css")


def write_page(doc: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write the self-contained interactive page (index.html, app.js, style.css, data.js) to ``out_dir``.

    data.js carries ``doc`` (the library's numbers) as a script, so the page works opened
    straight from disk (browsers refuse fetch() on file://) and needs no network.
    """
    out = _prepare_dir(out_dir)
    web = resources.files("onebyone") / "web"
    for name in _PAGE_FILES:
        atomic_write(out / name, (web / name).read_bytes())
    payload = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    atomic_write(out / "data.js", f"window.ONEBYONE_DATA = {payload};\n".encode())
    return out / "index.html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def page_server(directory: str | os.PathLike[str], port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the page in ``directory``, on 127.0.0.1 only; ``port=0`` picks a free port.

    The caller runs ``serve_forever()`` and closes it; ``server.server_address[1]`` is the port.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    path = Path(directory)
    if not (path / "index.html").is_file():
        raise FileNotFoundError(f"no index.html in {str(path)!r}: write the page there first")
    handler = functools.partial(_QuietHandler, directory=str(path))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise ValueError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
