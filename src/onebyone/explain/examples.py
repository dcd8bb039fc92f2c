"""One function per worked example of the seed, each returning a JSON-ready dict computed by the library."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import seed_digit_maps
from ..layers import Conv1x1
from ..ops import conv1x1
from ..reference import conv1x1_reference, pixel_sum
from ._util import FLOAT32_BYTES, _check_sizes, _max_abs, _num, _symbol, _to_list
from .inputs import (
    ADVANCED_SIZES,
    INCEPTION_SIZES,
    MATH_CELLS,
    MATH_KERNEL,
    MATH_MAPS,
    REDUCTION_SIZES,
    SEED_DIGIT_WEIGHTS,
)


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
            from .. import machine

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
