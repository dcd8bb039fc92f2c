"""The ``tune`` command: conv1x1's choices measured for every 1x1 layer of a model."""

from __future__ import annotations

import argparse

from . import Command, _chw, _positive_int


def _tune_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a registered model name, path/to/file.py:factory or package.module:factory")
    p.add_argument("--input", type=_chw, required=True, metavar="CxHxW",
                   help="one sample's size, e.g. 3x224x224")
    p.add_argument("--batch", type=_positive_int, default=1, help="samples per pass (default 1)")
    p.add_argument("--train", action="store_true", help="also the backward passes of a training step")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="the model's dtype (default float32)")
    p.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw",
                   help="the input's memory format (default nchw)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads, part of every choice's key: the count the real run will use "
                        "(onebyone train uses 1 unless told otherwise; default: PyTorch's)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")


def _tune_run(args: argparse.Namespace) -> int:
    from ..cost import load_model
    from ..tune import tune

    model = load_model(args.model)
    report = tune(model, args.input, batch=args.batch, train=args.train, dtype=args.dtype,
                  channels_last=args.layout == "channels_last", threads=args.threads, name=args.model)
    print(report.to_json() if args.json else str(report), end="\n" if args.json else "")
    return 0


COMMANDS: list[Command] = [
    (
        "tune",
        "measure conv1x1's fastest library for every 1x1 layer of a model, once for this machine",
        _tune_parser,
        _tune_run,
    )
]
