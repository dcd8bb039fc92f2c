"""The choices conv1x1 measured, kept on disk per machine.

One file per machine identity (the processor's name, vendor, family, model, stepping and flags,
PyTorch's and onebyone's versions, the native kernels' instruction set) under the user's cache
folder: ``$XDG_CACHE_HOME/onebyone/choices-<identity>.jsonl`` (``~/.cache`` without it). Each
entry maps a key (pass, layout, shape, stride, groups, dtype, threads) to the library chosen and
the seconds each candidate took (on the slice of the call it was timed on; and where close ones
were then tried on whole calls, their "calls" seconds, or while that is pending their names as
"contenders"). The file's first line is a JSON header (the format, the identity, a SHA-256 of
the rest), then a line an entry: its key, a tab, the entry as JSON. A process reads it in a
fraction of a millisecond and decodes only the entries it asks for (a suite's 300 entries as one
JSON document took 1 ms to parse, all a warm first call may cost). Writers merge under a lock
and replace the file atomically, so two processes tuning at once both land; a corrupt file, or
one whose identity is not this machine's, is ignored (and replaced at the next write) with one
warning, never trusted; a cache folder that cannot be written keeps the choices in memory, with
one warning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write

try:
    import fcntl
except ImportError:  # not on Windows: writers then do not lock (the rename is still atomic)
    fcntl = None  # type: ignore[assignment]

_FORMAT = 2
Key = tuple[Any, ...]
Entry = dict[str, Any]


def key_text(key: Key) -> str:
    """A key as the file stores it: its fields joined by '|'."""
    return "|".join(str(v) for v in key)


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


@functools.lru_cache(maxsize=1)
def machine_identity() -> dict[str, str]:
    """What makes a measured choice valid: the processor, its flags, the libraries' versions."""
    from .. import __version__  # not importlib.metadata: that costs milliseconds on a first call
    from .amx import amx_available
    from .native import native_isa

    info = _cpuinfo()
    flags = " ".join(sorted((info.get("flags") or info.get("Features") or "").split()))
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id", ""),
        "family": info.get("cpu family", ""),
        "model": info.get("model", ""),
        "stepping": info.get("stepping", ""),
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "torch": torch.__version__,
        "onebyone": __version__,
        "native": str(native_isa()),
        "amx": str(amx_available()),  # the flags say the CPU has it; this, that the process got it
    }


def _identity_hash(identity: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def cache_path() -> Path:
    """The file this machine's choices live in."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onebyone" / f"choices-{_this_machine()}.jsonl"


@functools.lru_cache(maxsize=1)
def _this_machine() -> str:
    return _identity_hash(machine_identity())


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in seconds.items()}


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def encode_file(identity: dict[str, str], entries: dict[str, Entry | bytes]) -> bytes:
    """A choices file's bytes: the header line, then each entry (decoded, or its line's JSON as read)
    on a line of its own, in key order."""
    lines = []
    for key in sorted(entries):
        v = entries[key]
        raw = v if isinstance(v, bytes) else json.dumps(v, sort_keys=True, separators=(",", ":")).encode()
        lines.append(key.encode() + b"\t" + raw + b"\n")
    body = b"".join(lines)
    head = json.dumps({"format": _FORMAT, "machine": identity, "sha256": _digest(body)}, sort_keys=True)
    return head.encode() + b"\n" + body


def _split_file(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A choices file's header and its entries' undecoded JSON by key; ValueError if it is not one
    (a header that is not this format's, a body whose digest is not the header's, a line without
    its tab)."""
    head, _, body = data.partition(b"\n")
    header = json.loads(head)
    valid = isinstance(header, dict) and header.get("format") == _FORMAT
    if not valid or header.get("sha256") != _digest(body):
        raise ValueError("not a choices file")
    entries = {}
    for line in body.splitlines():
        key, tab, raw = line.partition(b"\t")
        if not tab:
            raise ValueError("not a choices file")
        entries[key.decode()] = raw
    return header, entries


def _decoded(raw: bytes) -> Entry | None:
    """One entry's JSON, or None where it is not an entry."""
    try:
        v = json.loads(raw)
    except ValueError:
        return None
    return v if isinstance(v, dict) and isinstance(v.get("choice"), str) else None


def read_file(path: Path) -> tuple[dict[str, str], dict[str, Entry]]:
    """A choices file's machine identity and every entry, decoded (what tools and tests read);
    ValueError if it is not a valid choices file."""
    header, raw = _split_file(path.read_bytes())
    entries = {k: _decoded(v) for k, v in raw.items()}
    if any(v is None for v in entries.values()):
        raise ValueError("not a choices file")
    return header["machine"], entries  # type: ignore[return-value]


class ChoiceCache:
    """The file's entries, read once, merged on every write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded_from: Path | None = None
        self.entries: dict[str, Entry | bytes] = {}
        self.warned = False

    def _warn(self, message: str) -> None:
        if not self.warned:  # one warning a process: a bad cache must not flood a training log
            self.warned = True
            warnings.warn(f"onebyone: {message}; conv1x1 measures its choices again", stacklevel=4)

    def _read(self, path: Path) -> dict[str, Entry | bytes]:
        """The file's entries by key, undecoded; {} (with one warning) when it is corrupt or foreign."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._warn(f"cannot read {path} ({exc.strerror})")
            return {}
        try:
            header, entries = _split_file(data)
        except (ValueError, UnicodeDecodeError):
            self._warn(f"ignoring {path}: not a valid choices file")
            return {}
        if header.get("machine") != machine_identity():
            self._warn(f"ignoring {path}: written on another machine or software version")
            return {}
        return dict(entries)

    def load(self) -> dict[str, Entry | bytes]:
        """Every entry for this machine by key, decoded or not yet (the file read on first use, and
        again if the path moved)."""
        path = cache_path()
        if self._loaded_from != path:
            with self._lock:
                if self._loaded_from != path:
                    self.entries = self._read(path)
                    self._loaded_from = path
        return self.entries

    def get(self, text: str) -> Entry | None:
        """The entry of a key (as key_text gives it), decoded on first use; None if there is none.
        An entry that does not decode (the digest matched, so something wrote it so) is dropped with
        the one warning."""
        entries = self.load()
        v = entries.get(text)
        if isinstance(v, bytes):
            v = _decoded(v)
            if v is None:
                self._warn(f"ignoring the entry {text!r} of {cache_path()}: not an entry")
                entries.pop(text, None)
            else:
                entries[text] = v
        return v

    def keys(self) -> set[str]:
        """The keys this machine's file and this process hold."""
        return set(self.load())

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(self, key: Key, choice: str, seconds: dict[str, float], sample: dict[str, Any]) -> None:
        """Keep a new choice (the seconds each candidate took, and the images and output rows they
        took it on): in memory at once, and merged into the file."""
        entry: Entry = {"choice": choice, "images": sample["images"], "rows": sample["rows"],
                        "seconds": _rounded(seconds)}
        if sample.get("contenders"):  # on trial: tried on whole calls by whichever process runs next
            entry["contenders"] = list(sample["contenders"])
        if sample.get("calls"):  # the trial's result: the median seconds of a whole call
            entry["calls"] = _rounded(sample["calls"])
        self.load()[key_text(key)] = entry
        path = cache_path()
        try:
            with self._lock, self._locked(path):
                merged = self._read(path) if path.exists() else {}
                merged.update(self.entries)
                atomic_write(path, encode_file(machine_identity(), merged))
                self.entries = merged
        except OSError as exc:
            self._warn(f"cannot write {path} ({exc.strerror}); the choices stay in this process")

    def clear(self, *, disk: bool) -> None:
        with self._lock:
            self.entries = {}
            self._loaded_from = None  # read the file again on next use (nothing there after disk)
            if disk:
                with contextlib.suppress(FileNotFoundError):
                    cache_path().unlink()


CACHE = ChoiceCache()
