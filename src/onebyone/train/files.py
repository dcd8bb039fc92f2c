"""The run folder's files: their names, what its numbers mean, and each written atomically.

Every file a run writes goes through :func:`onebyone._files.atomic_write` (a temporary file
beside it, fsynced, renamed over it), so a reader sees the old file or the new one, never part
of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .._files import atomic_write

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
MACS_CONVENTION = (
    "multiply-accumulates (MACs) of one forward pass of one image, counted by onebyone.cost: "
    "convolutions and linear layers, bias adds not counted; 1 MAC = 2 FLOPs"
)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def _save_figure(fig: Any, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def _weights_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return save(state, metadata=metadata)
