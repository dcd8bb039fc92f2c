"""``onebyone tour``: everything onebyone does, on data that ships with it, in one folder.

The tour runs five steps, each printing a short summary and adding a section to one
HTML report (``index.html`` in the output folder):

1. the seed's math view and digit 2/3 example, with where the seed's text disagrees
   with the computation, and the interactive page;
2. the dimensionality-reduction example (1 x 50 x 600 x 600 -> 20) timed here:
   conv1x1 against F.conv2d, and the fraction of the machine's roofline;
3. NiN and its no-1x1 ablation trained on the embedded digits, side by side, and the page
   that shows the trained NiN's 1x1 layers on held-out digits;
4. GoogLeNet's cost: the share of multiply-adds and parameters in 1x1 layers, and the
   Inception 5x5 reduction example;
5. the NiN of step 3 compressed with 1x1 bottlenecks (onebyone.compress) and fine-tuned:
   MACs, measured time and accuracy side by side, and the ranks chosen per layer.

The report is rewritten after every step, so an interrupted tour still leaves a
readable report of what finished. A folder from an earlier tour is replaced; a folder
holding anything else is refused rather than overwritten.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import __version__, explain
from .report import Section, atomic_write_text, render_report

__all__ = ["TourResult", "run_tour"]

_MARKER = ".onebyone-tour"


@dataclass
class TourResult:
    out: Path
    report: Path
    sections: list[Section] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0


@dataclass
class _Context:
    out: Path
    quick: bool
    seed: int
    log: TextIO


# ------------------------------------------------------------------ the folder


def _prepare(out: Path) -> None:
    """Make ``out`` an empty folder of our own, replacing an earlier tour's folder."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / _MARKER).exists():
            raise ValueError(
                f"--out {out} is not empty and was not written by a tour; "
                "choose another folder or remove it first"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("written by onebyone tour; the next tour replaces this folder\n")


# -------------------------------------------------------------------- step 1


def _step_seed(ctx: _Context) -> Section:
    doc = explain.examples(timing=False)
    figures = explain.write_figures(doc, ctx.out / "figures" / "explain")
    page = explain.write_page(doc, ctx.out / "explain")
    atomic_write_text(ctx.out / "metrics" / "explain.json", json.dumps(doc, indent=2, allow_nan=False))
    math, digits = doc["math"], doc["digits"]
    cell = math["arithmetic"][0]
    terms = " + ".join(f"{x:g} * {w:g}" for x, w in cell["terms"])
    t = math["output"]
    learned = digits["learned"]
    disagreements = doc["disagreements"]
    section = Section(
        "1. The seed's examples, computed",
        lines=[
            f"Math view: three 6 x 6 maps and the 1x1 kernel {math['inputs']['kernel']} give a "
            f"{len(t)} x {len(t[0])} map T; T[0,0] = {terms} = {cell['value']:.1f}.",
            f"Digits 2 and 3: a learned 1x1 convolution plus a one-pixel readout tells them apart with "
            f"{100 * learned['test_accuracy']:.1f}% accuracy on noisy drawings.",
            f"{len(doc['checks'])} statements of the seed checked by computation; "
            f"{len(disagreements)} disagree; each is quoted below with what the computation shows.",
        ],
        notes=[(f"The seed: \u201c{d['text']}\u201d", d["explanation"]) for d in disagreements],
        figures=[(p.relative_to(ctx.out).as_posix(), p.stem.replace("_", " ")) for p in figures],
        links=[
            (
                page.relative_to(ctx.out).as_posix(),
                "the interactive page: edit maps and weights, add filters",
            ),
            ("metrics/explain.json", "every example's inputs and outputs (JSON)"),
        ],
    )
    return section


# -------------------------------------------------------------------- step 2


def _step_reduction(ctx: _Context) -> Section:
    red = explain.reduction_example(repeats=5 if ctx.quick else 15)
    timing = red["timing"]
    c, h, w, k = (red["inputs"][key] for key in ("channels", "height", "width", "filters"))
    ms_ours, ms_torch, roof_ms = (
        timing["conv1x1_s"] * 1e3,
        timing["conv2d_s"] * 1e3,
        timing["roofline_s"] * 1e3,
    )
    section = Section(
        "2. Dimensionality reduction, timed here",
        lines=[
            f"1 x {c} x {h} x {w} -> {k} maps with {k} filters of {c} x 1 x 1, float32, batch 1, "
            f"{timing['statistic']}.",
            f"{red['macs'] / 1e6:.0f} M multiply-adds (1 MAC = 2 FLOPs, bias not counted); "
            f"{red['bytes']['total'] / 1e6:.1f} MB moved at the least (input + output + weights).",
            f"Machine: {timing['machine']}, {timing['threads']} threads, GEMM peak "
            f"{timing['gemm_gflops']:.0f} GFLOP/s, memory {timing['bandwidth_gbs']:.0f} GB/s: "
            f"the roofline allows {roof_ms:.2f} ms.",
            f"onebyone.conv1x1 is {ms_torch / ms_ours:.1f}x faster than F.conv2d here and reaches "
            f"{100 * roof_ms / ms_ours:.0f}% of the roofline.",
        ],
        table=[
            ["implementation", "ms (median)", "GFLOP/s", "% of roofline"],
            *[
                [name, f"{ms:.2f}", f"{red['flops'] / ms / 1e6:.1f}", f"{100 * roof_ms / ms:.0f}%"]
                for name, ms in (("onebyone.conv1x1", ms_ours), ("torch F.conv2d", ms_torch))
            ],
        ],
    )
    atomic_write_text(ctx.out / "metrics" / "reduction.json", json.dumps(red, indent=2))
    section.links.append(("metrics/reduction.json", "timings (JSON)"))
    return section


# -------------------------------------------------------------------- step 3

#: Epochs for NiN and its no-1x1 ablation on the embedded digits: quick mode's; the full tour
#: trains with the data set's defaults (onebyone.train.DATA_DEFAULTS).
_QUICK_EPOCHS = 8


def _step_train(ctx: _Context) -> Section:
    from .train import compare

    epochs = _QUICK_EPOCHS if ctx.quick else None
    folder = ctx.out / "training"
    result = compare(
        "nin_digits",
        "digits",
        folder,
        ablations=["no1x1"],
        epochs=epochs,
        seed=ctx.seed,
        progress=ctx.log.isatty(),
    )
    full, ablated = result.rows[0], result.rows[1]
    epochs = full["epochs"]
    page, view = _trained_page(ctx, folder / "nin_digits")
    delta = 100 * (full["test_accuracy"] - ablated["test_accuracy"])
    figures = [((folder / "compare.png").relative_to(ctx.out).as_posix(), "NiN and its no-1x1 ablation")]
    links = [
        (page.relative_to(ctx.out).as_posix(),
         "the trained NiN's 1x1 layers on held-out digits: its inputs, weights and outputs, a pixel's sum, "
         "the ranks its weights need (interactive page)"),
        ("training/compare.json", "the comparison (JSON)"),
    ]
    for row in result.rows:
        run = folder / row["model"]
        for png in sorted(run.glob("*.png")):
            figures.append(
                (png.relative_to(ctx.out).as_posix(), f"{row['model']}: {png.stem.replace('_', ' ')}")
            )
        links.append(
            ((run / "metrics.json").relative_to(ctx.out).as_posix(), f"{row['model']}: metrics (JSON)")
        )
    return Section(
        "3. NiN with and without its 1x1 layers, trained on the embedded digits",
        lines=[
            f"scikit-learn's 8 x 8 handwritten digits (the fixed train/test split), {epochs} epochs each, "
            f"seed {ctx.seed}"
            + (", quick mode: short training, below what the defaults reach." if ctx.quick else "."),
            f"With its 1x1 layers NiN reaches {100 * full['test_accuracy']:.2f}% held-out accuracy; "
            f"without them {100 * ablated['test_accuracy']:.2f}% ({delta:+.2f} points for the 1x1 layers), "
            f"at {full['params'] / max(ablated['params'], 1):.2f}x the parameters and "
            f"{full['macs'] / max(ablated['macs'], 1):.2f}x the multiply-adds.",
            _trained_line(view),
        ],
        table=[
            ["model", "change", "test accuracy", "params", "M MACs", "seconds"],
            *[
                [
                    r["model"],
                    r["change"],
                    f"{100 * r['test_accuracy']:.2f}%",
                    f"{r['params']:,}",
                    f"{r['macs'] / 1e6:.2f}",
                    f"{r['seconds']:.1f}",
                ]
                for r in result.rows
            ],
        ],
        figures=figures,
        links=links,
    )


def _trained_page(ctx: _Context, run: Path) -> tuple[Path, dict]:
    """The interactive page with the trained NiN's 1x1 layers (section 8), on its first held-out 2 and 3."""
    from .data import load_digits
    from .train import load_run

    model, _ = load_run(run)
    doc = explain.examples(timing=False)
    view = explain.trained_view(model, load_digits(), name="nin_digits")
    doc["trained"] = view
    return explain.write_page(doc, ctx.out / "explain-nin"), view


def _trained_line(view: dict) -> str:
    last = view["layers"][-1]
    sep = last["separation"]
    line = (f"Inside it: the last 1x1 layer ({last['in_channels']} -> {last['out_channels']}) keeps 90% "
            f"of its weights' energy in rank {last['rank_90']} of {last['full_rank']}")
    if sep is None:
        return line + "."
    return line + f"; its output channel {sep['channel']} tells a 2 from a 3 best (d' = {sep['dprime']:.1f})."


# -------------------------------------------------------------------- step 4


def _step_cost(ctx: _Context) -> Section:
    from .cost import bottleneck_cost, cost
    from .models import create_model

    model = create_model("googlenet")
    report = cost(model, (3, 224, 224))
    kinds = report.by_kind()
    one = kinds.get("conv1x1", {"macs_share": 0.0, "params_share": 0.0, "layers": 0, "macs": 0, "params": 0})
    inception = bottleneck_cost(192, 32, 16, 5, 28)
    figure = report.plot(ctx.out / "figures" / "googlenet_macs.png")
    atomic_write_text(ctx.out / "metrics" / "googlenet_cost.json", report.to_json())
    atomic_write_text(ctx.out / "metrics" / "inception_5x5.json", json.dumps(inception.to_dict(), indent=2))
    rows = [["kind", "layers", "params", "share", "M MACs", "share"]]
    for kind, k in kinds.items():
        if k["macs"] or k["params"]:
            rows.append(
                [
                    kind,
                    str(k["layers"]),
                    f"{k['params']:,}",
                    f"{100 * k['params_share']:.1f}%",
                    f"{k['macs'] / 1e6:,.1f}",
                    f"{100 * k['macs_share']:.1f}%",
                ]
            )
    return Section(
        "4. What the 1x1 layers cost in GoogLeNet",
        lines=[
            f"GoogLeNet (the paper's Table 1) at 3 x 224 x 224: {report.params / 1e6:.2f} M parameters, "
            f"{report.macs / 1e9:.2f} G multiply-adds per image ({report.convention().split(';')[0]}).",
            f"Its {one['layers']} 1x1 convolutions hold {100 * one['params_share']:.0f}% of the "
            f"parameters and do {100 * one['macs_share']:.0f}% of the multiply-adds.",
            f"The Inception question: a 5 x 5 convolution from 28 x 28 x 192 to 32 maps takes "
            f"{inception.direct_macs / 1e6:.1f} M MACs; a 1x1 reduction to 16 maps first brings it to "
            f"{inception.bottleneck_macs / 1e6:.1f} M, {inception.macs_ratio:.1f}x fewer "
            f"({inception.params_ratio:.1f}x fewer parameters).",
        ],
        table=rows,
        figures=[(figure.relative_to(ctx.out).as_posix(), "where GoogLeNet's multiply-adds go")],
        links=[
            ("metrics/googlenet_cost.json", "GoogLeNet, layer by layer (JSON)"),
            ("metrics/inception_5x5.json", "the Inception 5x5 reduction (JSON)"),
        ],
    )


# -------------------------------------------------------------------- step 5


def _step_compress(ctx: _Context) -> Section:
    from .compress import compress, finetune
    from .data import load_digits
    from .train import load_run

    model, _ = load_run(ctx.out / "training" / "nin_digits")
    digits = load_digits()
    compressed, report = compress(model, (1, 8, 8), rank="vbmf", data=digits, batch=32, threads=1,
                                  rounds=3 if ctx.quick else 7, name="nin_digits")
    epochs = 1 if ctx.quick else 3
    finetune(compressed, digits, epochs=epochs, report=report, seed=ctx.seed)
    figure = report.plot(ctx.out / "figures" / "compress_nin.png")
    atomic_write_text(ctx.out / "metrics" / "compress_nin.json", report.to_json())
    acc, b1, b32 = report.accuracy, report.latency["batch_1"], report.latency["batch_32"]
    kept = [r for r in report.layers if r.status == "factorized"]
    reverted = [r for r in report.layers if r.status == "reverted"]
    return Section(
        "5. NiN made cheaper with 1x1 bottlenecks",
        lines=[
            f"onebyone.compress turned {len(kept)} of NiN's convolutions into 1x1 bottlenecks (Tucker-2 for "
            f"3 x 3 layers, SVD for 1x1 layers; ranks by VBMF, {report.rank}); {len(reverted)} more were "
            "timed slower here than the layer they replace and kept as they were.",
            f"MACs {report.macs_before / 1e6:.2f} M -> {report.macs_after / 1e6:.2f} M "
            f"({report.macs_ratio:.0%}), "
            f"measured latency {b32['after'] / b32['before']:.2f}x at batch 32 and "
            f"{b1['after'] / b1['before']:.2f}x at batch 1 (1 thread, channels_last).",
            f"Held-out accuracy {100 * (acc['original'] or 0):.2f}% -> {100 * (acc['compressed'] or 0):.2f}% "
            f"compressed -> {100 * (acc['finetuned'] or 0):.2f}% after {epochs} epoch(s) of fine-tuning.",
        ],
        table=[
            ["model", "params", "M MACs", "ms, batch 1", "ms, batch 32", "test accuracy"],
            ["NiN (step 3)", f"{report.params_before:,}", f"{report.macs_before / 1e6:.2f}",
             f"{1e3 * b1['before']:.3f}", f"{1e3 * b32['before']:.3f}",
             f"{100 * (acc['original'] or 0):.2f}%"],
            ["compressed", f"{report.params_after:,}", f"{report.macs_after / 1e6:.2f}",
             f"{1e3 * b1['after']:.3f}", f"{1e3 * b32['after']:.3f}",
             f"{100 * (acc['compressed'] or 0):.2f}%"],
            ["compressed + fine-tuned", f"{report.params_after:,}", f"{report.macs_after / 1e6:.2f}",
             f"{1e3 * b1['after']:.3f}", f"{1e3 * b32['after']:.3f}",
             f"{100 * (acc['finetuned'] or 0):.2f}%"],
        ],
        figures=[(figure.relative_to(ctx.out).as_posix(),
                  "per layer: MACs, the ranks chosen, measured time")],
        links=[("metrics/compress_nin.json", "the compression report, layer by layer (JSON)")],
    )


# --------------------------------------------------------------------- driver


_STEPS: list[tuple[str, Callable[[_Context], Section]]] = [
    ("the seed's examples", _step_seed),
    ("the reduction example timed", _step_reduction),
    ("NiN and its no-1x1 ablation trained", _step_train),
    ("GoogLeNet's cost", _step_cost),
    ("NiN compressed", _step_compress),
]


def _write_report(out: Path, sections: list[Section], note: str) -> Path:
    path = out / "index.html"
    subtitle = (
        f"onebyone {__version__}: the 1x1 convolution, computed, timed, trained and costed on this machine"
    )
    atomic_write_text(path, render_report("The onebyone tour", subtitle, sections, note))
    return path


def run_tour(
    out: str | Path = "onebyone-tour", *, quick: bool = False, seed: int = 0, log: TextIO | None = None
) -> TourResult:
    """Run every step, writing the report after each; Ctrl-C stops cleanly with a partial report."""
    out = Path(out)
    log = log or sys.stderr
    _prepare(out)
    ctx = _Context(out=out, quick=quick, seed=seed, log=log)
    result = TourResult(out=out, report=out / "index.html")
    start = time.perf_counter()
    i, label = 0, ""
    try:
        for i, (label, step) in enumerate(_STEPS, 1):
            print(f"[{i}/{len(_STEPS)}] {label} ...", file=log, flush=True)
            t0 = time.perf_counter()
            section = step(ctx)
            section.lines.append(f"This step took {time.perf_counter() - t0:.1f} s.")
            result.sections.append(section)
            for line in section.lines:
                print(f"    {line}", file=log)
            _write_report(out, result.sections, "In progress.")
    except KeyboardInterrupt:
        # Ctrl-C anywhere in a step, its printing or its report: keep what finished
        result.interrupted = True
        if len(result.sections) < i:  # the step itself was cut short
            result.sections.append(
                Section(label, ["Interrupted before this step finished."], status="interrupted")
            )
    result.seconds = time.perf_counter() - start
    note = (
        f"Interrupted after {result.seconds:.0f} s; the sections above are what finished."
        if result.interrupted
        else f"Finished in {result.seconds:.0f} s{' (quick mode)' if quick else ''}."
    )
    _write_report(out, result.sections, note)
    return result
