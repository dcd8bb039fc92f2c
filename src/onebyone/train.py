"""Train, evaluate and compare the registered models on real images.

Read top to bottom: the configuration and its per-data-set defaults; files written
atomically; the checkpoint (safetensors, with its JSON inside); what one epoch does;
:func:`train`; :func:`evaluate`; :func:`compare` (a model against its ablations); the
plots.

Determinism and resuming. Every random choice of epoch ``e`` (the shuffle, the
augmentation, dropout) is drawn from generators seeded from ``(seed, e, rank)`` at the
start of the epoch, so the random state at an epoch boundary is fully described by the
seed and the epoch number. A checkpoint written after every epoch holds the weights,
the BatchNorm statistics, the optimizer's state and the epoch (and the history so far);
a resumed run therefore continues with exactly the numbers an uninterrupted one would
have used, and ends with bitwise the same weights (same machine, same thread count).

Multi-process. Under ``torchrun --nproc-per-node N`` the same call trains with
DistributedDataParallel (gloo on CPU, nccl on GPU): every global batch is cut into N
equal slices, one per process, and the gradients are averaged, which is the
single-process step on the whole batch. Only rank 0 writes files.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._files import atomic_write
from .data import Dataset, load_dataset
from .layers import Conv1x1
from .models import ABLATIONS, ablations_of, create_model, list_models
from .ops import chosen_backends, clear_choices, pin_choices, set_backend
from .ops.cache import key_text

__all__ = [
    "DATA_DEFAULTS",
    "CompareResult",
    "TrainConfig",
    "TrainResult",
    "compare",
    "evaluate",
    "train",
]

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
MACS_CONVENTION = (
    "multiply-accumulates (MACs) of one forward pass of one image, counted by onebyone.cost: "
    "convolutions and linear layers, bias adds not counted; 1 MAC = 2 FLOPs"
)

# ------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """What to train, on what, and how. ``None`` fields take the data set's defaults.

    Args:
        model: a registered model name (see :func:`onebyone.list_models`).
        data: ``"digits"`` (embedded) or a folder of MNIST-format IDX files or CIFAR-10 batches.
        epochs, batch_size, lr, weight_decay: SGD with Nesterov momentum 0.9; the learning
            rate warms up linearly over the first epoch, then follows a cosine to zero.
        augment: random shifts of the images (and left-right flips for CIFAR-10).
        label_smoothing: of the cross-entropy loss.
        seed: weights, shuffles, augmentation and dropout all follow from it.
        subset: train on the first ``subset`` training images only (tests, quick looks).
        device: ``"cpu"``, ``"cuda"``, or ``None`` for CUDA when available.
        threads: CPU threads per process (``torch.set_num_threads``) while training; ``None``
            means 1. The models here are small: on 8 x 8 and 28 x 28 images each operation is
            too short to share between threads, and on a busy machine a second thread that
            waits for a core made a training step 20 times slower (see BENCHMARKS.md). For
            more cores, run more processes (``torchrun --nproc-per-node N``).
    """

    model: str = "nin_digits"
    data: str = "digits"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    augment: bool | None = None
    label_smoothing: float | None = None
    seed: int = 0
    subset: int | None = None
    device: str | None = None
    threads: int | None = None


#: Defaults per data set (by :attr:`Dataset.name`), chosen on this project's benchmarks
#: (see BENCHMARKS.md): enough epochs to converge, small enough to run on a laptop CPU.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 30, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "augment": True,
               "label_smoothing": 0.1, "shift": 1},
    "mnist-format": {"epochs": 12, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "augment": True,
                     "label_smoothing": 0.1, "shift": 2},
    "cifar10": {"epochs": 60, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4, "augment": True,
                "label_smoothing": 0.1, "shift": 4},
    # images handed over as tensors (fine-tuning): nothing is known about them, so no augmentation
    "tensors": {"epochs": 2, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "augment": False,
                "label_smoothing": 0.0, "shift": 0},
}

#: Knowledge distillation (Hinton, Vinyals and Dean 2015): the loss is (1 - w) x cross-entropy +
#: w x T^2 x KL(teacher's softened outputs || the student's), at temperature T.
DISTILL_TEMPERATURE = 4.0
DISTILL_WEIGHT = 0.5


def _resolve(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """``config`` with every ``None`` hyperparameter set from the data set's defaults, checked."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    defaults = DATA_DEFAULTS[dataset.name]
    filled = {k: defaults[k] if getattr(config, k) is None else getattr(config, k)
              for k in ("epochs", "batch_size", "lr", "weight_decay", "augment", "label_smoothing")}
    out = dataclasses.replace(config, **filled)
    for name in ("epochs", "batch_size"):
        value = getattr(out, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    subset = out.subset
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be a positive int or None, got {out.subset!r}")
    if not (isinstance(out.lr, (int, float)) and out.lr > 0 and math.isfinite(out.lr)):
        raise ValueError(f"lr must be a positive number, got {out.lr!r}")
    if not (isinstance(out.weight_decay, (int, float)) and out.weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {out.weight_decay!r}")
    if not (isinstance(out.label_smoothing, (int, float)) and 0 <= out.label_smoothing < 1):
        raise ValueError(f"label_smoothing must be in [0, 1), got {out.label_smoothing!r}")
    if isinstance(out.seed, bool) or not isinstance(out.seed, int) or out.seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {out.seed!r}")
    return out


def _check_fits(model: nn.Module, name: str, dataset: Dataset) -> None:
    """The model must have been sized for the data: same channels, height, width and classes."""
    expected = _input_size_of(model)
    if expected != dataset.input_size:
        with torch.device("meta"):  # build without allocating, only to read the sizes
            fits = [n for n in list_models() if _input_size_of(create_model(n)) == dataset.input_size]
        hint = f"; models sized for it: {', '.join(fits)}" if fits else ""
        c, h, w = dataset.input_size
        raise ValueError(
            f"model {name!r} expects {' x '.join(map(str, expected))} images but data {dataset.name!r} has "
            f"{c} x {h} x {w}{hint}"
        )
    classes = getattr(model, "num_classes", None)
    if classes != dataset.num_classes:
        raise ValueError(f"model {name!r} has {classes} classes but the data has {dataset.num_classes}")


def _input_size_of(model: nn.Module) -> tuple[int, ...]:
    size = getattr(model, "default_input_size", None)
    if size is None:
        raise TypeError(f"{type(model).__name__} has no default_input_size; expected a registered model")
    return tuple(int(v) for v in size)


# ------------------------------------------------------------- writing, atomically


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


# -------------------------------------------------------------------- checkpoints


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


# ----------------------------------------------------------------------- one epoch


def _seed_for(seed: int, epoch: int, what: int) -> int:
    # a distinct, reproducible stream per (seed, epoch, purpose/rank)
    return (seed * 1_000_003 + epoch * 7_919 + what * 104_729) % (2**63 - 1)


def _shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Move every image by its own random offset of up to ``max_shift`` pixels, filling with zeros."""
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # N x C x (H + 2s) x (W + 2s)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # N x 1 x H x 1
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # N x 1 x 1 x W
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _augment(x: Tensor, dataset: str, gen: torch.Generator) -> Tensor:
    x = _shift(x, DATA_DEFAULTS[dataset]["shift"], gen)
    if dataset == "cifar10":  # left and right mean nothing in a photo; they do in a digit
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up for ``warmup`` steps, then a cosine from ``base`` to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def _loss(output: Tensor | tuple[Tensor, ...], y: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Cross-entropy (GoogLeNet's auxiliary heads weighted 0.3, as in the paper) and the main logits."""
    if isinstance(output, tuple):
        logits, *aux = output
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        for a in aux:
            loss = loss + 0.3 * F.cross_entropy(a, y, label_smoothing=smoothing)
        return loss, logits
    return F.cross_entropy(output, y, label_smoothing=smoothing), output


# The tensors of the last all-reduces, kept referenced from Python. When gloo's worker thread drops
# its own reference to a finished all-reduce after Python has let go of the tensor, it hands the
# tensor's Python object back through the GIL from that thread; if the interpreter is shutting down
# by then, the thread is ended inside a C++ destructor and the process aborts
# ("terminate called without an active exception"). gloo's threads keep their last piece of work
# until the process group is destroyed, so the tensors are kept here until after that (the end of
# `train`), and released by the main thread.
_REDUCED: collections.deque[Tensor] = collections.deque(maxlen=8)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values: Sequence[float] | Tensor) -> Tensor:
        t = torch.as_tensor(values, dtype=torch.float64)
        if self.active:
            import torch.distributed as dist

            moved = t.to(_reduce_device())
            dist.all_reduce(moved)
            _REDUCED.append(moved)  # see _REDUCED
            t = moved.cpu().clone()
        return t


def _reduce_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _distilled(loss: Tensor, logits: Tensor, teacher: nn.Module, xb: Tensor) -> Tensor:
    with torch.no_grad():
        target = teacher(xb)
        target = target[0] if isinstance(target, tuple) else target
    t = DISTILL_TEMPERATURE
    soft = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(target / t, 1), log_target=True,
                    reduction="batchmean")
    return (1 - DISTILL_WEIGHT) * loss + DISTILL_WEIGHT * t * t * soft


def _run_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, x: Tensor, y: Tensor,
    cfg: TrainConfig, epoch: int, dist: _Dist, device: torch.device, progress: bool,
    teacher: nn.Module | None = None,
) -> tuple[float, float]:
    """One pass over the training images; returns (mean loss, accuracy) over all processes."""
    from tqdm import tqdm

    assert cfg.batch_size is not None and cfg.epochs is not None and cfg.lr is not None
    gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, 0))  # same on every rank
    torch.manual_seed(_seed_for(cfg.seed, epoch, 1 + dist.rank))  # dropout: its own per rank
    order = torch.randperm(len(x), generator=gen)
    steps = math.ceil(len(x) / cfg.batch_size)
    model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress,
               file=sys.stderr)
    for i in bar:
        batch = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        if len(batch) < dist.world:  # a process with no images would stall the others
            continue
        xb = x[batch]
        if cfg.augment:
            xb = _augment(xb, dataset.name, gen)
        xb, yb = xb[dist.rank :: dist.world].to(device), y[batch][dist.rank :: dist.world].to(device)
        lr = _lr_at(epoch * steps + i, cfg.epochs * steps, steps, cfg.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, logits = _loss(model(xb), yb, float(cfg.label_smoothing or 0.0))
        if teacher is not None:
            loss = _distilled(loss, logits, teacher, xb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals += torch.tensor([loss.item() * len(yb), (logits.argmax(1) == yb).sum().item(), len(yb)],
                               dtype=torch.float64)
        if progress:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    loss_sum, correct, count = dist.sum(totals).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


@torch.no_grad()
def _score(model: nn.Module, x: Tensor, y: Tensor, num_classes: int, dist: _Dist, device: torch.device,
           batch_size: int = 500) -> tuple[float, Tensor]:
    """Mean cross-entropy (no smoothing) and the confusion matrix (rows: true class), all processes."""
    model.eval()
    mine = torch.arange(dist.rank, len(x), dist.world)  # each process scores its share
    loss_sum = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        xb, yb = x[idx].to(device), y[idx].to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        pred = logits.argmax(1).cpu()
        confusion += torch.bincount(yb.cpu() * num_classes + pred, minlength=num_classes**2).reshape(
            num_classes, num_classes
        ).double()
    summed = dist.sum(torch.cat([torch.tensor([loss_sum], dtype=torch.float64), confusion.flatten()]))
    return summed[0].item() / max(len(x), 1), summed[1:].reshape(num_classes, num_classes).long()


def _costs(model: nn.Module, input_size: Sequence[int]) -> dict[str, Any]:
    """Parameters and multiply-accumulates of one forward pass of one image, by :func:`onebyone.cost`."""
    from .cost import cost
    from .machine import Peaks

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


# --------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    """What :func:`train` wrote and measured."""

    out: Path
    model: nn.Module
    metrics: dict[str, Any]

    @property
    def test_accuracy(self) -> float:
        return float(self.metrics["test_accuracy"])


def _dist_from_env() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return _Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def _device_for(requested: str | None, dist: _Dist) -> torch.device:
    if requested not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank % torch.cuda.device_count())


def _tensors(dataset: Dataset, subset: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n = len(dataset.x_train) if subset is None else min(subset, len(dataset.x_train))
    return (torch.from_numpy(dataset.x_train[:n]), torch.from_numpy(dataset.y_train[:n]),
            torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test))


@contextlib.contextmanager
def _pinned(threads: int, choices: dict[str, str] | None = None) -> Iterator[None]:
    """Run with ``threads`` CPU threads and conv1x1's choices fixed for the run; restore both after.

    conv1x1 measures which library runs each pass on first sight of a shape and keeps the choice
    in this machine's cache, so runs on one machine share their choices; a run records the ones it
    used (``conv1x1_choices`` in its checkpoints, config.json and metrics.json) and its resumption
    and re-scoring pin them: with the thread count pinned too, the same seed gives the same
    weights, and a re-scoring the same numbers, whatever the cache holds by then.
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    backend_before = set_backend("auto")
    if choices:
        pin_choices(choices)
    try:
        yield
    finally:
        clear_choices()  # the run's pins go with it (this machine's cache stays)
        set_backend(backend_before)
        torch.set_num_threads(threads_before)


def _choices_used() -> dict[str, str]:
    return {key_text(k): v for k, v in chosen_backends().items()}


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
    if dist.active:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if _device_for(config.device, dist).type == "cuda" else "gloo")
    try:
        with _pinned(threads):
            return _train(config, out, resume, progress, log, dataset, dist, model, teacher)
    finally:
        if dist.active:
            import gc

            import torch.distributed as tdist

            if tdist.is_initialized():
                # the process group lives as long as the DDP wrapper, which sits in reference cycles:
                # collected now, the group's worker threads are joined here, while every tensor they
                # still hold is owned by Python (see _REDUCED), not during the interpreter's shutdown
                gc.collect()
                tdist.destroy_process_group()
            _REDUCED.clear()  # the group's threads are gone: the main thread lets the tensors go


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


# ------------------------------------------------------------------------ evaluate


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


def evaluate(
    run_dir: str | Path, data: str | None = None, *, dataset: Dataset | None = None, device: str | None = None
) -> dict[str, Any]:
    """Score the weights saved in ``run_dir`` on the test split of ``data`` (default: the data
    they were trained on). Returns accuracy, loss, the confusion matrix and the counts."""
    model, run_config = load_run(run_dir)
    data = run_config["data"] if data is None else data
    if dataset is None:
        dataset = load_dataset(data)
    _check_fits(model, run_config["model"], dataset)
    dev = _device_for(device, _Dist())
    model.to(dev)
    _, _, x_test, y_test = _tensors(dataset, None)
    threads = int(run_config.get("train", {}).get("threads") or 1)
    with _pinned(threads, run_config.get("conv1x1_choices")):  # as the run scored itself
        loss, confusion = _score(model, x_test, y_test, dataset.num_classes, _Dist(), dev)
    correct = int(confusion.diagonal().sum())
    return {"model": run_config["model"], "data": data, "dataset": repr(dataset),
            "test_accuracy": correct / len(y_test), "test_loss": loss, "correct": correct,
            "test_images": len(y_test), "confusion": confusion.tolist()}


# ------------------------------------------------------------------------- compare


# One line per ablation for the table; models.ABLATIONS says exactly what each one changes.
_CHANGE = {"no1x1": "1x1 layers removed", "fc": "FC head + dropout, no GAP", "naive": "no 1x1 reductions"}
assert set(_CHANGE) == set(ABLATIONS)


@dataclass
class CompareResult:
    """A model and its ablations, trained alike: one row each."""

    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plot(self) -> Path:
        """The bar chart of the rows (``out/compare.png``)."""
        return self.out / "compare.png"

    @property
    def json_path(self) -> Path:
        """The rows as JSON (``out/compare.json``)."""
        return self.out / "compare.json"

    def table(self) -> str:
        head = f"{'model':<24} {'test acc':>9} {'params':>11} {'M MACs':>9} {'seconds':>8}  change"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['model']:<24} {100 * r['test_accuracy']:8.2f}% {r['params']:>11,} "
                         f"{r['macs'] / 1e6:>9.2f} {r['seconds']:>8.1f}  {r['change']}")
        return "\n".join(lines) + "\n"


def compare(
    model: str = "nin_digits",
    data: str = "digits",
    out: str | Path = "onebyone-compare",
    *,
    ablations: Iterable[str] | None = None,
    epochs: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> CompareResult:
    """Train ``model`` and its ablations on the same data with the same settings and seed.

    ``ablations`` picks among the model's registered ones by suffix (``["no1x1"]``); None
    means all of them. Each run goes to ``out/<name>/``; the side-by-side table to
    ``out/compare.json`` and a bar chart to ``out/compare.png``. A quick look, such as
    ``compare("nin_digits", "digits", out, ablations=["no1x1"], epochs=5)``, takes well
    under a minute on two cores.
    """
    available = ablations_of(model)
    if ablations is None:
        names = available
    else:
        wanted = list(ablations)
        suffixes = [name.rsplit("_", 1)[-1] for name in available]
        unknown = [a for a in wanted if a not in suffixes]
        if unknown:
            raise ValueError(f"{model} has no ablation(s) {unknown}; expected some of {suffixes or 'none'}")
        names = [f"{model}_{a}" for a in wanted]
    out = Path(out)
    dataset = load_dataset(data)
    result = CompareResult(out)
    for name in [model, *names]:
        say = log if log is not None else (lambda _line: None)
        say(f"--- {name}")
        config = TrainConfig(model=name, data=data, epochs=epochs, seed=seed, threads=threads)
        run = train(config, out / name, resume=resume, progress=progress, log=log, dataset=dataset)
        suffix = name[len(model) + 1 :] if name != model else ""
        result.rows.append({
            "model": name,
            "change": _CHANGE[suffix] if suffix else "as defined",
            "test_accuracy": run.metrics["test_accuracy"],
            "params": run.metrics["params"],
            "macs": run.metrics["macs"],
            "seconds": run.metrics["seconds"],
            "epochs": run.metrics["epochs"],
        })
    _write_json(out / "compare.json", {"model": model, "data": data, "dataset": repr(dataset), "seed": seed,
                                       "macs_convention": MACS_CONVENTION, "rows": result.rows})
    plot_compare(result.rows, out / "compare.png", title=f"{model} and its ablations on {dataset.name}")
    return result


# --------------------------------------------------------------------------- plots


def plot_curves(history: Sequence[dict[str, float]], path: Path, *, title: str = "") -> Path:
    """Loss and accuracy per epoch, train and test, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-"), ("test", "--")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        ax_acc.plot(epochs, [100 * h[f"{split}_accuracy"] for h in history], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (train: with label smoothing)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save_figure(fig, path)
    return path


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: Path, *, title: str = "") -> Path:
    """The confusion matrix: rows are the true classes, columns the predictions, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(confusion, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                color = "white" if confusion[i, j] > confusion.max() / 2 else "black"
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(n), classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _save_figure(fig, path)
    return path


def plot_conv1x1(layer: Conv1x1, path: Path, *, title: str = "") -> Path:
    """A 1x1 layer's weights as the K x C matrix it is: row k mixes the C input maps into output map k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = layer.weight.detach().cpu().reshape(layer.out_channels, -1).numpy()  # K x C/groups
    limit = float(np.abs(w).max()) or 1.0
    k, c = w.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + c / 12), min(10.0, 1.5 + k / 12)))
    image = ax.imshow(w, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="weight")
    ax.set(xlabel=f"input map (C = {c})", ylabel=f"output map (K = {k})",
           title=title + "\nthe learned 1x1 weights: each row is one output map's mix of the input maps")
    _save_figure(fig, path)
    return path


def plot_compare(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Test accuracy, parameters, MACs and seconds of each model, as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    panels = (("test accuracy (%)", [100 * r["test_accuracy"] for r in rows]),
              ("parameters (thousands)", [r["params"] / 1e3 for r in rows]),
              ("M MACs per image", [r["macs"] / 1e6 for r in rows]),
              ("training seconds", [r["seconds"] for r in rows]))
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2 + 0.25 * len(rows)))
    for ax, (label, values) in zip(axes, panels, strict=True):
        bars = ax.barh(names, values, color=[f"C{i}" for i in range(len(rows))])
        ax.bar_label(bars, fmt="%.2f" if "accuracy" in label else "%.1f", fontsize=8)
        ax.set_title(label)
        ax.invert_yaxis()
        if "accuracy" in label:
            ax.set_xlim(max(0.0, min(values) - 5), 100)
        ax.margins(x=0.2)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle(title)
    _save_figure(fig, path)
    return path
