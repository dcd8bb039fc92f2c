"""The document as terminal text, section by section as the seed tells it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._util import _bytes, _count, _num


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
    if doc.get("trained") is not None:
        out += render_trained_lines(doc["trained"])
    return "\n".join(out) + "\n"


def render_trained_lines(view: dict[str, Any]) -> list[str]:
    """The trained network's 1x1 layers as text: sizes, place, ranks, rank-r accuracy, the two classes."""
    out = _heading(8, f"Inside a trained network: {view['model']} on {view['data']}")
    out.append(f"held-out accuracy {100 * view['accuracy']:.2f}% on the first {view['eval_images']} of "
               f"{view['test_images']} held-out images; {len(view['layers'])} 1x1 layers")
    for im in view["images"]:
        out.append(f"image {im['index']}: label {im['label_name']}, predicted {im['prediction_name']}")
    for layer in view["layers"]:
        place = ", ".join(p for p in (layer["after"] and f"after {layer['after']}",
                                      layer["before"] and f"before {layer['before']}") if p)
        out.append("")
        out.append(f"{layer['name']} ({layer['type']}): {layer['in_channels']} -> {layer['out_channels']} "
                   f"channels, {' x '.join(map(str, layer['input_size'][1:]))} -> "
                   f"{' x '.join(map(str, layer['output_size'][1:]))} maps" + (f"; {place}" if place else ""))
        out.append(f"  rank for 90% / 99% of the weights' energy: {layer['rank_90']} / {layer['rank_99']} "
                   f"of {layer['full_rank']}; |conv1x1 - reference| <= "
                   f"{layer['check']['max_abs_diff_reference']:.1e}")
        out.append("  held-out accuracy with the layer at rank r: " + ", ".join(
            f"r={row['rank']} {100 * row['accuracy']:.1f}%" for row in layer["rank_accuracy"]))
        sep = layer.get("separation")
        if sep is not None:
            a, b = sep["classes"]
            weigh = ", ".join(f"c{i['channel']} ({100 * i['share']:.0f}%)" for i in sep["inputs"][:3])
            out.append(f"  {a} vs {b}: output channel {sep['channel']} tells them apart best (d' = "
                       f"{sep['dprime']:.2f}); the input channels it weighs most for it: {weigh}")
    return out
