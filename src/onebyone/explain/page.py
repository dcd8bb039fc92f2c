"""The self-contained interactive page: its files and data written atomically, and a 127.0.0.1-only server."""

from __future__ import annotations

import functools
import http.server
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from .._files import atomic_write
from ._util import _prepare_dir

_PAGE_FILES = ("index.html", "common.js", "trained.js", "app.js", "style.css")


def write_page(doc: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write the self-contained interactive page (index.html, its scripts and style, data.js) to ``out_dir``.

    data.js carries ``doc`` (the library's numbers) as a script, so the page works opened
    straight from disk (browsers refuse fetch() on file://) and needs no network.
    """
    out = _prepare_dir(out_dir)
    web = resources.files("onebyone") / "web"
    for name in _PAGE_FILES:
        atomic_write(out / name, (web / name).read_bytes())
    payload = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    atomic_write(out / "data.js", f"window.ONEBYONE_DATA = {payload};\n".encode())
    return out / "index.html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def page_server(directory: str | os.PathLike[str], port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the page in ``directory``, on 127.0.0.1 only; ``port=0`` picks a free port.

    The caller runs ``serve_forever()`` and closes it; ``server.server_address[1]`` is the port.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    path = Path(directory)
    if not (path / "index.html").is_file():
        raise FileNotFoundError(f"no index.html in {str(path)!r}: write the page there first")
    handler = functools.partial(_QuietHandler, directory=str(path))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise ValueError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
