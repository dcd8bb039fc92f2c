"""Data loading: the embedded digits' fixed split, MNIST-format IDX files (and every way they can be
broken), CIFAR-10 batches through the arrays-only unpickler (a crafted pickle must not run code),
and load_dataset telling them apart. Small files are written by the tests themselves."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onebyone.data import (
    CIFAR10_CLASSES,
    DIGITS_TEST_FRACTION,
    load_cifar10,
    load_dataset,
    load_digits,
    load_idx_folder,
    read_cifar_batch,
    read_idx,
    seed_digit_maps,
)

MNIST_DIR = Path(os.environ.get("ONEBYONE_MNIST_DIR",
                                Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-10k"))


# ---------------------------------------------------------------------------- helpers


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written by hand from the format's definition (unsigned bytes only)."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _write_mnist(folder: Path, n_train: int = 30, n_test: int = 10, size: int = 28, gz: bool = False,
                 seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        raw = _idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


def _cifar_batch(n: int = 4, seed: int = 0, **overrides: object) -> dict[bytes, object]:
    """A batch shaped like CIFAR-10's: Python 2 byte-string keys, uint8 N x 3072 data, a list of labels."""
    rng = np.random.default_rng(seed)
    batch: dict[bytes, object] = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    batch.update({k.encode(): v for k, v in overrides.items()})
    return batch


def _write_cifar(folder: Path, batches: int = 2, n: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, batches + 1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(n, seed=i), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(_cifar_batch(n, seed=99), protocol=2))


# -------------------------------------------------------------------------- the seed


def test_seed_digit_maps() -> None:
    two, three = seed_digit_maps(2), seed_digit_maps(3, a=2.0, b=5.0)
    assert two.shape == three.shape == (2, 5, 3)
    assert two[1, 3, 0] == 1 and two[1, 3, 2] == 0 and three[1, 3, 2] == 5
    assert (three[0] == 2 * two[0]).all()
    with pytest.raises(ValueError, match="only the digits 2 and 3, got 7"):
        seed_digit_maps(7)


# --------------------------------------------------------------------- embedded digits


def test_digits_split_is_fixed_and_stratified() -> None:
    a, b = load_digits(), load_digits()
    assert a.name == "digits" and a.input_size == (1, 8, 8) and a.num_classes == 10
    assert len(a.y_train) == 1437 and len(a.y_test) == 360
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0
    # every class holds out its share
    counts = np.bincount(np.concatenate([a.y_train, a.y_test]))
    test_counts = np.bincount(a.y_test)
    assert np.all(np.abs(test_counts - DIGITS_TEST_FRACTION * counts) <= 1)
    # no image is in both halves
    train_rows = {row.tobytes() for row in a.x_train}
    assert sum(row.tobytes() in train_rows for row in a.x_test) < 5  # the data set has a few duplicates
    assert "1437 train + 360 test" in repr(a)


# ---------------------------------------------------------------------- IDX, good files


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_mnist(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    np.testing.assert_array_equal(read_idx(tmp_path / ("train-images-idx3-ubyte" + suffix)),
                                  arrays["train-images-idx3-ubyte"])
    data = load_idx_folder(tmp_path)
    assert data.input_size == (1, 28, 28) and len(data.y_train) == 30 and len(data.y_test) == 10
    np.testing.assert_allclose(data.x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_idx_other_types(tmp_path: Path) -> None:
    values = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    path = tmp_path / "ints.idx"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 3, 4) + values.tobytes())
    read = read_idx(path)
    assert read.dtype == np.int32 and read.dtype.isnative
    np.testing.assert_array_equal(read, values)


def test_idx_dotted_names(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path)
    for name in list(arrays):
        # train-images.idx3-ubyte, as some mirrors spell it
        (tmp_path / name).rename(tmp_path / name.replace("-idx", ".idx"))
    assert len(load_idx_folder(tmp_path).y_train) == 30


# ----------------------------------------------------------------------- IDX, bad files


def test_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_idx(tmp_path / "nothing")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="no test labels file; expected t10k-labels-idx1-ubyte"):
        load_idx_folder(tmp_path)


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x50\x4b\x03\x04" + bytes(100))  # a zip file's magic
    with pytest.raises(ValueError, match=r"bad\b.*bad magic number 1347093252 \(0x504b0304\)"):
        read_idx(path)


def test_idx_images_and_labels_swapped(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(arrays["train-images-idx3-ubyte"]))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: magic number 2051, expected 2049"):
        load_idx_folder(tmp_path)


@pytest.mark.parametrize("cut", [2, 10, 16 + 28 * 28 * 3 - 1])
def test_idx_truncated(tmp_path: Path, cut: int) -> None:
    arrays = _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(arrays["train-images-idx3-ubyte"])[:cut])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated"):
        load_idx_folder(tmp_path)


def test_idx_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(_idx_bytes(np.zeros(5, np.uint8)) + b"\0\0")
    with pytest.raises(ValueError, match="labels: corrupt: 2 bytes after the data"):
        read_idx(path)


def test_idx_gzip_truncated_and_corrupt(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    whole = gzip.compress(_idx_bytes(arrays["train-images-idx3-ubyte"]))
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: truncated gzip data"):
        load_idx_folder(tmp_path)
    broken = bytearray(whole)
    broken[20:40] = bytes(20)
    path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: (corrupt gzip data|truncated)"):
        load_idx_folder(tmp_path)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(ValueError, match=r"holds 30 images but .*train-labels-idx1-ubyte holds 29 labels"):
        load_idx_folder(tmp_path)


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    labels = np.zeros(10, np.uint8)
    labels[7] = 12
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: label 12 at index 7 is out of range; "
                                         "expected 0 to 9"):
        load_idx_folder(tmp_path)


def test_idx_train_and_test_sizes_differ(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((10, 20, 20), np.uint8)))
    with pytest.raises(ValueError, match="train images are 28 x 28 but test images are 20 x 20"):
        load_idx_folder(tmp_path)


# -------------------------------------------------------------------------- CIFAR-10


def test_cifar_round_trip(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py", batches=2, n=4)
    data = load_cifar10(tmp_path)  # finds the subfolder
    assert data.name == "cifar10" and data.input_size == (3, 32, 32) and data.classes == CIFAR10_CLASSES
    assert len(data.y_train) == 8 and len(data.y_test) == 4
    first = _cifar_batch(4, seed=1)
    np.testing.assert_array_equal(data.y_train[:4], first[b"labels"])
    # rows are the R, G and B planes of a 32 x 32 image, one after the other
    np.testing.assert_allclose(data.x_train[0, 1, 0, 0] * 255, first[b"data"][0, 1024], atol=1e-4)  # type: ignore[index]
    assert load_dataset(tmp_path).name == "cifar10"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_pickle_protocols(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(_cifar_batch(3), protocol=protocol))
    images, labels = read_cifar_batch(path)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8 and labels.tolist() == _cifar_batch(3)[
        b"labels"]


class _RunsCode:
    """Pickles as a call of os.system: what a crafted batch would do to a plain pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


class _Evaluates:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return eval, ("__import__('os').getpid()",)


def test_cifar_malicious_pickle_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    # the payload hidden in a value of an otherwise valid batch
    path.write_bytes(pickle.dumps(_cifar_batch(2, batch_label=_RunsCode(marker)), protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: not a plain CIFAR-10 batch: refused to load "
                                         r"(posix|os)\.system"):
        read_cifar_batch(path)
    assert not marker.exists()
    # the same bytes through an ordinary pickle.load would have run the command: the test is real
    pickle.loads(path.read_bytes())
    assert marker.exists()
    path.write_bytes(pickle.dumps(_Evaluates(), protocol=4))
    with pytest.raises(ValueError, match=r"refused to load builtins\.eval"):
        read_cifar_batch(path)


def test_cifar_object_array_refused(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(_cifar_batch(2, data=np.array([1, "a"], dtype=object)), protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: .*(refused|Python objects)"):
        read_cifar_batch(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": [1, 2, 3]}, "4 images but 3 labels"),
        ({"labels": [1, 2, 10, 3]}, "label 10 at index 2 is out of range; expected 0 to 9"),
        ({"labels": [1, -1, 2, 3]}, "label -1 at index 1 is out of range"),
        ({"data": np.zeros((4, 100), np.uint8)}, "'data' is a uint8 array of shape \\(4, 100\\); expected"),
        ({"data": np.zeros((4, 3072), np.float32)}, "'data' is a float32 array"),
        ({"labels": ["cat", "dog", "cat", "dog"]}, "'labels' must be a list of integers"),
    ],
)
def test_cifar_bad_contents(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(_cifar_batch(4, **overrides), protocol=2))
    with pytest.raises(ValueError, match=f"test_batch: .*{message}"):
        read_cifar_batch(path)


def test_cifar_missing_keys_truncated_and_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_1: has keys \\['data'\\]; expected 'data' and 'labels'"):
        read_cifar_batch(path)
    whole = pickle.dumps(_cifar_batch(4), protocol=2)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="data_batch_1: truncated or corrupt pickle"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ValueError, match="data_batch_1: holds a list; expected a dict"):
        read_cifar_batch(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match=r"data_batch_1: (truncated or corrupt|not a plain)"):
        read_cifar_batch(path)


def test_cifar_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 batches"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="no test_batch"):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------------- load_dataset


def test_load_dataset_detects(tmp_path: Path) -> None:
    assert load_dataset("digits").name == "digits"
    _write_mnist(tmp_path / "idx", gz=True)
    assert load_dataset(tmp_path / "idx").name == "mnist-format"
    assert load_dataset(str(tmp_path / "idx")).name == "mnist-format"
    with pytest.raises(FileNotFoundError, match="data 'nowhere': expected 'digits' or an existing folder"):
        load_dataset("nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; expected 'digits' or a folder"):
        load_dataset(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither MNIST-format IDX files"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(TypeError, match="data must be 'digits' or a folder path, got int"):
        load_dataset(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ real MNIST digits


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST digits not found at {MNIST_DIR} "
                    "(set ONEBYONE_MNIST_DIR to an MNIST-format folder)")
def test_mnist_10k() -> None:
    data = load_dataset(MNIST_DIR)
    assert data.name == "mnist-format" and data.input_size == (1, 28, 28)
    assert len(data.y_train) == 8000 and len(data.y_test) == 2000
    assert np.bincount(data.y_train).tolist() == [784, 882, 805, 828, 789, 679, 811, 882, 755, 785]
    assert data.x_train.min() >= 0.0 and data.x_train.max() == 1.0
    # real digits: mostly background, a stroke in the middle
    assert 0.05 < data.x_test.mean() < 0.25
    assert data.x_train[:, 0, 10:18, 10:18].mean() > 3 * data.x_train[:, 0, :3, :].mean()
