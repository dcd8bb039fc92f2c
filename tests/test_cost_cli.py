"""``onebyone cost`` as a user runs it: a subprocess, its output, its files, its exit code."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

MODEL_PY = """
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.reduce = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.reduce(torch.relu(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def small():
    return Small()


def fixed():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def not_a_model():
    return 42


def broken():
    raise RuntimeError("cannot build")


NUMBER = 7
"""

# MACs of Small on 3x8x8 by hand: 3x3 stem, 1x1 reduction, linear
SMALL_MACS = 16 * 64 * 27 + 8 * 64 * 16 + 10 * 8


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mynet.py"
    path.write_text(MODEL_PY)
    return path


def onebyone(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onebyone", "cost", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_table(model_file):
    p = onebyone(f"{model_file}:small", "--input", "3x8x8")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "1 MAC (multiply-add) = 2 FLOPs" in out and "bias counted" in out
    assert "GFLOP/s" in out and "GB/s" in out  # the roofline's figures, with units
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    for name, kind in [("stem", "conv"), ("reduce", "conv1x1"), ("fc", "linear"), ("pool", "pool")]:
        assert [name, kind] in [row[1:3] for row in rows]
    assert f"{SMALL_MACS:,} MACs" in out
    assert "not counted: nothing" in out


def test_json_csv_plot(model_file, tmp_path):
    csv_path, png_path = tmp_path / "layers.csv", tmp_path / "macs.png"
    p = onebyone(f"{model_file}:small", "--input", "3x8x8", "--batch", "2", "--json", "--csv", str(csv_path),
                 "--plot", str(png_path))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # stdout is the document alone
    assert doc["totals"]["macs"] == 2 * SMALL_MACS
    assert doc["input_shape"] == [2, 3, 8, 8]
    assert doc["by_kind"]["conv1x1"]["macs"] == 2 * 8 * 64 * 16
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [r["name"] for r in doc["layers"]]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {csv_path}" in p.stderr and f"wrote {png_path}" in p.stderr


def test_no_bias_and_module_factory(model_file):
    p = onebyone("mynet:small", "--input", "3x8x8", "--no-bias", "--json", cwd=model_file.parent)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["convention"]["count_bias"] is False
    assert doc["totals"]["params"] == 16 * 27 + 8 * 16 + 8 * 10
    assert doc["totals"]["excluded_bias_params"] == 16 + 8 + 10


def test_measure(model_file):
    p = onebyone(f"{model_file}:small", "--input", "3x8x8", "--measure", "--repeats", "2")
    assert p.returncode == 0, p.stderr
    assert "measured" in p.stdout and "median of 2 runs" in p.stdout


def test_registered_models():
    p = onebyone("nin_digits", "--input", "1x8x8")
    assert p.returncode == 0, p.stderr
    assert "cost of nin_digits on input 1x1x8x8" in p.stdout and "conv1x1" in p.stdout
    # the paper's network, counted from shapes alone on the meta device: Table 1's 1.58 G MACs
    p = onebyone("googlenet", "--input", "3x224x224", "--device", "meta", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["totals"]["macs"] == 1_582_671_872 and doc["device"] == "meta"
    assert doc["not_counted"] == {}


def test_bottleneck():
    p = onebyone("--bottleneck")
    assert p.returncode == 0, p.stderr
    assert "120,422,400" in p.stdout and "12,443,648" in p.stdout and "9.68x fewer MACs" in p.stdout
    p = onebyone("--bottleneck", "--channels", "256", "--out-channels", "64", "--reduce", "32",
                 "--kernel", "3", "--size", "14", "--json")
    doc = json.loads(p.stdout)
    assert doc["direct_macs"] == 14 * 14 * 64 * 9 * 256
    assert doc["bottleneck_macs"] == 14 * 14 * (32 * 256 + 64 * 9 * 32)


# every bad input: one line on stderr, exit code 2, no traceback. The first four run as a user
# would (a subprocess); the rest call the same main() in this process, which is much faster.
BAD_INPUTS = [
    (("{f}:small", "--input", "224x224"), "CxHxW"),
    (("{d}/missing.py:small", "--input", "3x8x8"), "does not exist"),
    (("{f}:fixed", "--input", "3x16x16"), "failed on input 1x3x16x16: RuntimeError"),
    (("{f}:not_a_model", "--input", "3x8x8"), "expected an nn.Module"),
    ((), "needs MODEL"),
    (("{f}:small",), "needs --input"),
    (("{f}:small", "--input", "3x0x8"), "CxHxW"),
    (("no_such_module_here:small", "--input", "3x8x8"), "no module named"),
    (("{f}:nothing", "--input", "3x8x8"), "has no 'nothing'"),
    (("{f}:NUMBER", "--input", "3x8x8"), "expected a callable"),
    (("{f}:broken", "--input", "3x8x8"), "RuntimeError: cannot build"),
    (("not-registered", "--input", "3x8x8"), "unknown model"),
    (("googlenet", "--input", "3x8x8", "--device", "meta"), "failed on input 1x3x8x8"),
    (("nin_digits", "--input", "1x8x8", "--device", "meta", "--measure"), "needs a real device"),
    (("nin_digits", "--input", "1x8x8", "--device", "gpu7"), "--device"),
    (("{f}:small", "--input", "3x8x8", "--plot", "{d}/x.jpg"), ".png"),
    (("{f}:small", "--input", "3x8x8", "--csv", "{d}"), "expects a file"),
    (("--bottleneck", "--input", "3x8x8"), "--bottleneck takes no --input"),
    (("--bottleneck", "--size", "28x"), "HxW"),
    (("{f}:small", "--input", "3x8x8", "--reduce", "4"), "only go with --bottleneck"),
]


def _one_error_line(stderr: str, code: int, message: str) -> None:
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onebyone: error:"), stderr
    assert message in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS[:4])
def test_bad_input_subprocess(model_file, args, message):
    p = onebyone(*(a.format(f=model_file, d=model_file.parent) for a in args))
    _one_error_line(p.stderr, p.returncode, message)
    assert p.stdout == ""


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS[4:])
def test_bad_input_in_process(model_file, args, message, capsys):
    from onebyone.cli import main

    code = main(["cost", *(a.format(f=model_file, d=model_file.parent) for a in args)])
    _one_error_line(capsys.readouterr().err, code, message)
