"""A compressed model on disk: safetensors weights and a JSON description that rebuilds it.

The folder holds ``model.safetensors`` (the weights), ``compressed.json`` (the base model, a
registered name or a ``file.py:factory`` / ``package.module:factory``, and the name, method and
ranks of every factorized layer: enough to rebuild the module tree, then load the weights into
it; no pickle anywhere), ``report.json``, ``report.txt`` and ``report.png``. It is written to a
temporary folder beside the target and renamed into place, so a failure leaves no half-written
folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import atomic_write
from .core import _swap, accuracy
from .factorize import plan, skeleton
from .report import CompressReport

__all__ = ["DESCRIPTION", "evaluate_folder", "is_compressed", "load_compressed", "save_compressed"]

DESCRIPTION = "compressed.json"
WEIGHTS = "model.safetensors"
FORMAT = "onebyone-compressed/1"


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by :func:`save_compressed` (``onebyone compress --out``)."""
    return (Path(path) / DESCRIPTION).is_file()


def check_target(out: str | os.PathLike[str]) -> Path:
    """``out`` must not exist, or be an empty folder: nothing is overwritten."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} already exists and is not an empty folder; choose another")
    return out


def save_compressed(out: str | os.PathLike[str], model: nn.Module, report: CompressReport, base: str, *,
                    data: str | None = None, classes: list[str] | None = None,
                    extra: dict[str, Path] | None = None) -> Path:
    """Write ``model`` and its ``report`` to the new folder ``out``; ``base`` is how to build the original.

    ``extra`` maps names inside the folder to files or folders to move in with it (fine-tuning's run).
    """
    from safetensors.torch import save

    target = check_target(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes the folder private; give it a normal one's mode
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        atomic_write(staging / WEIGHTS, save(state, metadata={"base": base}))
        description = {
            "format": FORMAT, "base": base, "input_size": report.input_size,
            "num_classes": getattr(model, "num_classes", None), "classes": classes, "data": data,
            "layers": report.factorized,
        }
        atomic_write(staging / DESCRIPTION, (json.dumps(description, indent=2) + "\n").encode())
        atomic_write(staging / "report.json", report.to_json().encode())
        atomic_write(staging / "report.txt", report.table().encode())
        report.plot(staging / "report.png")
        for name, path in (extra or {}).items():
            shutil.move(str(path), staging / name)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_compressed(folder: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The compressed model in ``folder`` (eval mode) and its description."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..cost import load_model

    folder = Path(folder)
    if not is_compressed(folder):
        raise FileNotFoundError(f"{folder}: no {DESCRIPTION}; expected a folder written by onebyone compress")
    try:
        description = json.loads((folder / DESCRIPTION).read_text())
        if description.get("format") != FORMAT:
            raise ValueError(f"format {description.get('format')!r}, expected {FORMAT!r}")
        base, layers = description["base"], description["layers"]
    except (json.JSONDecodeError, KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"{folder / DESCRIPTION}: not a compressed model's description ({exc})") from None
    model = load_model(base)
    for entry in layers:
        try:
            original = model.get_submodule(entry["name"])
        except AttributeError:
            raise ValueError(f"{folder / DESCRIPTION}: {base} has no layer {entry['name']!r}") from None
        method, _ = plan(original)
        if method is None or method != entry["method"]:
            raise ValueError(f"{folder / DESCRIPTION}: layer {entry['name']!r} of {base} cannot take "
                             f"{entry['method']!r} (expected {method!r})")
        _swap(model, entry["name"], skeleton(original, method, entry["ranks"]))
    try:
        state = load_file(folder / WEIGHTS)
        model.load_state_dict(state)
    except (SafetensorError, FileNotFoundError) as exc:
        raise ValueError(f"{folder / WEIGHTS}: unreadable safetensors ({exc})") from None
    except RuntimeError as exc:
        raise ValueError(f"{folder / WEIGHTS}: does not fit the described model "
                         f"({str(exc).splitlines()[0]})") from None
    model.default_input_size = tuple(description["input_size"])  # type: ignore[assignment]
    if description.get("num_classes") is not None:
        model.num_classes = int(description["num_classes"])  # type: ignore[assignment]
    return model.eval(), description


def evaluate_folder(folder: str | os.PathLike[str], data: str | None = None,
                    device: str | None = None) -> dict[str, Any]:
    """Score a compressed model's folder on the test split of ``data`` (default: the data it was
    compressed with), with the keys :func:`onebyone.train.evaluate` returns."""
    from ..data import load_dataset

    model, description = load_compressed(folder)
    data = data if data is not None else description.get("data")
    if data is None:
        raise ValueError(f"{folder} was compressed without data; say which to score on (--data)")
    dataset = load_dataset(data)
    if tuple(dataset.input_size) != tuple(description["input_size"]):
        raise ValueError(f"{folder} holds a model of {description['input_size']} inputs but data {data!r} "
                         f"has {list(dataset.input_size)}")
    if device is not None:
        model.to(device)
    x, y = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    acc = accuracy(model, x, y)
    dev = next(model.parameters()).device
    loss = 0.0
    with torch.no_grad():
        for i in range(0, len(y), 500):
            logits = model(x[i : i + 500].to(dev))
            loss += float(torch.nn.functional.cross_entropy(logits, y[i : i + 500].to(dev), reduction="sum"))
    correct = round(acc * len(y))
    return {"model": f"{description['base']} (compressed)", "data": data, "dataset": repr(dataset),
            "test_accuracy": acc, "test_loss": loss / len(y), "correct": correct, "test_images": len(y)}
