"""The interactive page in a real browser: its numbers against onebyone.reference, its messages, no network.

Drives Debian's chromium through Playwright for Python, on the page opened from disk
(file://) and served by ``onebyone explain --serve`` on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onebyone import explain
from onebyone.data import seed_digit_maps
from onebyone.reference import conv1x1_reference

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def doc():
    return explain.examples(timing=False)


@pytest.fixture(scope="module")
def page_dir(doc, tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    explain.write_page(doc, folder)
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


class Watched:
    """A page with every request it makes recorded, and anything not local aborted."""

    def __init__(self, browser, allowed: tuple[str, ...]):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.route(
            "**/*",
            lambda route: route.continue_() if route.request.url.startswith(allowed) else route.abort(),
        )

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]", timeout=10_000)

    def values(self, prefix: str, shape: tuple[int, ...]) -> np.ndarray:
        """The full-precision values of cells ``{prefix}-i-j`` (data-value), as an array of ``shape``."""
        found = self.page.eval_on_selector_all(
            f"[id^='{prefix}-']", "els => els.map(e => [e.id, e.dataset.value])"
        )
        out = np.full(shape, np.nan)
        for ident, value in found:
            index = tuple(int(v) for v in ident[len(prefix) + 1 :].split("-"))
            if len(index) == len(shape):
                out[index] = float(value)
        assert not np.isnan(out).any(), f"missing or empty cells under {prefix}"
        return out

    def text(self) -> str:
        return self.page.inner_text("body")

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def local(browser, page_dir):
    w = Watched(browser, ("file://",))
    w.open((page_dir / "index.html").as_uri())
    yield w
    assert w.errors == []
    assert all(u.startswith("file://") for u in w.requests), w.requests
    w.close()


def _math_inputs(w: Watched, shape: tuple[int, int, int]) -> np.ndarray:
    """The input maps as the page holds them (the values typed into its cells)."""
    found = w.page.eval_on_selector_all("#math-maps input", "els => els.map(e => [e.id, e.value])")
    out = np.full(shape, np.nan)
    for ident, value in found:
        c, i, j = (int(v) for v in ident.split("-")[1:])
        out[c, i, j] = float(value)
    return out


def test_math_view_matches_the_reference(local):
    w = local
    # the seed's example as the page opens: T, cell by cell
    expected = conv1x1_reference(explain.MATH_MAPS, explain.MATH_KERNEL)  # 1 x 6 x 6
    np.testing.assert_allclose(w.values("y", (1, 6, 6)), expected, atol=1e-12)
    assert "Y0[0,0] = 1*0.1 + 3*0.2 + 1*0.4 = 1.1" in w.page.inner_text("#math-arith")

    # new weights, a bias, an edited input value, and a second filter
    for sel, value in [("#w-0-0", "0.5"), ("#w-0-1", "-1.25"), ("#w-0-2", "2e-1"), ("#b-0", "0.3")]:
        w.page.fill(sel, value)
    w.page.fill("#x-1-2-3", "7.5")
    w.page.click("#add-filter")
    w.page.fill("#w-1-0", "3")
    w.page.fill("#w-1-2", "-0.75")
    x = np.array(explain.MATH_MAPS)
    x[1, 2, 3] = 7.5
    weights = [[0.5, -1.25, 0.2], [3.0, 1.0, -0.75]]  # the added filter starts by copying map 1
    np.testing.assert_allclose(_math_inputs(w, (3, 6, 6)), x)
    np.testing.assert_allclose(
        w.values("y", (2, 6, 6)), conv1x1_reference(x, weights, [0.3, 0.0]), atol=1e-12
    )

    # click a cell: its arithmetic
    w.page.click("#y-1-4-5")
    arith = w.page.inner_text("#math-arith")
    assert f"Y1[4,5] = {x[0, 4, 5]:g}*3 + {x[1, 4, 5]:g}*1 + {x[2, 4, 5]:g}*-0.75" in arith

    # remove the first filter: the second becomes filter 0
    w.page.click("#remove-filter-0")
    np.testing.assert_allclose(w.values("y", (1, 6, 6)), conv1x1_reference(x, weights[1:]), atol=1e-12)


def test_sizes_change_and_new_values_count(local):
    w = local
    w.page.fill("#math-c", "4")
    w.page.fill("#math-h", "3")
    w.page.fill("#math-w", "5")
    w.page.fill("#x-3-2-4", "9")
    w.page.fill("#w-0-3", "-2")
    x = np.zeros((4, 3, 5))
    x[:3] = explain.MATH_MAPS[:, :3, :5]
    x[3, 2, 4] = 9
    np.testing.assert_allclose(_math_inputs(w, (4, 3, 5)), x)
    w_expected = [*explain.MATH_KERNEL, -2.0]
    np.testing.assert_allclose(w.values("y", (1, 3, 5)), conv1x1_reference(x, w_expected), atol=1e-12)
    assert "4x3x5" in w.page.inner_text("#math-shape")


def _shows(w: Watched, box: str, pattern: str) -> None:
    assert w.page.is_visible(box), f"{box} is hidden"
    assert re.search(pattern, w.page.inner_text(box)), w.page.inner_text(box)


def _no_nan(w: Watched) -> None:
    text = w.text()
    for bad in ("NaN", "undefined", "Infinity"):
        assert bad not in text
    values = w.page.eval_on_selector_all("[data-value]", "els => els.map(e => e.dataset.value)")
    assert not any(v in ("NaN", "Infinity", "-Infinity", "undefined") for v in values)


def test_bad_input_gets_a_message_never_nan(local):
    w = local
    assert not w.page.is_visible("#math-msg")
    w.page.fill("#x-0-0-0", "")
    _shows(w, "#math-msg", r"X0\[0,0\] is empty")
    assert w.page.inner_text("#y-0-0-0") == "\u2013" and w.page.get_attribute("#y-0-0-0", "data-value") == ""
    w.page.fill("#x-0-0-0", "abc")
    _shows(w, "#math-msg", r'X0\[0,0\] is not a number: "abc"')
    w.page.fill("#w-0-1", "1e400")
    _shows(w, "#math-msg", r"weight w\[0,1\] = 1e400 is too large")
    _no_nan(w)
    w.page.click("#math-reset")
    assert not w.page.is_visible("#math-msg")

    # sizes: capped with a message, the last good shape kept
    w.page.fill("#math-h", "1000")
    _shows(w, "#math-msg", r"height H = 1000 is too large: at most 12")
    w.page.fill("#math-c", "0")
    _shows(w, "#math-msg", r"maps C = 0 is too small")
    w.page.fill("#math-w", "2.5")
    _shows(w, "#math-msg", r"width W must be a whole number")
    assert w.page.locator("#math-maps input").count() == 3 * 6 * 6
    w.page.click("#math-reset")

    # filters: at least one, at most eight
    w.page.click("#remove-filter-0")
    _shows(w, "#math-msg", "at least one filter")
    for _ in range(7):
        w.page.click("#add-filter")
    w.page.click("#add-filter")
    _shows(w, "#math-msg", "at most 8 filters")
    assert w.page.locator("#math-outputs table").count() == 8

    # the cost: empty, non-numeric, huge
    w.page.fill("#cost-c", "")
    _shows(w, "#cost-msg", "C is empty")
    w.page.fill("#cost-c", "many")
    _shows(w, "#cost-msg", 'C must be a whole number from 1 to 100000, got "many"')
    w.page.fill("#cost-c", "50")
    w.page.fill("#cost-h", "1000000000")
    _shows(w, "#cost-msg", "H = 1000000000 is too large: at most 100000")
    assert w.page.inner_text("#cost-macs") == "\u2013"

    # the digits
    w.page.fill("#digit-a", "two")
    _shows(w, "#digit-msg", 'a is not a number: "two"')
    w.page.fill("#readout-row", "7")
    _shows(w, "#digit-msg", "readout row = 7 is too large: at most 4")
    _no_nan(w)

    # and the page is alive: a good value still updates it at once
    w.page.fill("#digit-a", "1")
    w.page.fill("#readout-row", "3")
    assert not w.page.is_visible("#digit-msg")
    w.page.fill("#cost-h", "600")
    assert w.page.get_attribute("#cost-macs", "data-value") == str(20 * 50 * 600 * 600)


def test_digits_match_the_reference_and_the_library(local, doc):
    w = local
    # as the page opens: the seed's weights (1, 1), the readout pixel [3, 0]
    for d in (2, 3):
        expected = conv1x1_reference(seed_digit_maps(d), [1.0, 1.0])[0]
        np.testing.assert_allclose(w.values(f"d{d}-y", (5, 3)), expected, atol=0)
        assert w.page.get_attribute(f"#verdict-{d}", "data-reads-as") == str(d)

    a, b, w1, w2, bias = 2.0, 0.5, 0.3, -1.5, 0.1
    for sel, v in [
        ("#digit-a", a),
        ("#digit-b", b),
        ("#digit-w1", w1),
        ("#digit-w2", w2),
        ("#digit-bias", bias),
    ]:
        w.page.fill(sel, str(v))
    learned = doc["digits"]["learned"]
    for d in (2, 3):
        y = conv1x1_reference(seed_digit_maps(d, a, b), [w1, w2], [bias])[0]
        np.testing.assert_allclose(w.values(f"d{d}-y", (5, 3)), y, atol=1e-12)
        reads = 2 if y[3, 0] > 0.5 else 3
        assert w.page.get_attribute(f"#verdict-{d}", "data-reads-as") == str(reads)
        score = float((y * np.array(learned["readout"])).sum() + learned["readout_bias"])
        p_two = float(w.page.get_attribute(f"#learned-p-{d}", "data-value"))
        assert p_two == pytest.approx(1 / (1 + math.exp(-score)), abs=1e-12)

    # the learned weights, from the library, classify the seed's digits
    w.page.fill("#digit-a", "1")
    w.page.fill("#digit-b", "1")
    w.page.click("#digit-learned-weights")
    assert float(w.page.input_value("#digit-w2")) == learned["weight"][1]
    for d in (2, 3):
        lo = learned["outputs"][str(d)]
        np.testing.assert_allclose(w.values(f"d{d}-y", (5, 3)), lo["output"], atol=1e-12)
        assert float(w.page.get_attribute(f"#learned-p-{d}", "data-value")) == pytest.approx(
            lo["p_two"], abs=1e-12
        )
        assert w.page.get_attribute(f"#verdict-{d}", "data-reads-as") == str(d)


def test_cost_matches_the_library(local, doc):
    w = local
    r = doc["reduction"]
    assert w.page.get_attribute("#cost-macs", "data-value") == str(r["macs"])
    assert w.page.get_attribute("#cost-bytes-in", "data-value") == str(r["bytes"]["input"])
    sizes = {"c": 64, "h": 56, "w": 56, "k": 128}
    for key, v in sizes.items():
        w.page.fill(f"#cost-{key}", str(v))
    c = explain.conv_cost(64, 128, 1, 56, 56)
    assert w.page.get_attribute("#cost-params", "data-value") == str(c["params"])
    assert w.page.get_attribute("#cost-params-bias", "data-value") == str(c["params"] + 128)
    assert w.page.get_attribute("#cost-macs", "data-value") == str(c["macs"])
    assert w.page.get_attribute("#cost-flops", "data-value") == str(2 * c["macs"])
    assert w.page.get_attribute("#cost-bytes-out", "data-value") == str(4 * 128 * 56 * 56)
    assert w.page.get_attribute("#cost-bytes-w", "data-value") == str(4 * 128 * 64)
    # the caps' largest sizes, exactly: 10^5 ^ 4 multiply-adds is past a double's exact integers
    for key in sizes:
        w.page.fill(f"#cost-{key}", "100000")
    assert w.page.get_attribute("#cost-macs", "data-value") == str(10**20)
    assert w.page.inner_text("#cost-macs") == f"{10**20:,}"


def test_library_sections_and_disagreements_are_shown(local, doc):
    w = local
    items = w.page.eval_on_selector_all("#disagreements li", "els => els.map(e => e.dataset.claim)")
    assert items == [c["claim"] for c in doc["disagreements"]]
    assert "9.68x" in w.page.inner_text("#inception-ratio")
    assert "120,422,400" in w.page.inner_text("#inception-table")
    text = w.text()
    assert "the seed prints 0.6, the computed 4.6 is right" in text
    assert "not measured" in w.page.inner_text("#cost-roofline")


def test_missing_data_gets_a_message(browser, page_dir, tmp_path):
    for path in page_dir.iterdir():  # every file of the page but its data
        if path.name != "data.js":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    w = Watched(browser, ("file://",))
    w.page.goto((tmp_path / "index.html").as_uri())
    w.page.wait_for_selector("#load-msg", state="visible", timeout=10_000)
    assert "data.js" in w.page.inner_text("#load-msg")
    w.close()


@contextlib.contextmanager
def _served(args: list[str], preexec_fn):
    """``onebyone explain ... --serve --port 0`` in a child; yields its URL, stops it with Ctrl-C and
    checks it stopped cleanly (``stopped`` printed, exit 0, no traceback)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onebyone", "explain", *args,
         "--serve", "--port", "0", "--no-timing", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
    )
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if found:
                url = found.group(0)
                break
        assert url, proc.stderr.read() if proc.stderr else "no URL printed"
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


@pytest.mark.slow
def test_served_page(browser, tmp_path, sigint_ignored):
    # started with SIGINT ignored, as a shell starts a background job: Ctrl-C must still stop it
    with _served(["--html", str(tmp_path)], sigint_ignored) as url:
        w = Watched(browser, (url,))
        w.open(url)
        w.page.fill("#w-0-0", "-3")
        expected = conv1x1_reference(explain.MATH_MAPS, [-3.0, *explain.MATH_KERNEL[1:]])
        np.testing.assert_allclose(w.values("y", (1, 6, 6)), expected, atol=1e-12)
        assert w.requests and all(u.startswith(url) for u in w.requests), w.requests
        assert w.errors == []
        w.close()


# ------------------------------------------------------------ inside a trained network


@pytest.fixture(scope="module")
def trained_page(nin_run, doc, tmp_path_factory):
    """The page with the trained NiN's section, on held-out images 0 and 5."""
    from onebyone.data import load_digits
    from onebyone.ops import set_backend
    from onebyone.train import load_run

    model, _ = load_run(nin_run)
    before = set_backend("torch")  # the view's numbers are under test here, not conv1x1's timing
    try:
        view = explain.trained_view(model, load_digits(), images=[0, 5], name="nin_digits")
    finally:
        set_backend(before)
    folder = tmp_path_factory.mktemp("trained-page")
    explain.write_page({**doc, "trained": view}, folder)
    return folder, view


def _expected_pixel(nin_run, layer: str, image: int, k: int, i: int, j: int):
    """The pixel's terms w[k,c] * x[c,i,j] and its value, from the run's weights and a hook: float64."""
    import torch

    from onebyone.data import load_digits
    from onebyone.train import load_run

    model, _ = load_run(nin_run)
    module = model.get_submodule(layer)
    seen = {}

    def keep(m, inputs, output):
        seen["x"] = inputs[0].detach().double().numpy()[0]

    module.register_forward_hook(keep)
    with torch.no_grad():
        model(torch.from_numpy(load_digits().x_test[[image]]))
    w = module.weight.detach().double().reshape(module.weight.shape[0], -1).numpy()
    terms = w[k] * seen["x"][:, i, j]
    value = conv1x1_reference(seen["x"], w)[k, i, j]
    return terms, value


def _click_pixel(w: Watched, canvas: str, i: int, j: int, h: int, wd: int) -> None:
    box = w.page.locator(canvas).bounding_box()
    x, y = (j + 0.5) * box["width"] / wd, (i + 0.5) * box["height"] / h
    w.page.locator(canvas).click(position={"x": x, "y": y})


def _check_arith(w: Watched, nin_run, layer: str, image: int, k: int, i: int, j: int) -> None:
    terms, value = _expected_pixel(nin_run, layer, image, k, i, j)
    arith = w.page.eval_on_selector("#trained-arith", "e => ({...e.dataset})")
    assert (int(arith["k"]), int(arith["i"]), int(arith["j"])) == (k, i, j)
    shown = w.page.eval_on_selector_all("#trained-arith tr.term", "els => els.map(e => ({...e.dataset}))")
    order = np.argsort(-np.abs(terms), kind="stable")
    assert len(shown) == 8
    for row, c in zip(shown, order[:8], strict=False):
        assert abs(abs(float(row["term"])) - abs(terms[c])) <= 1e-5  # the largest first
        assert float(row["term"]) == pytest.approx(terms[int(row["c"])], abs=1e-5)
        assert float(row["term"]) == pytest.approx(float(row["w"]) * float(row["x"]), abs=1e-12)
    rest = w.page.eval_on_selector("#trained-arith tr.rest", "e => ({...e.dataset})")
    assert int(rest["count"]) == len(terms) - 8
    folded = np.delete(terms, [int(r["c"]) for r in shown])
    assert float(rest["sum"]) == pytest.approx(folded.sum(), abs=1e-5)
    assert float(arith["sum"]) == pytest.approx(terms.sum(), abs=1e-5)  # no bias in NiN's 1x1 layers
    assert float(arith["library"]) == pytest.approx(value, abs=1e-5)
    text = w.page.inner_text("#trained-arith")
    assert f"y[{k}, {i}, {j}] = b[{k}]" in text and "onebyone.conv1x1:" in text


def test_trained_section_pixel_terms_match_the_library(browser, nin_run, trained_page):
    folder, view = trained_page
    w = Watched(browser, ("file://",))
    w.open((folder / "index.html").as_uri())
    assert w.page.is_visible("#trained-body") and not w.page.is_visible("#trained-absent")
    labels = w.page.eval_on_selector_all("#trained-image option", "els => els.map(e => e.textContent)")
    assert labels == [
        f"#{im['index']}: a {im['label_name']}, predicted {im['prediction_name']}" for im in view["images"]
    ]
    w.page.select_option("#trained-image", "1")
    w.page.select_option("#trained-layer", "2")
    layer = view["layers"][2]
    assert f"{layer['name']} (Conv1x1): 128 x 4 x 4" in w.page.inner_text("#trained-layer-info")
    assert w.page.locator("#trained-inputs canvas").count() == 128
    assert w.page.locator("#trained-outputs canvas").count() == 128
    _click_pixel(w, "#trained-out-5", 2, 1, 4, 4)
    _check_arith(w, nin_run, layer["name"], 5, 5, 2, 1)
    # the rank table and the two-digit question are the library's numbers
    rows = w.page.eval_on_selector_all("#trained-ranks tr[data-rank]", "e => e.map(r => ({...r.dataset}))")
    assert [(int(r["rank"]), float(r["accuracy"])) for r in rows] == [
        (r["rank"], pytest.approx(r["accuracy"])) for r in layer["rank_accuracy"]]
    sep = layer["separation"]
    told = f"output channel {sep['channel']} of this layer tells them apart best"
    assert told in w.page.inner_text("#trained-pair")
    w.page.click("#trained-show-pair")
    assert int(w.page.eval_on_selector("#trained-arith", "e => e.dataset.k")) == sep["channel"]
    assert w.errors == []
    assert all(u.startswith("file://") for u in w.requests), w.requests
    w.close()


def test_page_without_a_network_says_how_to_get_one(local):
    assert local.page.is_visible("#trained-absent") and not local.page.is_visible("#trained-body")
    assert "onebyone explain --run run --html page" in local.page.inner_text("#trained-absent")
    local.page.click("#digits a[href='#trained']")


def test_trained_section_served(browser, nin_run, sigint_ignored):
    with _served(["--run", str(nin_run), "--images", "3"], sigint_ignored) as url:
        w = Watched(browser, (url,))
        w.open(url)
        w.page.select_option("#trained-layer", "5")  # block 3's last 1x1: 128 -> 10 on 2 x 2 maps
        _click_pixel(w, "#trained-out-7", 1, 0, 2, 2)
        _check_arith(w, nin_run, "features.block3.mlp2.conv", 3, 7, 1, 0)
        assert w.requests and all(u.startswith(url) for u in w.requests), w.requests
        assert w.errors == []
        w.close()
