"""``onebyone compress`` as a user runs it: the folder it writes, ``evaluate`` and ``cost`` reading it
back, and one line with exit code 2 for each kind of bad input, with nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onebyone.cli import main

NO_CONV_PY = """
from torch import nn


def pools():
    return nn.Sequential(nn.AvgPool2d(2), nn.Flatten())
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training run of nin_digits (two epochs: only the folder's form matters here)."""
    from onebyone.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="nin_digits", epochs=2), out)
    return out


def test_round_trip_writes_a_folder_that_evaluate_and_cost_read(run, tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["compress", str(run), "--rank", "0.5", "--keep", "all", "--batch", "4", "--threads", "1",
                 "--finetune-epochs", "1", "--distill", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy on digits test split" in printed and "finetuned" in printed
    names = {p.name for p in out.iterdir()}
    expected = {"model.safetensors", "compressed.json", "report.json", "report.txt", "report.png", "finetune"}
    assert expected <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    description = json.loads((out / "compressed.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert description["base"] == "nin_digits" and description["layers"] == report["factorized"]
    assert all(e["method"] in ("tucker2", "svd") for e in description["layers"]) and description["layers"]
    assert not any(b"pickle" in p.read_bytes()[:64] for p in out.iterdir() if p.is_file())

    assert main(["evaluate", str(out), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["test_accuracy"] == pytest.approx(report["accuracy"]["finetuned"], abs=1e-9)
    assert main(["cost", str(out), "--json", "--quiet"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert sum(r["macs"] for r in counted["layers"]) == report["macs_after"]


def test_registered_model_with_weights_and_a_budget(run, tmp_path, capsys):
    out = tmp_path / "budget"
    assert main(["compress", "nin_digits", "--weights", str(run / "model.safetensors"), "--input", "1x8x8",
                 "--macs", "0.5", "--keep", "all", "--data", "digits", "--batch", "4",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["macs_ratio"] <= 0.5 and report["budget"]["met"] is True
    assert report["accuracy"]["finetuned"] is None and report["accuracy"]["compressed"] is not None
    capsys.readouterr()


@pytest.fixture
def no_conv(tmp_path):
    path = tmp_path / "pools.py"
    path.write_text(NO_CONV_PY)
    return path


BAD = {
    "budget above 1": (["--macs", "1.5"], "expected a fraction in (0, 1]"),
    "budget zero": (["--params", "0"], "expected a fraction in (0, 1]"),
    "both budgets": (["--macs", "0.4", "--params", "0.4"], "not allowed with argument"),
    "bad rank": (["--rank", "tucker"], "rank must be 'vbmf'"),
    "unreachable budget": (["--macs", "0.0001"], "cannot be met"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(case, run, tmp_path, capsys):
    args, message = BAD[case]
    out = tmp_path / "out"
    assert main(["compress", str(run), "--out", str(out), "--batch", "2", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_weights_that_do_not_fit_and_nothing_compressible(run, no_conv, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["googlenet_digits", "--weights", str(run / "model.safetensors")], "do not fit googlenet_digits"),
        (["nin_digits", "--weights", str(run / "metrics.json")], "not a readable safetensors file"),
        (["nin_digits"], "needs --weights"),
        ([f"{no_conv}:pools", "--weights", str(_empty_weights(tmp_path)), "--input", "1x8x8"],
         "nothing to compress"),
    ]
    for args, message in cases:
        assert main(["compress", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)
        assert not out.exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["compress", str(run), "--out", str(taken)]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (taken / "keep.txt").read_text() == "mine"


def _empty_weights(folder: Path) -> Path:
    from safetensors.torch import save_file

    path = folder / "empty.safetensors"
    save_file({}, path)
    return path


def test_a_bad_budget_from_the_shell_has_no_traceback(run, tmp_path):
    done = subprocess.run([sys.executable, "-m", "onebyone", "compress", str(run), "--macs", "2",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--macs" in done.stderr
