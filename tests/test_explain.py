"""onebyone.explain: every example against the float64 definition, the seed's claims checked, the outputs.

The page itself is driven in a real browser in tests/test_web.py.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import urllib.request
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from onebyone import cli, explain
from onebyone._files import atomic_write
from onebyone.data import seed_digit_maps
from onebyone.machine import Peaks
from onebyone.reference import conv1x1_reference

FAKE_PEAKS = Peaks(50.0, 10.0, "cpu", "test machine", 2, torch.__version__, "now")


@pytest.fixture(scope="module")
def doc():
    return explain.examples(timing=False)


# ------------------------------------------------------------------ the examples


def test_math_view_is_the_definition(doc):
    m = doc["math"]
    expected = conv1x1_reference(explain.MATH_MAPS, explain.MATH_KERNEL)[0]  # 6 x 6
    np.testing.assert_allclose(m["output"], expected, rtol=0, atol=1e-12)
    assert (
        m["input_shape"] == [3, 6, 6] and m["output_shape"] == [1, 6, 6] and m["filter_shape"] == [1, 3, 1, 1]
    )
    # the cells the seed spells out, by hand: 1*0.1 + 3*0.2 + 1*0.4 and 4*0.1 + 3*0.2 + 3*0.4
    t00, t10 = m["arithmetic"]
    assert t00["cell"] == [0, 0] and t00["terms"] == [[1, 0.1], [3, 0.2], [1, 0.4]]
    assert t00["value"] == pytest.approx(1.1)
    assert t10["cell"] == [1, 0] and t10["terms"] == [[4, 0.1], [3, 0.2], [3, 0.4]]
    assert t10["value"] == pytest.approx(2.2)


def test_math_view_takes_other_inputs_and_rejects_mismatched_ones():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(4, 3, 5)), rng.normal(size=4)
    m = explain.math_view(x, w, cells=[(2, 4)])
    np.testing.assert_allclose(m["output"], conv1x1_reference(x, w)[0], atol=1e-12)
    assert m["arithmetic"][0]["value"] == pytest.approx(float(np.dot(w, x[:, 2, 4])))
    with pytest.raises(ValueError, match="one weight per map"):
        explain.math_view(x, [1.0, 2.0])


def test_results_do_not_come_from_the_seeds_printed_text(monkeypatch):
    printed = copy.deepcopy(explain.SEED_PRINTED)
    for row in printed["math.T"]["value"]:
        row[:] = [0.0] * len(row)
    monkeypatch.setattr(explain.claims, "SEED_PRINTED", printed)
    m = explain.math_view()
    assert m["output"][5][2] == pytest.approx(4.6) and m["output"][0][0] == pytest.approx(1.1)


def test_digit_view_combines_the_maps_and_reads_one_pixel(doc):
    d = doc["digits"]
    for digit in (2, 3):
        expected = conv1x1_reference(seed_digit_maps(digit), [1.0, 1.0])[0]
        np.testing.assert_allclose(d["digits"][str(digit)]["output"], expected, atol=0)
    assert d["digits"]["2"]["symbolic"] == [list("aaa"), list("00b"), list("aaa"), list("b00"), list("aaa")]
    assert d["digits"]["3"]["symbolic"] == [list("aaa"), list("00b"), list("aaa"), list("00b"), list("aaa")]
    assert d["differing_pixels"] == [[3, 0], [3, 2]]
    r = d["readout"]
    assert r["pixel"] == [3, 0] and r["reads_as"] == {"2": 2, "3": 3}
    assert r["test_accuracy"] > 0.95


def test_the_learned_weights_classify_and_look_at_row_3(doc):
    learned = doc["digits"]["learned"]
    assert learned["train_accuracy"] >= 0.98 and learned["test_accuracy"] >= 0.95
    assert {tuple(s["pixel"]) for s in learned["strongest_pixels"][:2]} == {(3, 0), (3, 2)}
    assert learned["outputs"]["2"]["reads_as"] == 2 and learned["outputs"]["3"]["reads_as"] == 3
    # the learned output is the 1x1 convolution with the learned weights, by the definition
    y = conv1x1_reference(seed_digit_maps(2), learned["weight"], [learned["bias"]])[0]
    np.testing.assert_allclose(learned["outputs"]["2"]["output"], y, atol=1e-12)
    score = float((y * np.array(learned["readout"])).sum() + learned["readout_bias"])
    assert learned["outputs"]["2"]["score"] == pytest.approx(score)


def test_digit_view_with_other_stroke_values():
    d = explain.digit_view(a=2.0, b=0.5, steps=5, examples=16)
    assert d["digits"]["2"]["output"][3] == [0.5, 0.0, 0.0] and d["digits"]["2"]["output"][0] == [2.0] * 3
    assert d["readout"]["threshold"] == 0.25
    with pytest.raises(ValueError, match="no output pixel"):
        explain.digit_view(b=0.0, steps=1, examples=4)


def test_advanced_view(doc):
    a = doc["advanced"]
    assert a["input_shape"] == [10, 32, 32] and a["output_shape"] == [4, 32, 32]
    assert a["params"] == 4 * 10 + 4 and a["macs"] == 4 * 10 * 32 * 32
    expected = conv1x1_reference(a["inputs"]["maps"], a["inputs"]["weight"], a["inputs"]["bias"])
    np.testing.assert_allclose(a["output"], expected, atol=1e-12)
    assert a["max_abs_diff_vs_reference"] < 1e-12


def test_reduction_counts_by_hand(doc):
    r = doc["reduction"]
    assert r["params"] == 50 * 20 and r["params_with_bias"] == 50 * 20 + 20
    assert r["macs"] == 600 * 600 * 20 * 50 == 360_000_000 and r["flops"] == 2 * r["macs"]
    assert r["bytes"]["input"] == 50 * 600 * 600 * 4 and r["bytes"]["output"] == 20 * 600 * 600 * 4
    assert r["bytes"]["weights"] == 20 * 50 * 4
    assert r["output_shape"] == [20, 600, 600] and r["timing"] is None


def test_reduction_timing_and_roofline():
    r = explain.reduction_example(8, 16, 16, 4, repeats=2, limits=FAKE_PEAKS)
    t = r["timing"]
    assert t["repeats"] == 2 and len(t["conv1x1_runs_s"]) == 2 and t["conv1x1_s"] > 0 and t["conv2d_s"] > 0
    flops, moved = 2 * 4 * 8 * 16 * 16, 4 * (8 * 256 + 4 * 256 + 32)
    assert t["roofline_s"] == pytest.approx(max(flops / 50e9, moved / 10e9))
    assert t["roofline_fraction"] == pytest.approx(t["roofline_s"] / t["conv1x1_s"])
    with pytest.raises(ValueError, match="channels"):
        explain.reduction_example(0, 4, 4, 2, timing=False)


def test_conv_cost_agrees_with_torch_flop_counter():
    cases = [(192, 32, 5, 28), (192, 16, 1, 28), (16, 32, 5, 28), (50, 20, 1, 12)]
    for cin, cout, k, size in cases:
        counter = FlopCounterMode(display=False)
        with counter:
            F.conv2d(torch.zeros(1, cin, size, size), torch.zeros(cout, cin, k, k), padding=k // 2)
        assert counter.get_total_flops() == 2 * explain.conv_cost(cin, cout, k, size, size)["macs"]


def test_inception_reduction(doc):
    inc = doc["inception"]
    assert inc["direct"]["macs"] == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert inc["reduced"]["macs"] == 28 * 28 * 16 * 192 + 28 * 28 * 32 * 5 * 5 * 16 == 12_443_648
    assert inc["direct"]["params"] == 153_600 and inc["reduced"]["params"] == 3_072 + 12_800
    assert inc["macs_ratio"] == pytest.approx(120_422_400 / 12_443_648)


def test_depth(doc):
    d = doc["depth"]
    assert [g["output_shape"] for g in d["more_filters"]] == [[1, 6, 6], [2, 6, 6], [3, 6, 6]]
    assert d["first_map_max_change"] == 0.0
    assert d["mlp"]["max_abs_diff_vs_linear_per_pixel"] < 1e-12 and d["linear"]["max_abs_diff"] < 1e-12
    # the per-pixel MLP by hand, in NumPy: relu(W1 x + b1) -> relu(W2 . + b2) -> W3 . + b3
    x = explain.MATH_MAPS.reshape(3, -1)  # 3 x 36
    h = x
    for i, (w, b) in enumerate(zip(d["mlp"]["weights"], d["mlp"]["biases"], strict=True)):
        h = np.array(w) @ h + np.array(b)[:, None]
        h = np.maximum(h, 0) if i < 2 else h
    np.testing.assert_allclose(np.array(d["mlp"]["output"]).reshape(2, -1), h, atol=1e-12)


# ------------------------------------------------------------------ the seed's claims


def test_disagreements_with_the_seed(doc):
    found = {
        (c["claim"], json.dumps(c["computed"].get("cell")) if c["claim"] == "math.T" else "")
        for c in doc["disagreements"]
    }
    assert found == {
        ("math.output_size", ""),
        ("math.transformation_general", ""),
        ("math.T", "[5, 2]"),
        ("digits.output_2", ""),
        ("digits.pixel", ""),
    }
    by_claim = {c["claim"]: c for c in doc["disagreements"]}
    size = by_claim["math.output_size"]
    assert size["seed"] == [5, 5] and size["computed"] == [6, 6]
    t52 = next(c for c in doc["disagreements"] if c["claim"] == "math.T")
    assert t52["seed"]["value"] == 0.6 and t52["computed"]["value"] == pytest.approx(4.6)
    assert by_claim["digits.output_2"]["computed"]["matches_digit"] == [3]
    assert by_claim["digits.pixel"]["computed"]["pixel_where_claim_holds"] == [3, 0]
    assert all(c["explanation"] for c in doc["disagreements"])


def test_every_printed_claim_is_checked(doc):
    claims = {c["claim"] for c in doc["checks"]}
    assert claims == set(explain.SEED_PRINTED)
    assert sum(c["claim"] == "math.T" for c in doc["checks"]) == 36
    agreeing = {c["claim"] for c in doc["checks"] if c["agrees"]}
    assert {"math.T00_arithmetic", "math.T10_arithmetic", "math.transformation"} <= agreeing
    assert "digits.output_1" in agreeing
    assert {"advanced.shapes", "reduction.shapes"} <= agreeing


def test_the_checks_follow_the_printed_values(doc, monkeypatch):
    printed = copy.deepcopy(explain.SEED_PRINTED)
    printed["math.T"]["value"][5][2] = 4.6
    printed["math.output_size"]["value"] = [6, 6]
    printed["digits.output_2"]["value"]["caption_digit"] = 3
    printed["math.T10_arithmetic"]["value"]["result"] = 2.3
    monkeypatch.setattr(explain.claims, "SEED_PRINTED", printed)
    failing = {c["claim"] for c in explain.check_seed(doc) if not c["agrees"]}
    assert failing == {"math.transformation_general", "digits.pixel", "math.T10_arithmetic"}


def test_document_is_strict_json(doc):
    text = json.dumps(doc, allow_nan=False)
    back = json.loads(text)
    sections = {"math", "digits", "advanced", "reduction", "depth", "inception", "checks", "disagreements"}
    assert set(back) >= sections


# ------------------------------------------------------------------ text, figures, page, server


def test_text_is_aligned_and_complete(doc):
    text = explain.render_text(doc)
    for n in range(1, 8):
        assert f"\n{n}. " in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("T = conv1x1"))
    block = lines[start + 1 : start + 7]
    assert len({len(line) for line in block}) == 1 and all(line.startswith("[ ") for line in block)
    assert "T[0,0] = 1*0.1 + 3*0.2 + 1*0.4 = 1.1" in text
    assert "360,000,000 MACs" in text and "9.68x fewer MACs" in text
    assert "time: not measured" in text
    assert "the seed prints 0.6, the computed 4.6 is right" in text


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.png"]


def test_writing_into_a_file_is_refused(doc, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(NotADirectoryError, match="directory"):
        explain.write_figures(doc, f)


def test_page_is_self_contained(doc, tmp_path):
    index = explain.write_page(doc, tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert names == ["app.js", "common.js", "data.js", "index.html", "style.css", "trained.js"]
    data = (tmp_path / "data.js").read_text()
    prefix = "window.ONEBYONE_DATA = "
    assert data.startswith(prefix)
    assert json.loads(data[len(prefix) :].rstrip().rstrip(";")) == json.loads(json.dumps(doc))
    for name in ("index.html", "common.js", "trained.js", "app.js", "style.css"):
        text = (tmp_path / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert "@import" not in text and "fetch(" not in text, name
    html = index.read_text()
    assert all(f'src="{name}"' in html for name in ("data.js", "common.js", "trained.js", "app.js"))


def test_page_server_serves_on_loopback(doc, tmp_path):
    explain.write_page(doc, tmp_path)
    server = explain.page_server(tmp_path, 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and port > 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
            assert r.status == 200 and b"app.js" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data.js", timeout=5) as r:
            assert r.read().startswith(b"window.ONEBYONE_DATA")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        explain.page_server(tmp_path / "nothing", 0)
    with pytest.raises(ValueError, match="port"):
        explain.page_server(tmp_path, 70000)


# ------------------------------------------------------------------ the command


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onebyone", "explain", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_text():
    r = _run("--no-timing", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "1. Math view" in r.stdout and "7. Where the seed's text disagrees" in r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_json_figures_and_page(tmp_path):
    r = _run(
        "--json", "--no-timing", "--quiet", "--out", str(tmp_path / "figs"), "--html", str(tmp_path / "page")
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert len(doc["disagreements"]) == 5 and doc["reduction"]["timing"] is None
    assert (tmp_path / "page" / "index.html").is_file() and "wrote" in r.stderr
    figures = sorted(os.listdir(tmp_path / "figs"))  # and no temporary files left beside them
    assert figures == ["advanced_view.png", "cost.png", "depth.png", "digits.png", "math_view.png"]
    for name in figures:
        png = (tmp_path / "figs" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--serve", "--port", "70000"], "port"),
        (["--port", "8123"], "--serve"),
        (["--repeats", "0"], "positive integer"),
        (["--repeats", "many"], "positive integer"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_cli_bad_arguments(args, message, capsys):
    assert cli.main(["explain", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("onebyone: error:")


def test_cli_refuses_a_file_for_a_directory(tmp_path):
    f = tmp_path / "taken"
    f.write_text("")
    r = _run("--out", str(f))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "expects a directory" in r.stderr and str(f) in r.stderr


def test_cli_is_registered():
    names = [name for name, *_ in cli._COMMANDS]
    assert "explain" in names
    assert (resources.files("onebyone") / "web" / "index.html").is_file()
