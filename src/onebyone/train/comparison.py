""":func:`compare`: a model against its ablations, trained alike, in one table and one chart."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..models import ABLATIONS, ablations_of
from .config import TrainConfig
from .files import MACS_CONVENTION, _write_json
from .plots import plot_compare
from .run import train

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
