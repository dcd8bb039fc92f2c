"""A trained model from what a user points at: a training run's folder, a compressed model's
folder, or a model (registered name, ``file.py:factory`` or ``package.module:factory``) with its
safetensors weights. ``compress`` and ``explain`` read models this way.

Bad input raises ``ValueError``, ``FileNotFoundError`` or ``NotADirectoryError`` with one line
that names the file and what was expected; weights are read with safetensors only, never pickle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["Trained", "load_trained"]


@dataclass
class Trained:
    """A model in eval mode, the spec that rebuilds it, and the data it was trained on, if known."""

    model: nn.Module
    spec: str
    data: str | None
    config: dict[str, Any]  # the run's config.json or the compressed folder's description; {} otherwise


def load_trained(source: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None) -> Trained:
    """Load ``source``: a folder written by ``onebyone train`` or ``onebyone compress`` (which bring
    their own weights), or a model spec together with ``weights`` (a ``.safetensors`` file)."""
    path = Path(source)
    if path.is_dir():
        if weights is not None:
            raise ValueError(
                f"{str(path)!r} is a folder that brings its own weights; weights go with a model "
                f"name, not a folder"
            )
        from .compress.folder import is_compressed, load_compressed

        if is_compressed(path):
            model, description = load_compressed(path)
            return Trained(model, description["base"], description.get("data"), description)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is not a training run (no config.json) nor a compressed "
                f"model (no compressed.json): expected a folder written by onebyone train "
                f"or onebyone compress"
            )
        from .train import load_run

        model, config = load_run(path)
        return Trained(model, config["model"], config.get("data"), config)
    if weights is None:
        raise ValueError(
            f"{str(source)!r} needs its trained weights (a .safetensors file); a training run's "
            f"folder brings its own"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .cost import load_model

    model = load_model(str(source))
    try:
        state = load_file(weights)
    except (SafetensorError, FileNotFoundError, IsADirectoryError, OSError) as exc:
        raise ValueError(f"weights {str(weights)!r}: not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"weights {str(weights)!r} do not fit {source} ({_first_mismatch(exc)})") from None
    return Trained(model.eval(), str(source), None, {})


def _first_mismatch(exc: RuntimeError) -> str:
    """The first line of load_state_dict's complaint that names keys or shapes, shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else lines[0] if lines else "load_state_dict failed"
    return detail if len(detail) <= 160 else detail[:157] + "..."
