"""Training: the files a run writes, determinism, resuming after SIGKILL with bitwise the same
weights, evaluate, compare, the CLI (train / evaluate / compare), and two processes under torchrun.

Runs are kept small (a few hundred of the embedded digits, one to four epochs) so the file
finishes in well under a minute or two on two cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import onebyone
from onebyone import create_model
from onebyone.data import load_digits
from onebyone.train import TrainConfig, compare, evaluate, train

ROOT = Path(__file__).resolve().parents[1]
FILES = ("checkpoint.safetensors", "model.safetensors", "config.json", "metrics.json", "curves.png",
         "confusion.png", "conv1x1_weights.png")
SMALL = {"model": "nin_digits", "subset": 256, "batch_size": 32}


@pytest.fixture(scope="module")
def digits() -> onebyone.data.Dataset:
    return load_digits()


@pytest.fixture
def one_thread():  # bitwise comparisons between runs need the same thread count in each
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onebyone", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=ROOT)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a), load_file(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------------- one run


def test_train_writes_the_run(tmp_path: Path, digits: onebyone.data.Dataset) -> None:
    lines: list[str] = []
    result = train(TrainConfig(**SMALL, epochs=2), tmp_path / "run", log=lines.append, dataset=digits)
    run = tmp_path / "run"
    for name in FILES:
        assert (run / name).is_file(), name
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    assert len(metrics["history"]) == 2 and metrics["epochs"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    # two epochs on 256 digits are too few to generalise (NiN starts slowly), but it is learning
    assert metrics["history"][1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_accuracy"] == metrics["history"][-1]["test_accuracy"]
    assert metrics["test_images"] == 360 and metrics["train_images"] == 256
    assert np.asarray(metrics["confusion"]).sum() == 360
    # params and MACs are onebyone.cost's counts (bias adds not counted; 1 MAC = 2 FLOPs)
    report = onebyone.cost(create_model("nin_digits"), (1, 8, 8), count_bias=False)
    assert metrics["params"] == report.model_params == sum(p.numel() for p in result.model.parameters())
    assert metrics["macs"] == report.macs == 2_925_568
    assert "1 MAC = 2 FLOPs" in metrics["macs_convention"]
    assert metrics["seconds"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "nin_digits" and config["input_size"] == [1, 8, 8]
    assert config["train"]["epochs"] == 2 and config["train"]["lr"] > 0  # defaults filled in
    # one line per epoch, then the result
    assert sum(line.startswith("epoch") for line in lines) == 2
    assert "test accuracy" in lines[-1]
    # the weights load into a fresh model and give the same test accuracy
    scored = evaluate(run, dataset=digits)
    assert scored["test_accuracy"] == metrics["test_accuracy"]
    assert scored["confusion"] == metrics["confusion"]


def test_same_seed_same_weights(tmp_path: Path, digits: onebyone.data.Dataset, one_thread: None) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        train(TrainConfig(**SMALL, epochs=1, seed=seed), tmp_path / name, dataset=digits)
    assert _same_weights(tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors")
    assert not _same_weights(tmp_path / "a" / "model.safetensors", tmp_path / "c" / "model.safetensors")


def test_refuses_mismatches(tmp_path: Path, digits: onebyone.data.Dataset) -> None:
    with pytest.raises(ValueError, match=r"model 'nin_mnist' expects 1 x 28 x 28 images but data 'digits' "
                                         r"has 1 x 8 x 8; models sized for it: .*nin_digits"):
        train(TrainConfig(model="nin_mnist", epochs=1), tmp_path / "x", dataset=digits)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        train(TrainConfig(model="resnet", epochs=1), tmp_path / "x", dataset=digits)
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        train(TrainConfig(epochs=0), tmp_path / "x", dataset=digits)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        train(TrainConfig(epochs=1, lr=-1.0), tmp_path / "x", dataset=digits)
    train(TrainConfig(**SMALL, epochs=1), tmp_path / "done", dataset=digits)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(TrainConfig(**SMALL, epochs=1), tmp_path / "done", dataset=digits)
    with pytest.raises(ValueError, match=r"written by a different run.*'seed': \(0, 1\)"):
        train(TrainConfig(**SMALL, epochs=1, seed=1), tmp_path / "done", resume=True, dataset=digits)


def test_evaluate_errors(tmp_path: Path, digits: onebyone.data.Dataset) -> None:
    with pytest.raises(NotADirectoryError, match="is not a folder written by train"):
        evaluate(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        evaluate(tmp_path / "empty")
    train(TrainConfig(**SMALL, epochs=1), tmp_path / "run", dataset=digits)
    (tmp_path / "run" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(ValueError, match=r"model\.safetensors: unreadable safetensors"):
        evaluate(tmp_path / "run", dataset=digits)


# ------------------------------------------------------------------------ resuming


def test_interrupted_write_leaves_the_last_checkpoint(
    tmp_path: Path, digits: onebyone.data.Dataset, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt between writing the new checkpoint and renaming it over the old one (the
    worst moment) leaves the old checkpoint whole, and resuming ends with the same weights."""
    config = TrainConfig(**SMALL, epochs=3)
    train(config, tmp_path / "whole", dataset=digits)

    real_replace = os.replace
    calls = {"n": 0}

    def replace_then_die(src: str, dst: str) -> None:
        calls["n"] += Path(dst).name == "checkpoint.safetensors"  # not conv1x1's cache of choices
        if calls["n"] == 2:  # the second epoch's checkpoint is on disk, not yet in place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", dataset=digits)
    monkeypatch.setattr(os, "replace", real_replace)
    cut = tmp_path / "cut"
    assert not (cut / "metrics.json").exists() and not list(cut.glob(".*.tmp"))
    meta = json.loads(json.loads(_header(cut / "checkpoint.safetensors"))["__metadata__"]["onebyone"])
    assert meta["epoch"] == 1
    train(config, cut, resume=True, dataset=digits)
    assert _same_weights(tmp_path / "whole" / "model.safetensors", cut / "model.safetensors")
    history = json.loads((cut / "metrics.json").read_text())["history"]
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]
    assert [h["test_accuracy"] for h in history] == [h["test_accuracy"] for h in whole]


def _header(path: Path) -> str:
    raw = path.read_bytes()
    return raw[8 : 8 + int.from_bytes(raw[:8], "little")].decode()


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(json.loads(json.loads(_header(path))["__metadata__"]["onebyone"])["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path: Path, one_thread: None) -> None:
    """SIGKILL a training process mid-run; --resume finishes with exactly the uninterrupted weights."""
    args = ["train", "--model", "nin_digits", "--subset", "256", "--batch-size", "32", "--epochs", "4",
            "--seed", "3", "--quiet"]
    whole = _cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "onebyone", *args, "--out", str(cut)], env=_env(),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # kill it as soon as the second epoch's checkpoint is in place: it is then in epoch 3
        while _checkpoint_epoch(cut / "checkpoint.safetensors") < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "metrics.json").exists()
    resumed = _cli(*args, "--out", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming nin_digits from epoch" in resumed.stdout
    assert _same_weights(tmp_path / "whole" / "model.safetensors", cut / "model.safetensors")
    assert _same_weights(tmp_path / "whole" / "checkpoint.safetensors", cut / "checkpoint.safetensors")


@pytest.mark.slow
def test_ctrl_c_stops_a_run_started_with_sigint_ignored(tmp_path: Path, sigint_ignored) -> None:
    """As a shell starts a background job: train restores Ctrl-C, stops with exit 130 and one line,
    and the checkpoint it left resumes to the end."""
    args = ["train", "--model", "nin_digits", "--subset", "256", "--batch-size", "32", "--epochs", "12",
            "--seed", "3", "--quiet", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen([sys.executable, "-m", "onebyone", *args], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_ignored)
    deadline = time.monotonic() + 120
    try:
        while _checkpoint_epoch(tmp_path / "run" / "checkpoint.safetensors") < 1:
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    resumed = _cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr


# ------------------------------------------------------------------------- compare


def test_compare_quick(tmp_path: Path) -> None:
    result = compare("nin_digits", "digits", tmp_path / "cmp", ablations=["no1x1"], epochs=1, seed=0)
    assert [r["model"] for r in result.rows] == ["nin_digits", "nin_digits_no1x1"]
    full, ablated = result.rows
    assert full["params"] > ablated["params"] and full["macs"] > ablated["macs"]
    for row in result.rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["seconds"] > 0 and row["epochs"] == 1
        assert (tmp_path / "cmp" / row["model"] / "metrics.json").is_file()
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result.rows))
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    table = result.table()
    assert "nin_digits_no1x1" in table and "test acc" in table
    with pytest.raises(ValueError, match=r"nin_digits has no ablation\(s\) \['naive'\]; expected some of"):
        compare("nin_digits", "digits", tmp_path / "bad", ablations=["naive"], epochs=1)


# ----------------------------------------------------------------------------- CLI


def test_cli_train_and_evaluate(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _cli("train", "--model", "nin_digits_no1x1", "--epochs", "1", "--subset", "200", "--out", str(out),
                "--quiet")
    assert done.returncode == 0, done.stderr
    assert "epoch   1/1" in done.stdout and "test accuracy" in done.stdout
    assert "Traceback" not in done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "nin_digits_no1x1"
    assert metrics["conv1x1_plotted"] is None and not (out / "conv1x1_weights.png").exists()  # none to draw
    scored = _cli("evaluate", str(out), "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["test_accuracy"] == metrics["test_accuracy"]
    again = _cli("train", "--model", "nin_digits_no1x1", "--epochs", "1", "--out", str(out), "--quiet")
    assert again.returncode == 2 and "already holds a training run" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "nope", "--out", "x"], "unknown model 'nope'"),
        (["train", "--data", "no/such/folder", "--out", "x"], "data 'no/such/folder'"),
        (["train", "--model", "nin_cifar10", "--out", "x"], "expects 3 x 32 x 32 images"),
        (["train", "--epochs", "0", "--out", "x"], "0"),
        (["evaluate", "no/such/run"], "not a folder written by train"),
        (["compare", "--ablations", "nothing", "--out", "x"], "no ablation(s) ['nothing']"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from onebyone.cli import main

    args = [str(tmp_path / a) if a == "x" else a for a in args]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 or err.startswith("usage:")


# ---------------------------------------------------------------- two processes


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "onebyone", "train", "--model", "nin_digits", "--subset", "256", "--batch-size", "32",
           "--epochs", "2", "--out", str(out), "--quiet", "--device", "cpu"]
    # its own session, so that a hang kills the workers too, not only the launcher
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=ROOT, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    # the head too: a worker's own traceback comes first, torchrun's summary of the failure last
    err = done.stderr if len(done.stderr) <= 8000 else done.stderr[:5000] + "\n[...]\n" + done.stderr[-3000:]
    assert done.returncode == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    assert metrics["train_images"] == 256 and metrics["test_images"] == 360
    assert np.asarray(metrics["confusion"]).sum() == 360  # both halves of the test set were scored
    assert metrics["history"][1]["train_loss"] < metrics["history"][0]["train_loss"]
    # only rank 0 wrote and logged: one line per epoch, one set of files, no leftovers
    assert done.stdout.count("epoch   1/2") == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert evaluate(out)["test_accuracy"] == metrics["test_accuracy"]
