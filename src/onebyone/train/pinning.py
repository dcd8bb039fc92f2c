"""What a run pins so that it can be repeated: the thread count and conv1x1's choices of library."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..ops import chosen_backends, clear_choices, pin_choices, set_backend
from ..ops.cache import key_text


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
