"""``onebyone explain --run DIR`` / ``--model M --weights W``: the trained network's section, end to end."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from onebyone.cli import main
from onebyone.explain import decode_array
from onebyone.reference import conv1x1_reference
from onebyone.train import load_run

# conv1x1 on PyTorch's kernels, one thread: the view's numbers are under test, not the per-shape timing
pytestmark = pytest.mark.usefixtures("one_thread_torch_kernels")


def test_a_run_is_explained_end_to_end(nin_run, tmp_path, capsys):
    assert (
        main(["explain", "--run", str(nin_run), "--images", "0,5", "--no-timing", "--quiet", "--json"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    view = doc["trained"]
    assert view["model"] == "nin_digits" and view["data"] == "digits"
    assert [im["index"] for im in view["images"]] == [0, 5]
    model, _ = load_run(nin_run)
    names = [layer["name"] for layer in view["layers"]]
    assert names == [n for n, m in model.named_modules() if type(m).__name__ == "Conv1x1"] and len(names) == 6
    # one layer redone from the run's own weights: its input by a hook, its output by the definition
    layer = view["layers"][3]
    module = model.get_submodule(layer["name"])
    seen = {}

    def keep(m, inputs, output):
        seen["x"] = inputs[0].detach().double().numpy()

    module.register_forward_hook(keep)
    from onebyone.data import load_digits

    with torch.no_grad():
        model(torch.from_numpy(load_digits().x_test[[0, 5]]))
    w = module.weight.detach().double().reshape(module.weight.shape[0], -1).numpy()
    np.testing.assert_allclose(
        decode_array(layer["outputs"][1]), conv1x1_reference(seen["x"][1], w), atol=1e-5
    )
    assert view["compress_command"].startswith(f"onebyone compress {nin_run}")

    # the text and the page carry it too
    assert (
        main(["explain", "--run", str(nin_run), "--no-timing", "--quiet", "--html", str(tmp_path / "page")])
        == 0
    )
    text = capsys.readouterr().out
    assert "8. Inside a trained network: nin_digits on digits" in text and "features.block3.mlp2.conv" in text
    data_js = (tmp_path / "page" / "data.js").read_text()
    assert '"trained":' in data_js and (tmp_path / "page" / "trained.js").is_file()


def test_a_model_and_its_weights(nin_run, capsys):
    weights = str(nin_run / "model.safetensors")
    assert (
        main(
            [
                "explain",
                "--model",
                "nin_digits",
                "--weights",
                weights,
                "--images",
                "7",
                "--no-timing",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    view = json.loads(capsys.readouterr().out)["trained"]
    assert [im["index"] for im in view["images"]] == [7] and view["data"] == "digits"  # 1 x 8 x 8: digits


@pytest.fixture
def no_1x1(tmp_path):
    """A network of the user's own, with no 1x1 layer, and weights that fit it."""
    path = tmp_path / "net.py"
    path.write_text(
        textwrap.dedent("""
        from torch import nn

        def plain():
            net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
            net.default_input_size = (1, 8, 8)
            return net
    """)
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    save_file(module.plain().state_dict(), tmp_path / "plain.safetensors")
    return f"{path}:plain", str(tmp_path / "plain.safetensors")


def test_bad_input_gets_one_line_and_exit_2(nin_run, no_1x1, tmp_path, capsys):
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("mine")
    spec, plain_weights = no_1x1
    cases = [
        (["--run", str(not_a_run)], "is not a training run"),
        (["--run", str(tmp_path / "missing")], "not a folder"),
        (
            ["--model", "googlenet_digits", "--weights", str(nin_run / "model.safetensors")],
            "do not fit googlenet_digits",
        ),
        (
            ["--model", "nin_digits", "--weights", str(nin_run / "config.json")],
            "not a readable safetensors file",
        ),
        (["--model", "nin_digits"], "needs --weights"),
        (["--run", str(nin_run), "--images", "0,360"], "image index 360 is out of range"),
        (["--run", str(nin_run), "--images", "0,x"], "expected held-out image indices"),
        (["--run", str(nin_run), "--images", ",".join(["1"] * 9)], "at most 8"),
        (["--images", "3"], "--images goes with --run DIR or --model M"),
        (["--model", spec, "--weights", plain_weights], "has no 1x1 layer"),
    ]
    for args, message in cases:
        assert main(["explain", *args, "--no-timing", "--quiet", "--html", str(tmp_path / "page")]) == 2, args
        captured = capsys.readouterr()
        assert captured.out == "", args  # nothing printed, nothing written before the refusal
        assert captured.err.count("\n") == 1 and message in captured.err, (args, captured.err)
        assert "Traceback" not in captured.err
        assert not (tmp_path / "page").exists()
    assert (not_a_run / "notes.txt").read_text() == "mine"
