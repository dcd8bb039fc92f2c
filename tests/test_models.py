"""Every registered model builds, runs forward and backward on its own input size, trains every
parameter, and has exactly the parameter count its definition implies, counted here by hand."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import onebyone
from onebyone import Conv1x1, create_model, list_models, register_model
from onebyone.models import ABLATIONS, TABLE_1, ablations_of

# Big enough to take seconds on two CPU cores: run them, but mark them for selection.
SLOW = {"googlenet", "googlenet_naive", "googlenet_cifar10", "nin_cifar10", "nin_cifar10_fc"}


pytestmark = pytest.mark.usefixtures("one_thread_torch_kernels")



def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------ every model


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()]
)
def test_forward_backward_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    c, h, w = model.default_input_size
    assert model.num_classes >= 2
    # the full-width GoogLeNets are heavy on a CPU: one image is enough (BatchNorm still sees 4 x 4 maps)
    batch = 1 if name.startswith("googlenet") and _params(model) > 2_000_000 else 2
    x = torch.randn(batch, c, h, w)
    model.train()
    out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (batch, model.num_classes)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, model.num_classes)


@pytest.mark.parametrize("name", list_models())
def test_every_1x1_convolution_is_a_conv1x1(name: str) -> None:
    with torch.device("meta"):  # sizes only
        model = create_model(name)
    for mname, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            assert tuple(m.kernel_size) != (1, 1), f"{name}.{mname} is a 1x1 nn.Conv2d, not a Conv1x1"


def test_names_say_family_and_ablation() -> None:
    names = list_models()
    for name in names:
        assert name == name.lower()
        assert name.split("_")[0] in ("nin", "googlenet", "vgg")
    for base in ("nin_cifar10", "nin_digits", "nin_mnist"):
        assert ablations_of(base) == [f"{base}_no1x1", f"{base}_fc"]
    for base in ("googlenet", "googlenet_digits", "googlenet_mnist"):
        assert ablations_of(base) == [f"{base}_naive"]
    assert ablations_of("googlenet_cifar10") == []
    for name in names:
        suffix = name.rsplit("_", 1)[-1]
        if suffix in ABLATIONS:
            assert name.rsplit("_", 1)[0] in names  # every ablation has its model


@pytest.mark.parametrize(
    ("name", "size"),
    [("nin_cifar10", (3, 32, 32)), ("nin_digits", (1, 8, 8)), ("nin_mnist", (1, 28, 28)),
     ("googlenet", (3, 224, 224)), ("googlenet_cifar10", (3, 32, 32)), ("googlenet_digits", (1, 8, 8)),
     ("googlenet_mnist", (1, 28, 28))],
)
def test_default_input_size(name: str, size: tuple[int, int, int]) -> None:
    model = create_model(name)
    assert tuple(model.default_input_size) == size
    assert model.num_classes == (1000 if name == "googlenet" else 10)


# --------------------------------------------------------------------------- registry


def test_list_models_pattern() -> None:
    assert list_models("nin_digits*") == ["nin_digits", "nin_digits_fc", "nin_digits_no1x1"]
    assert list_models() == sorted(list_models())
    assert {"nin_cifar10", "googlenet"} <= set(list_models())
    assert list_models("nothing*") == []
    with pytest.raises(TypeError, match="pattern must be a str"):
        list_models(3)


def test_create_model_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nin'.*nin_cifar10"):
        create_model("nin")
    with pytest.raises(TypeError, match=r"unexpected model argument\(s\) \['width'\]"):
        create_model("nin_digits", width=3)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        create_model("nin_digits", num_classes=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        create_model("googlenet_digits", dropout=1.5)
    with pytest.raises(ValueError, match="unknown model"):
        ablations_of("resnet50")


def test_kwargs_reach_the_config() -> None:
    model = create_model("nin_digits", num_classes=3)
    assert model.num_classes == 3
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    model = create_model("googlenet_digits", num_classes=4)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_register_model() -> None:
    def tiny_registered_for_test(**kwargs: object) -> nn.Module:
        m = nn.Linear(4, 2)
        m.default_input_size = (4,)  # type: ignore[assignment]
        m.num_classes = 2  # type: ignore[assignment]
        return m

    try:
        register_model(tiny_registered_for_test)
        assert "tiny_registered_for_test" in list_models()
        assert isinstance(create_model("tiny_registered_for_test"), nn.Linear)
        with pytest.raises(ValueError, match="already registered"):
            register_model(tiny_registered_for_test)
    finally:
        onebyone.models._model_entrypoints.pop("tiny_registered_for_test", None)


def test_same_seed_same_weights() -> None:
    torch.manual_seed(3)
    a = create_model("nin_digits").state_dict()
    torch.manual_seed(3)
    b = create_model("nin_digits").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------- Network in Network, counted by hand


def _conv(k: int, c_in: int, c_out: int, norm: bool) -> int:
    """A k x k convolution's parameters: its weights, and a bias, or BatchNorm's scale and shift."""
    return k * k * c_in * c_out + (2 * c_out if norm else c_out)


def test_nin_cifar10_params_by_hand() -> None:
    # The paper's Caffe model: 5x5 192, 1x1 160, 1x1 96 | 5x5 192, 1x1 192, 1x1 192 | 3x3 192,
    # 1x1 192, 1x1 10; GAP: no parameters after the last convolution.
    block1 = _conv(5, 3, 192, False) + _conv(1, 192, 160, False) + _conv(1, 160, 96, False)
    block2 = _conv(5, 96, 192, False) + _conv(1, 192, 192, False) + _conv(1, 192, 192, False)
    block3 = _conv(3, 192, 192, False) + _conv(1, 192, 192, False) + _conv(1, 192, 10, False)
    assert _params(create_model("nin_cifar10")) == block1 + block2 + block3 == 966_986
    # no1x1: each block's spatial convolution goes straight to the block's output width
    no1x1 = _conv(5, 3, 96, False) + _conv(5, 96, 192, False) + _conv(3, 192, 10, False)
    assert _params(create_model("nin_cifar10_no1x1")) == no1x1
    # fc: block 3 ends at 192 maps of 8 x 8 (its last 1x1 layer dropped), then one linear layer
    fc = block1 + block2 + _conv(3, 192, 192, False) + _conv(1, 192, 192, False) + (192 * 8 * 8 * 10 + 10)
    assert _params(create_model("nin_cifar10_fc")) == fc


def test_nin_cifar10_shapes() -> None:
    model = create_model("nin_cifar10").eval()
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in model.features.named_children()]
    model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes["block1"] == (96, 32, 32) and shapes["pool1"] == (96, 16, 16)
    assert shapes["block2"] == (192, 16, 16) and shapes["pool2"] == (192, 8, 8)
    assert shapes["block3"] == (10, 8, 8)


@pytest.mark.parametrize(
    ("name", "blocks", "final_hw"),
    [("nin_digits", ((3, 1, (64, 64, 64)), (3, 64, (128, 128, 128)), (3, 128, (128, 128, 10))), 2),
     ("nin_mnist", ((5, 1, (64, 48, 48)), (5, 48, (96, 96, 96)), (3, 96, (96, 96, 10))), 7)],
)
def test_small_nin_params_by_hand(name: str, blocks: tuple, final_hw: int) -> None:
    full = sum(_conv(k, c, ws[0], True) + sum(_conv(1, a, b, True) for a, b in itertools.pairwise(ws))
               for k, c, ws in blocks)
    assert _params(create_model(name)) == full
    no1x1 = sum(_conv(k, c, ws[-1], True) for k, c, ws in blocks)
    assert _params(create_model(f"{name}_no1x1")) == no1x1
    last = blocks[2][2][-2]  # fc: the class-map layer is dropped, a linear layer reads last x hw x hw
    fc = (full - _conv(1, last, 10, True)) + last * final_hw * final_hw * 10 + 10
    assert _params(create_model(f"{name}_fc")) == fc


def test_no1x1_has_no_1x1_layers_and_fc_has_dropout() -> None:
    for name in ("nin_cifar10_no1x1", "nin_digits_no1x1", "nin_mnist_no1x1"):
        assert not any(isinstance(m, Conv1x1) for m in create_model(name).modules())
    fc = create_model("nin_digits_fc")
    assert isinstance(fc.head[1], nn.Dropout) and fc.head[1].p == 0.5
    assert isinstance(fc.head[2], nn.Linear)


# ------------------------------------------------------ GoogLeNet against Table 1

# Table 1's "params" column in K (1K = 1024 weights; biases not counted), as published.
PUBLISHED_PARAMS_K = {"3a": 159, "3b": 380, "4a": 364, "4b": 437, "4c": 463, "4d": 580, "4e": 840,
                      "5a": 1072, "5b": 1388}
# Rows whose published figure the paper's own widths cannot give (by more than one unit of the
# last printed digit): the widths are taken as the truth, and the difference is stated.
TABLE_1_ERRATA = {
    "4a": "375,552 weights = 366.8K, not 364K",
    "4c": "509,440 weights = 497.5K, not 463K",
    "4d": "604,672 weights = 590.5K, not 580K",
    "4e": "867,328 weights = 847.0K, not 840K",
    "5a": "1,042,432 weights = 1018K, not 1072K",
    "5b": "1,442,816 weights = 1409K, not 1388K",
}
# Input maps of each module, from the concatenated outputs of the one before (Table 1's column).
TABLE_1_IN = {"3a": 192, "3b": 256, "4a": 480, "4b": 512, "4c": 512, "4d": 512, "4e": 528, "5a": 832,
              "5b": 832}


def _inception_weights(c: int, row: tuple[int, ...]) -> int:
    n1, r3, n3, r5, n5, proj = row
    return c * n1 + c * r3 + 9 * r3 * n3 + c * r5 + 25 * r5 * n5 + c * proj


def test_googlenet_modules_against_table_1() -> None:
    model = create_model("googlenet")
    for name, row in TABLE_1.items():
        module = model.blocks.get_submodule(f"inception{name}")
        weights = sum(p.numel() for p in module.parameters() if p.ndim > 1)
        biases = sum(p.numel() for p in module.parameters() if p.ndim == 1)
        assert weights == _inception_weights(TABLE_1_IN[name], row), name
        assert biases == sum(row), name
        close = abs(weights / 1024 - PUBLISHED_PARAMS_K[name]) <= 1.0
        assert close == (name not in TABLE_1_ERRATA), f"{name}: {weights / 1024:.1f}K"
        assert module.out_channels == row[0] + row[2] + row[4] + row[5]


def test_googlenet_total_params_by_hand() -> None:
    stem = _conv(7, 3, 64, False) + _conv(1, 64, 64, False) + _conv(3, 64, 192, False)
    modules = sum(_inception_weights(TABLE_1_IN[n], r) + sum(r) for n, r in TABLE_1.items())
    fc = 1024 * 1000 + 1000
    expected = stem + modules + fc
    assert _params(create_model("googlenet")) == expected == 6_998_552  # "about 7M"
    # the auxiliary heads after 4a (512 maps) and 4d (528): 1x1 to 128, fc 2048 -> 1024, fc 1024 -> 1000
    aux = sum(_conv(1, c, 128, False) + 128 * 4 * 4 * 1024 + 1024 + 1024 * 1000 + 1000 for c in (512, 528))
    with_aux = create_model("googlenet", aux_logits=True)
    assert _params(with_aux) == expected + aux


@pytest.mark.slow
def test_googlenet_aux_heads_in_training_only() -> None:
    model = create_model("googlenet", aux_logits=True, num_classes=7)
    x = torch.randn(1, 3, 224, 224)
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and [o.shape for o in out] == [(1, 7)] * 3
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 7)


def test_googlenet_shapes_at_224() -> None:
    with torch.device("meta"):
        model = create_model("googlenet").eval()
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
                 for n, m in [*(("stem." + n, m) for n, m in model.stem.named_children()),
                              *model.blocks.named_children()]]
        model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert shapes["stem.conv1"] == (64, 112, 112) and shapes["stem.pool2"] == (64, 56, 56)
    assert shapes["stem.conv4"] == (192, 56, 56) and shapes["stem.pool5"] == (192, 28, 28)
    assert shapes["inception3b"] == (480, 28, 28) and shapes["pool1"] == (480, 14, 14)
    assert shapes["inception4e"] == (832, 14, 14) and shapes["pool2"] == (832, 7, 7)
    assert shapes["inception5b"] == (1024, 7, 7)


def test_naive_googlenet_depth_grows() -> None:
    # Figure 2a: the pooling branch passes its maps through, so each module adds its input to its output
    with torch.device("meta"):
        model = create_model("googlenet_naive")
    c = 192
    for name, (n1, _, n3, _, n5, _) in TABLE_1.items():
        module = model.blocks.get_submodule(f"inception{name}")
        weights = sum(p.numel() for p in module.parameters() if p.ndim > 1)
        assert weights == c * n1 + 9 * c * n3 + 25 * c * n5, name
        c = c + n1 + n3 + n5
        assert module.out_channels == c
    assert c == 4944
    assert model.fc.in_features == 4944


def test_vgg_mnist_params_by_hand_and_shapes() -> None:
    model = create_model("vgg_mnist")
    widths = [1, 32, 32, 64, 64, 128, 128]
    convs = sum(9 * c * k for c, k in itertools.pairwise(widths))  # 3 x 3, no bias (BatchNorm follows)
    norms = sum(2 * k for k in widths[1:])  # BatchNorm's weight and bias
    assert sum(p.numel() for p in model.parameters()) == convs + norms + 128 * 10 + 10
    features = model.features(torch.zeros(2, 1, 28, 28))
    assert features.shape == (2, 128, 7, 7) and model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
