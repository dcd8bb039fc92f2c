"""onebyone.explain.trained_view: a network's learned 1x1 layers, checked against the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from onebyone import Conv1x1
from onebyone.data import load_digits
from onebyone.explain import decode_array, pointwise_layers, trained_view
from onebyone.reference import conv1x1_reference


class Mixed(nn.Module):
    """1x1 layers of every kind the view reads: grouped and strided with a bias, fused ReLU, plain."""

    default_input_size = (1, 8, 8)
    num_classes = 10

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 6, 1, stride=2, groups=2, bias=True)
        self.fused = Conv1x1(6, 12, activation="relu")
        self.padded = nn.Conv2d(12, 12, 1, padding=1)  # not a 1x1 in the sense of the view: it pads
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.fused(self.grouped(x))
        return self.head(self.padded(x).mean((2, 3)))


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def mixed():
    torch.manual_seed(0)
    return Mixed().eval()


def _captured_inputs(model, names, x):
    seen = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: seen.__setitem__(n, i[0].detach().double().numpy())
        )
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_layers_found_and_their_numbers_follow_the_definition(mixed, digits):
    assert [n for n, _ in pointwise_layers(mixed)] == ["grouped", "fused"]
    view = trained_view(mixed, digits, images=[3, 0, 7], ranks=[1, 2, 100])
    assert [im["index"] for im in view["images"]] == [3, 0, 7]
    assert [im["label"] for im in view["images"]] == [int(digits.y_test[i]) for i in (3, 0, 7)]
    x = torch.from_numpy(digits.x_test[[3, 0, 7]])
    inputs = _captured_inputs(mixed, ["grouped", "fused"], x)
    g, f = view["layers"]
    assert (g["in_channels"], g["out_channels"], g["groups"], g["stride"]) == (8, 6, 2, [2, 2])
    assert (f["activation"], f["has_bias"], f["after"], f["before"]) == ("relu", True, "grouped", "padded")
    # the grouped layer's matrix is block-diagonal: group 0 (outputs 0-2) reads channels 0-3 only
    w = decode_array(g["weight"])
    assert w.shape == (6, 8) and not w[:3, 4:].any() and not w[3:, :4].any()
    np.testing.assert_array_equal(w[:3, :4], mixed.grouped.weight.detach()[:3, :, 0, 0].numpy())
    for layer, module in ((g, mixed.grouped), (f, mixed.fused)):
        wk = module.weight.detach().double().reshape(module.weight.shape[0], -1).numpy()
        for n in range(3):
            x_in = decode_array(layer["inputs"][n])
            # what reached the layer, as a separate pass computes it (to float32 rounding)
            np.testing.assert_allclose(x_in, inputs[layer["name"]][n], rtol=1e-5, atol=1e-6)
            expected = conv1x1_reference(
                x_in, wk, module.bias.detach().double().numpy(), stride=module.stride, groups=module.groups
            )
            np.testing.assert_allclose(decode_array(layer["outputs"][n]), expected, atol=1e-5)
        assert layer["check"]["max_abs_diff_reference"] < 1e-5
        assert layer["check"]["max_abs_diff_layer_output"] < 1e-5
        s = np.linalg.svd(decode_array(layer["weight"]).astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(layer["singular_values"], s, rtol=1e-5)
        assert (
            1 <= layer["rank_90"] <= layer["rank_99"] <= layer["full_rank"] == min(layer["weight"]["shape"])
        )
        energy = np.cumsum(s**2) / np.sum(s**2)
        assert energy[layer["rank_90"] - 1] >= 0.9 - 1e-9 and (
            layer["rank_90"] == 1 or energy[layer["rank_90"] - 2] < 0.9
        )
        # asked ranks above the full rank are clipped to it; full rank is the network unchanged
        assert [r["rank"] for r in layer["rank_accuracy"]] == [1, 2, layer["full_rank"]]
        assert layer["rank_accuracy"][-1]["accuracy"] == pytest.approx(view["accuracy"], abs=1e-9)


def test_the_two_digits_question(mixed, digits):
    view = trained_view(mixed, digits)
    assert view["pair"] == ["2", "3"]
    assert [im["label_name"] for im in view["images"]] == ["2", "3"]  # the first held-out 2 and 3
    for layer in view["layers"]:
        sep = layer["separation"]
        assert sep["images"] == [int((digits.y_test == 2).sum()), int((digits.y_test == 3).sum())]
        # the difference of the channel's means is the sum of its inputs' contributions, exactly
        assert sep["sum_of_contributions"] == pytest.approx(sep["difference"], abs=1e-9)
        assert sep["difference"] == pytest.approx(sep["mean"][0] - sep["mean"][1], abs=1e-9)
        shares = [i["share"] for i in sep["inputs"]]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-9
        assert all(n["dprime"] <= sep["dprime"] for n in sep["next_best"])
    # recompute layer "fused"'s best channel from the raw images
    x2 = torch.from_numpy(digits.x_test[digits.y_test == 2])
    x3 = torch.from_numpy(digits.x_test[digits.y_test == 3])
    means = {}
    for d, x in ((2, x2), (3, x3)):
        mx = _captured_inputs(mixed, ["fused"], x)["fused"].mean((2, 3))
        w = mixed.fused.weight.detach().double().reshape(12, 6).numpy()
        means[d] = mx @ w.T + mixed.fused.bias.detach().double().numpy()
    spread = np.sqrt((means[2].var(0) + means[3].var(0)) / 2)
    dprime = np.abs(means[2].mean(0) - means[3].mean(0)) / spread
    assert view["layers"][1]["separation"]["channel"] == int(np.argmax(dprime))


def test_bad_input_is_refused(mixed, digits):
    n = len(digits.y_test)
    with pytest.raises(
        ValueError, match=f"image index {n} is out of range: the held-out split has {n} images"
    ):
        trained_view(mixed, digits, images=[0, n])
    with pytest.raises(ValueError, match="at most 8"):
        trained_view(mixed, digits, images=list(range(9)))
    with pytest.raises(ValueError, match="ranks must be positive ints"):
        trained_view(mixed, digits, ranks=[0])
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ValueError, match="has no 1x1 layer"):
        trained_view(plain, digits)
    wrong = Mixed().eval()
    wrong.default_input_size = (3, 32, 32)
    with pytest.raises(ValueError, match="takes 3 x 32 x 32 images but the data has 1 x 8 x 8"):
        trained_view(wrong, digits)
