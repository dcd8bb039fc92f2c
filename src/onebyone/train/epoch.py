"""One epoch: the random streams seeded from ``(seed, epoch, rank)``, the augmentation, the
learning-rate schedule, the loss (with distillation), one pass over the training images, and the
test scoring after it."""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Dataset
from .config import DATA_DEFAULTS, DISTILL_TEMPERATURE, DISTILL_WEIGHT, TrainConfig
from .distributed import _Dist


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


def _tensors(dataset: Dataset, subset: int | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n = len(dataset.x_train) if subset is None else min(subset, len(dataset.x_train))
    return (torch.from_numpy(dataset.x_train[:n]), torch.from_numpy(dataset.y_train[:n]),
            torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test))
