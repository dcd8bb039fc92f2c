"""What the seed printed, and every printed claim checked against the computation.

:data:`SEED_PRINTED` holds the seed's printed results; only :func:`check_seed` reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..reference import pixel_sum
from ._util import _num

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
