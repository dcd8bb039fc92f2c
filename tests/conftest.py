"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from onebyone.ops import set_backend


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory):
    """The tests' own cache folder (conv1x1's measured choices, the machine's peaks), inherited by
    every command they start: nothing read from or written to the user's."""
    from onebyone.ops import clear_choices

    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    clear_choices()
    yield
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own, nothing remembered in the process, auto policy."""
    from onebyone.ops import cache, clear_choices

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cache.CACHE, "warned", False)
    before = set_backend("auto")
    clear_choices()
    yield tmp_path / "cache"
    clear_choices()
    set_backend(before)


@pytest.fixture(scope="module")
def one_thread_torch_kernels():
    """One thread and conv1x1 on PyTorch's kernels for a module's tests, restored after.

    Small tensors: a second thread only waits for a core when the machine is busy; and where the
    layers and models, not conv1x1's backends (tests/test_ops.py), are under test, its per-shape
    timing is skipped.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    backend = set_backend("torch")
    yield
    set_backend(backend)
    torch.set_num_threads(before)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def sigint_ignored():
    """A preexec_fn that starts a child with SIGINT ignored, as a shell starts a background job:
    the commands that stop on Ctrl-C must restore the default handler themselves."""
    return _ignore_sigint


@pytest.fixture(scope="session")
def nin_run(tmp_path_factory):
    """A short training run of nin_digits on the embedded digits, as `onebyone train` writes it."""
    from onebyone.train import TrainConfig, train

    out = tmp_path_factory.mktemp("nin-run")
    train(TrainConfig(model="nin_digits", epochs=2), out)
    return out
