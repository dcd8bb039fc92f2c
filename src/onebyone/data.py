"""Data sets: the seed's digit patterns, and real images to train on.

Everything here is loaded from memory, from a dependency, or from a file the user names;
nothing is downloaded. Read top to bottom: the seed's 5 x 3 digits; the :class:`Dataset`
every loader returns; scikit-learn's embedded digits with their fixed split; MNIST-format
IDX files; CIFAR-10's python batches, read without running any code they might carry;
and :func:`load_dataset`, which tells them apart.
"""

from __future__ import annotations

import codecs
import gzip
import io
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "Dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_idx_folder",
    "read_cifar_batch",
    "read_idx",
    "seed_digit_maps",
]


# ------------------------------------------------------------- the seed's 2 and 3

# The seed draws each digit as two 5 x 3 feature maps. Map 1 (three horizontal strokes)
# is the same for both digits; map 2 holds the vertical strokes, as the symbol b, and is
# where they differ: digit 2's lower stroke is on the left (row 3, column 0), digit 3's
# on the right (row 3, column 2). Rows and columns count from 0.
_STROKES = np.array(
    [
        [1, 1, 1],
        [0, 0, 0],
        [1, 1, 1],
        [0, 0, 0],
        [1, 1, 1],
    ],
    dtype=np.float64,
)
_VERTICAL = {
    2: np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float64),
    3: np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float64),
}


def seed_digit_maps(digit: int, a: float = 1.0, b: float = 1.0) -> np.ndarray:
    """The seed's two 5 x 3 feature maps of ``digit`` (2 or 3), as a 2 x 5 x 3 float64 array.

    ``a`` is the value of the horizontal strokes (map 1), ``b`` of the vertical strokes
    (map 2), the two symbols the seed uses.
    """
    if digit not in _VERTICAL:
        raise ValueError(f"the seed draws only the digits 2 and 3, got {digit!r}")
    return np.stack([a * _STROKES, b * _VERTICAL[digit]])


# ------------------------------------------------------------------ the common form


@dataclass(frozen=True)
class Dataset:
    """Images and labels, split into train and test, in the form every model here reads.

    Images are float32 ``N x C x H x W`` scaled to [0, 1]; labels are int64 class indices.
    """

    name: str  # "digits", "mnist-format", "cifar10"
    source: str  # where the data came from: "scikit-learn" or the folder
    x_train: np.ndarray  # N x C x H x W float32
    y_train: np.ndarray  # N int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def input_size(self) -> tuple[int, int, int]:
        """One image's (C, H, W)."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        c, h, w = self.input_size
        return (f"Dataset({self.name!r}, {len(self.y_train)} train + {len(self.y_test)} test images of "
                f"{c} x {h} x {w}, {self.num_classes} classes, from {self.source})")


# ------------------------------------------------------------- the embedded digits

#: The embedded digits' split: this fraction of each class is held out for testing ...
DIGITS_TEST_FRACTION = 0.2
#: ... chosen by a stratified shuffle with this seed, whatever the training seed is.
DIGITS_SPLIT_SEED = 0


_DIGIT_CLASSES = tuple(str(d) for d in range(10))


def load_digits() -> Dataset:
    """scikit-learn's 1,797 handwritten digits (8 x 8, grey levels 0-16), with a fixed split.

    The split never changes: a stratified shuffle (``sklearn.model_selection.train_test_split``
    with ``random_state=DIGITS_SPLIT_SEED``) holds out ``DIGITS_TEST_FRACTION`` of each
    class, 1,437 training and 360 test images. Pixels are divided by 16.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    return Dataset("digits", "scikit-learn", x_train, y_train, x_test, y_test, _DIGIT_CLASSES)


# ----------------------------------------------------------------- MNIST-format IDX

# IDX: two zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32, then the data, big-endian. MNIST images are magic 2051 (0x0803:
# unsigned bytes, 3 dimensions), labels 2049 (0x0801: unsigned bytes, 1 dimension).
_IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(t).str.lstrip("<>|="): code for code, t in _IDX_TYPES.items()}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic number."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise ValueError(f"{path}: truncated gzip data (the compressed stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt gzip data ({exc})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a NumPy array of its shape and type.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, for a bad magic number, a truncated or corrupt file,
            or bytes left over after the data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated: {len(raw)} bytes, not even the 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or code not in _IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad magic number {magic} (0x{magic:08x}); expected an IDX file, such as "
            f"{IDX_IMAGES_MAGIC} for images or {IDX_LABELS_MAGIC} for labels"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated: the header needs {header} bytes, the file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header
    if found < expected:
        raise ValueError(
            f"{path}: truncated: shape {'x'.join(map(str, shape))} needs {expected} bytes of data, "
            f"found {found}"
        )
    if found > expected:
        raise ValueError(f"{path}: corrupt: {found - expected} bytes after the data its header describes")
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def _idx_of(path: Path, magic: int) -> np.ndarray:
    """read_idx, insisting on one kind of MNIST file: images (2051) or labels (2049)."""
    array = read_idx(path)
    found = (_IDX_CODES[array.dtype.str.lstrip("<>|=")] << 8) | array.ndim
    if found != magic:
        what = ("images (unsigned bytes, N x rows x cols)" if magic == IDX_IMAGES_MAGIC
                else "labels (unsigned bytes, N)")
        raise ValueError(f"{path}: magic number {found}, expected {magic}: MNIST {what}")
    return array


# The four files of an MNIST-format release, in any of the spellings found in the wild.
_IDX_NAMES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(folder: Path, split: str, what: str) -> Path | None:
    for stem in _IDX_NAMES[(split, what)]:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _is_idx_folder(folder: Path) -> bool:
    return any(_find_idx(folder, split, what) for split, what in _IDX_NAMES)


def _idx_pair(folder: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    paths = {what: _find_idx(folder, split, what) for what in ("images", "labels")}
    for what, path in paths.items():
        if path is None:
            raise FileNotFoundError(
                f"{folder}: no {split} {what} file; expected {_IDX_NAMES[(split, what)][0]} (or .gz)"
            )
    images_path, labels_path = paths["images"], paths["labels"]
    assert images_path is not None and labels_path is not None
    images = _idx_of(images_path, IDX_IMAGES_MAGIC)
    labels = _idx_of(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "expected one label per image"
        )
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        raise ValueError(
            f"{labels_path}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range; "
            f"expected 0 to {num_classes - 1}"
        )
    x = (images.astype(np.float32) / 255.0)[:, None]  # N x 1 x rows x cols
    return x, labels.astype(np.int64)


def load_idx_folder(folder: str | Path) -> Dataset:
    """MNIST-format data from ``folder``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``).

    MNIST, Fashion-MNIST and any subset in the same format load alike: 10 classes, grey
    levels divided by 255. Every problem raises an error naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is not a folder")
    x_train, y_train = _idx_pair(folder, "train", 10)
    x_test, y_test = _idx_pair(folder, "test", 10)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{folder}: train images are {x_train.shape[2]} x {x_train.shape[3]} but test images are "
            f"{x_test.shape[2]} x {x_test.shape[3]}; expected one size"
        )
    return Dataset("mnist-format", str(folder), x_train, y_train, x_test, y_test, _DIGIT_CLASSES)


# ---------------------------------------------------------------------- CIFAR-10

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# What a pickled NumPy array needs, and nothing else: the array and dtype types, the two
# functions NumPy's own pickles call to rebuild an array (under their NumPy 1 and 2
# module names), and the codec call Python 3 uses to pickle bytes at protocol 2. None of
# them can run code; every other global a pickle names is refused, so a crafted file
# fails to load instead of executing.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce_ex__(2)[0],
    ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce_ex__(2)[0],
    ("numpy.core.numeric", "_frombuffer"): np.empty(0).__reduce_ex__(5)[0],
    ("numpy._core.numeric", "_frombuffer"): np.empty(0).__reduce_ex__(5)[0],
    ("_codecs", "encode"): codecs.encode,
}


class _Refused(pickle.UnpicklingError):
    """A pickle named a global outside ``_SAFE_GLOBALS``."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers, strings, numbers and NumPy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise _Refused(
                f"refused to load {module}.{name}: only plain arrays, lists, dicts, strings and numbers "
                "are accepted"
            )
        return found


def _check_plain(obj: Any, path: Path) -> None:
    """Reject anything but plain data (object arrays could smuggle references around)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise ValueError(f"{path}: holds an array of Python objects; expected plain numbers")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, path)
            _check_plain(v, path)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, path)
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None))):
        raise ValueError(
            f"{path}: holds a {type(obj).__name__}; expected plain arrays, lists, dicts and numbers"
        )


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images ``N x 3 x 32 x 32`` uint8 and labels ``N`` int64.

    The file is read with an unpickler that builds only plain data (see ``_SAFE_GLOBALS``):
    a crafted pickle cannot run code here, it raises ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {str(path)!r} does not exist")
    try:
        # the batches were written by Python 2: byte strings stay bytes
        batch = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except _Refused as exc:
        raise ValueError(f"{path}: not a plain CIFAR-10 batch: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            struct.error) as exc:
        raise ValueError(f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None
    _check_plain(batch, path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: holds a {type(batch).__name__}; expected a dict with data and labels")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: has keys {sorted(map(str, batch))}; expected 'data' and 'labels'")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise ValueError(f"{path}: 'data' is a {found}; expected a uint8 array of shape N x 3072")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: 'labels' must be a list of integers") from None
    if y.ndim != 1 or len(y) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {y.size} labels; expected one label per image")
    bad = np.flatnonzero((y < 0) | (y >= len(CIFAR10_CLASSES)))
    if bad.size:
        raise ValueError(
            f"{path}: label {int(y[bad[0]])} at index {int(bad[0])} is out of range; expected 0 to 9"
        )
    return data.reshape(-1, 3, 32, 32), y  # rows are R, G, B planes of 32 x 32


def _cifar_root(folder: Path) -> Path | None:
    for root in (folder, folder / "cifar-10-batches-py"):
        if (root / "test_batch").is_file() or (root / "data_batch_1").is_file():
            return root
    return None


def load_cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10 from its python batches (``data_batch_1`` ... ``data_batch_5``, ``test_batch``) in
    ``folder`` or its ``cifar-10-batches-py`` subfolder. Any number of training batches is used."""
    folder = Path(folder)
    root = _cifar_root(folder)
    if root is None:
        raise FileNotFoundError(f"{folder}: no CIFAR-10 batches; expected data_batch_1 ... and test_batch")
    train = sorted(root.glob("data_batch_*"))
    if not train:
        raise FileNotFoundError(f"{root}: no training batches; expected data_batch_1 ... data_batch_5")
    if not (root / "test_batch").is_file():
        raise FileNotFoundError(f"{root}: no test_batch")
    parts = [read_cifar_batch(p) for p in train]
    x_test, y_test = read_cifar_batch(root / "test_batch")
    x_train = np.concatenate([x for x, _ in parts]).astype(np.float32) / 255.0
    y_train = np.concatenate([y for _, y in parts])
    return Dataset("cifar10", str(root), x_train, y_train, x_test.astype(np.float32) / 255.0, y_test,
                   CIFAR10_CLASSES)


# ---------------------------------------------------------------------- by name


def load_dataset(spec: str | Path) -> Dataset:
    """``"digits"`` (embedded), or a folder holding MNIST-format IDX files or CIFAR-10 batches."""
    if isinstance(spec, str) and spec == "digits":
        return load_digits()
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"data must be 'digits' or a folder path, got {type(spec).__name__}")
    folder = Path(spec)
    if not folder.exists():
        raise FileNotFoundError(f"data {str(spec)!r}: expected 'digits' or an existing folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"data {str(spec)!r} is a file; expected 'digits' or a folder")
    if _is_idx_folder(folder):
        return load_idx_folder(folder)
    if _cifar_root(folder) is not None:
        return load_cifar10(folder)
    raise FileNotFoundError(
        f"{folder}: neither MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...) nor CIFAR-10 "
        "batches (data_batch_1, ..., test_batch)"
    )
