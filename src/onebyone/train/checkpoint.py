"""The run on disk, read back: the checkpoint written after every epoch (weights, buffers and the
optimizer's tensors as safetensors, everything else as JSON in its metadata), and
:func:`load_run`, the finished run's model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models import create_model
from .files import CONFIG, WEIGHTS


def _checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> bytes:
    """Weights, buffers and optimizer tensors as safetensors; everything else as JSON metadata."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for index, state in optim["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain_state.setdefault(str(index), {})[key] = value
    meta = {**meta, "optimizer": {"param_groups": optim["param_groups"], "state": plain_state}}
    return save(tensors, metadata={"onebyone": json.dumps(meta, allow_nan=False)})


def _load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` from ``path``; return the checkpoint's JSON."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        raw = path.read_bytes()
        tensors = load(raw)
        meta = json.loads(_safetensors_metadata(raw)["onebyone"])
    except (SafetensorError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable onebyone checkpoint ({exc})") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["optimizer"]["state"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    return meta


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its header is 8 bytes of length, then JSON)."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    return dict(header.get("__metadata__", {}))


def load_run(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model in ``run_dir`` (eval mode) and its ``config.json``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{str(run_dir)!r} is not a folder written by train")
    for name in (CONFIG, WEIGHTS):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir}: no {name}; expected a finished training run")
    try:
        run_config = json.loads((run_dir / CONFIG).read_text())
        model = create_model(run_config["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{run_dir / CONFIG}: not a onebyone run config ({exc})") from None
    try:
        state = load_file(run_dir / WEIGHTS)
    except SafetensorError as exc:
        raise ValueError(f"{run_dir / WEIGHTS}: unreadable safetensors ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise ValueError(f"{run_dir / WEIGHTS}: does not fit {run_config['model']} ({first_line})") from None
    return model.eval(), run_config
