""":func:`train`: a run from start (or its last checkpoint) to its finished folder.

It sets up the model and the optimizer, resumes from the checkpoint if asked, runs the epochs
(writing a checkpoint after each), scores the result, and finalises the folder: weights,
config.json, the plots, and metrics.json last.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import atomic_write
from ..data import Dataset, load_dataset
from ..layers import Conv1x1
from ..models import create_model
from ..ops import pin_choices
from .checkpoint import _checkpoint_bytes, _load_checkpoint
from .config import TrainConfig, _check_fits, _resolve
from .distributed import _device_for, _Dist, _dist_from_env, _process_group
from .epoch import _run_epoch, _score, _tensors
from .files import CHECKPOINT, CONFIG, MACS_CONVENTION, METRICS, WEIGHTS, _weights_bytes, _write_json
from .pinning import _choices_used, _pinned
from .plots import plot_confusion, plot_conv1x1, plot_curves


@dataclass
class TrainResult:
    """What :func:`train` wrote and measured."""

    out: Path
    model: nn.Module
    metrics: dict[str, Any]

    @property
    def test_accuracy(self) -> float:
        return float(self.metrics["test_accuracy"])


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.data`` and write the run to the folder ``out``.

    ``out`` gets ``checkpoint.safetensors`` after every epoch, and at the end
    ``model.safetensors`` (weights), ``config.json`` (how to rebuild and what it was trained
    on), ``metrics.json`` (test accuracy, per-epoch history, parameters, MACs, seconds)
    and PNG plots. With ``resume``, a run found in ``out`` continues from its last
    checkpoint (and one that finished is only re-finalised); without it, a folder that
    already holds a run is refused. ``log`` receives one line per epoch; ``dataset``
    skips loading ``config.data`` again (it must be what ``config.data`` names). ``model``
    trains that module (fine-tuning; ``config.model`` is then only its name) instead of a new
    ``config.model``; ``teacher`` adds knowledge distillation from its outputs.

    Under ``torchrun`` this trains data-parallel; only rank 0 writes files or logs.
    """
    out = Path(out)
    threads = 1 if config.threads is None else config.threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {config.threads!r}")
    dist = _dist_from_env()
    with _process_group(config.device, dist), _pinned(threads):
        return _train(config, out, resume, progress, log, dataset, dist, model, teacher)


def _train(
    config: TrainConfig, out: Path, resume: bool, progress: bool, log: Callable[[str], None] | None,
    dataset: Dataset | None, dist: _Dist, given: nn.Module | None = None, teacher: nn.Module | None = None,
) -> TrainResult:
    say = log if (log is not None and dist.rank == 0) else (lambda _line: None)
    progress = progress and dist.rank == 0
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out {str(out)!r} is a file; expected a folder for the run")
    ckpt_path = out / CHECKPOINT
    if not resume and (ckpt_path.exists() or (out / METRICS).exists()):
        raise ValueError(
            f"{out} already holds a training run; resume it (--resume) or choose another folder"
        )
    if dataset is None:
        dataset = load_dataset(config.data)
    cfg = _resolve(config, dataset)
    assert cfg.epochs is not None and cfg.lr is not None and cfg.weight_decay is not None
    device = _device_for(cfg.device, dist)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = create_model(cfg.model) if given is None else given
    _check_fits(model, cfg.model, dataset)
    costs = _costs(model, dataset.input_size)
    params, macs = int(costs["params"]), int(costs["macs"])
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]  # no weight decay on biases and norms
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=0.9, nesterov=True,
    )
    history: list[dict[str, float]] = []
    seconds = 0.0
    start_epoch = 0
    config_json = dataclasses.asdict(cfg)
    if resume and ckpt_path.exists():
        meta = _load_checkpoint(ckpt_path, model, optimizer)
        if meta["config"] != config_json:
            old = meta["config"]
            diff = {k: (old.get(k), v) for k, v in config_json.items() if old.get(k) != v}
            raise ValueError(
                f"{ckpt_path} was written by a different run; differing settings (checkpoint, now): {diff}"
            )
        history, seconds, start_epoch = meta["history"], float(meta["seconds"]), int(meta["epoch"])
        pin_choices(meta.get("conv1x1_choices") or {})  # the libraries the run has computed with
        say(f"resuming {cfg.model} from epoch {start_epoch} of {cfg.epochs} ({ckpt_path})")
    net: nn.Module = model
    if dist.active:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    x_train, y_train, x_test, y_test = _tensors(dataset, cfg.subset)
    if start_epoch == 0:
        say(f"training {cfg.model} ({params:,} parameters, {macs / 1e6:,.1f} M MACs per image) on "
            f"{dataset!r}: {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}"
            + (f", {dist.world} processes" if dist.active else ""))
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_loss, train_acc = _run_epoch(
            net, optimizer, dataset, x_train, y_train, cfg, epoch, dist, device, progress, teacher
        )
        test_loss, confusion = _score(model, x_test, y_test, dataset.num_classes, dist, device)
        test_acc = float(confusion.diagonal().sum()) / max(len(y_test), 1)
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                        "test_loss": test_loss, "test_accuracy": test_acc,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": elapsed})
        say(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {train_loss:.4f} acc {100 * train_acc:6.2f}%  "
            f"test loss {test_loss:.4f} acc {100 * test_acc:6.2f}%  {elapsed:5.1f}s")
        if dist.rank == 0:
            meta = {"format": 1, "epoch": epoch + 1, "config": config_json, "history": history,
                    "seconds": seconds, "conv1x1_choices": _choices_used()}
            atomic_write(ckpt_path, _checkpoint_bytes(model, optimizer, meta), sync_dir=True)
    test_loss, confusion = _score(model, x_test, y_test, dataset.num_classes, dist, device)
    test_acc = float(confusion.diagonal().sum()) / max(len(y_test), 1)
    metrics = {
        "model": cfg.model,
        "data": cfg.data,
        "dataset": repr(dataset),
        "input_size": list(dataset.input_size),
        "classes": list(dataset.classes),
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "test_images": len(y_test),
        "train_images": len(y_train),
        "confusion": confusion.tolist(),
        "history": history,
        "params": params,
        "macs": macs,
        "flops": costs["flops"],
        "conv1x1_params": costs["conv1x1_params"],
        "conv1x1_macs": costs["conv1x1_macs"],
        "macs_convention": MACS_CONVENTION,
        "cost_convention": costs["cost_convention"],
        "seconds": seconds,
        "seconds_note": "training and per-epoch test scoring, summed over resumed runs",
        "epochs": cfg.epochs,
        "config": config_json,
        "processes": dist.world,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "conv1x1_choices": _choices_used(),
    }
    if dist.rank == 0:
        _finalise(out, model, cfg, dataset, metrics)
        say(f"test accuracy {100 * test_acc:.2f}% ({int(confusion.diagonal().sum())}/{len(y_test)}) "
            f"after {seconds:.1f}s; wrote {out}/")
    return TrainResult(out, model, metrics)


def _finalise(
    out: Path, model: nn.Module, cfg: TrainConfig, dataset: Dataset, metrics: dict[str, Any]
) -> None:
    run_config = {
        "model": cfg.model,
        "input_size": list(dataset.input_size),
        "num_classes": dataset.num_classes,
        "classes": list(dataset.classes),
        "data": cfg.data,
        "train": dataclasses.asdict(cfg),
        "conv1x1_choices": metrics["conv1x1_choices"],
    }
    atomic_write(out / WEIGHTS, _weights_bytes(model, {"model": cfg.model}), sync_dir=True)
    _write_json(out / CONFIG, run_config)
    plot_curves(metrics["history"], out / "curves.png", title=cfg.model)
    title = f"{cfg.model}: {100 * metrics['test_accuracy']:.2f}% of {len(dataset.y_test)} test images"
    plot_confusion(np.asarray(metrics["confusion"]), dataset.classes, out / "confusion.png", title=title)
    first = _first_conv1x1(model)
    if first is not None:
        plot_conv1x1(first[1], out / "conv1x1_weights.png", title=f"{cfg.model}: {first[0]}")
        metrics["conv1x1_plotted"] = first[0]
    else:
        metrics["conv1x1_plotted"] = None
    _write_json(out / METRICS, metrics)  # last: its presence says the run is complete


def _costs(model: nn.Module, input_size: Sequence[int]) -> dict[str, Any]:
    """Parameters and multiply-accumulates of one forward pass of one image, by :func:`onebyone.cost`."""
    from ..cost import cost
    from ..machine import Peaks

    # cost() also estimates roofline times, which need the machine's peaks; only the counts are
    # used here, so placeholder peaks spare a measurement (and its seconds) before training
    counts_only = Peaks(gemm_gflops=1.0, bandwidth_gbs=1.0, device="cpu", name="unused", threads=1,
                        torch_version=torch.__version__, measured_at="")
    param = next(model.parameters(), None)
    report = cost(model, input_size, count_bias=False, limits=counts_only,
                  device=param.device if param is not None else None)
    conv1x1 = report.by_kind().get("conv1x1", {})
    return {"params": report.model_params, "macs": report.macs, "flops": report.flops,
            "conv1x1_params": int(conv1x1.get("params", 0)), "conv1x1_macs": int(conv1x1.get("macs", 0)),
            "cost_convention": report.convention()}


def _first_conv1x1(model: nn.Module) -> tuple[str, Conv1x1] | None:
    for name, m in model.named_modules():
        if isinstance(m, Conv1x1):
            return name, m
    return None
