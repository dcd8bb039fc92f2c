""":func:`load_model`: a model from a registered name, ``path/to/file.py:factory`` or
``package.module:factory``."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .text import _one_line


def _registry() -> tuple[Callable[..., nn.Module] | None, list[str]]:
    try:
        from .. import models
    except ImportError:
        return None, []
    return models.create_model, list(models.list_models())


def load_model(spec: str) -> nn.Module:
    """A model from a registered name, ``path/to/file.py:factory`` or ``package.module:factory``.

    The factory is called with no arguments and must return an ``nn.Module``. Loading a
    file runs its code, as importing it would; nothing is unpickled.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unknown name, a module that cannot be imported, a missing factory,
            or a factory that raises.
        TypeError: the factory is not callable or returns something that is not a module.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("model must be a registered name, path/to/file.py:factory or "
                         f"package.module:factory, got {spec!r}")
    create, names = _registry()
    if spec in names and create is not None:
        return create(spec)
    if ":" not in spec:
        known = ", ".join(names) if names else "none registered"
        raise ValueError(f"unknown model {spec!r}: expected a registered name ({known}), "
                         "path/to/file.py:factory or package.module:factory")
    where, factory_name = spec.rsplit(":", 1)
    if not factory_name.isidentifier():
        raise ValueError(f"{factory_name!r} in {spec!r} is not a Python name; expected MODULE:factory")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"model file {where!r} does not exist")
        if path.suffix != ".py":
            raise ValueError(f"model file {where!r} is not a .py file")
        module_name = f"_onebyone_user_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ValueError(f"cannot load {where!r} as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            raise ValueError(f"loading {where!r} failed: {_one_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise ValueError(f"no module named {where!r} (from {spec!r}): {_one_line(exc)}") from exc
        except Exception as exc:
            raise ValueError(f"importing {where!r} failed: {_one_line(exc)}") from exc
    if not hasattr(module, factory_name):
        raise ValueError(f"{where!r} has no {factory_name!r}")
    factory = getattr(module, factory_name)
    if not callable(factory):
        raise TypeError(f"{spec!r} is a {type(factory).__name__}, expected a callable returning an nn.Module")
    try:
        model = factory()
    except Exception as exc:
        raise ValueError(f"{spec}() failed: {_one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec}() returned a {type(model).__name__}, expected an nn.Module")
    return model
