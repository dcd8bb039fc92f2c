"""The ``cost`` command: a model's cost per layer, or the Inception question with ``--bottleneck``."""

from __future__ import annotations

import argparse
import sys

from . import Command, UsageError, _chw, _dims_arg, _positive_int


def _hw(text: str) -> tuple[int, ...]:
    if text.isdigit():
        text = f"{text}x{text}"
    return _dims_arg(text, 2, "HxW such as 28x28, or one number for a square")


def _cost_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a registered model name, path/to/file.py:factory or package.module:factory "
        "(the factory is called with no arguments and returns an nn.Module), or a folder written by "
        "`onebyone compress`",
    )
    p.add_argument("--input", type=_chw, metavar="CxHxW",
                   help="one sample's size, e.g. 3x224x224 (required but for a compressed folder)")
    p.add_argument("--batch", type=_positive_int, default=1, help="samples per forward pass (default 1)")
    p.add_argument(
        "--bias",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count the bias of convolutions and linear layers: its parameters, and 1 FLOP per "
        "output element for its adds (default: counted)",
    )
    p.add_argument("--measure", action="store_true", help="also time every layer (median of --repeats runs)")
    p.add_argument(
        "--repeats", type=_positive_int, default=5, help="timed runs per layer with --measure (default 5)"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where to run the model: cpu (default), cuda, cuda:1, or "
        "meta (counted from shapes alone, instantly; no --measure)",
    )
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON document")
    p.add_argument("--csv", metavar="FILE", help="write one row per layer call to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG chart of where the multiply-adds go")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "the Inception question",
        "--bottleneck compares a kxk convolution C -> K with a 1x1 reduction C -> R followed by the kxk "
        "R -> K, in parameters and multiply-adds. Defaults: the Inception example, 28x28x192 -> 32 maps "
        "with 5x5 kernels, reduced to 16.",
    )
    g.add_argument("--bottleneck", action="store_true", help="answer the Inception question instead of MODEL")
    g.add_argument("--channels", type=_positive_int, metavar="C", help="input maps (default 192)")
    g.add_argument("--out-channels", type=_positive_int, metavar="K", help="output maps (default 32)")
    g.add_argument(
        "--reduce", type=_positive_int, metavar="R", help="maps after the 1x1 reduction (default 16)"
    )
    g.add_argument("--kernel", type=_positive_int, metavar="k", help="kernel side (default 5)")
    g.add_argument("--size", type=_hw, metavar="HxW", help="map size (default 28x28)")


def _cost_run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..cost import bottleneck_cost, cost, load_model

    info = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the document alone
    shape_options = ("channels", "out_channels", "reduce", "kernel", "size")
    bottleneck_flags = [f"--{n.replace('_', '-')}" for n in shape_options if getattr(args, n) is not None]
    if args.bottleneck:
        model_flags = [
            flag
            for flag, given in (
                ("MODEL", args.model is not None),
                ("--input", args.input is not None),
                ("--batch", args.batch != 1),
                ("--measure", args.measure),
                ("--csv", args.csv is not None),
                ("--plot", args.plot is not None),
            )
            if given
        ]
        if model_flags:
            raise UsageError(f"--bottleneck takes no {', '.join(model_flags)}")
        result = bottleneck_cost(
            args.channels or 192,
            args.out_channels or 32,
            args.reduce or 16,
            args.kernel or 5,
            tuple(args.size or (28, 28)),
        )
        if args.json:
            print(json.dumps(result.to_dict(), allow_nan=False))
        else:
            sys.stdout.write(str(result))
        return 0
    if bottleneck_flags:
        raise UsageError(f"{', '.join(bottleneck_flags)} only go with --bottleneck")
    from ..compress import is_compressed, load_compressed

    compressed = args.model is not None and is_compressed(args.model)
    if compressed:
        loaded, description = load_compressed(args.model)
        args.input = args.input or tuple(description["input_size"])
    if args.model is None:
        raise UsageError(
            "cost needs MODEL (a registered name, path/to/file.py:factory or "
            "package.module:factory) or --bottleneck"
        )
    if args.input is None:
        raise UsageError("cost needs --input CxHxW, e.g. --input 3x224x224")
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot expects a file name ending in .png, got {args.plot!r}")
    for option in ("csv", "plot"):
        target = getattr(args, option)
        if target is not None and Path(target).is_dir():
            raise UsageError(f"--{option} expects a file, got the directory {target!r}")
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device expects cpu, cuda or cuda:N, got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available here")
    model = (loaded if compressed else load_model(args.model)).to(device)
    report = cost(
        model,
        args.input,
        batch_size=args.batch,
        count_bias=args.bias,
        measure=args.measure,
        repeats=args.repeats,
        device=device,
        name=args.model,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    if args.json:
        print(report.to_json())
    else:
        sys.stdout.write(report.table())
    if args.csv is not None:
        print(f"wrote {report.to_csv(args.csv)}", file=info)
    if args.plot is not None:
        print(f"wrote {report.plot(args.plot)}", file=info)
    return 0


COMMANDS: list[Command] = [
    (
        "cost",
        "parameters, multiply-adds, memory and time per layer, for any model; the Inception question",
        _cost_parser,
        _cost_run,
    )
]
