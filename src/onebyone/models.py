"""Network in Network and GoogLeNet, built from onebyone's layers, and a registry of named models.

Read top to bottom: the registry (``register_model``, ``list_models``, ``create_model``),
then the NiN family, then the GoogLeNet family. Every model is built from a frozen
config dataclass, so a variant or an ablation is a config with one field changed, and
every model knows the input it was sized for (``model.default_input_size``, C x H x W)
and its number of classes (``model.num_classes``).

Names say family, input and ablation: ``nin_cifar10`` is the NiN paper's network,
``nin_digits`` its small variant for the 8 x 8 embedded digits, and ``nin_digits_no1x1``
/ ``nin_digits_fc`` its ablations; ``googlenet_mnist_naive`` is the 28 x 28 GoogLeNet
built from naive Inception modules. See :data:`ABLATIONS`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import ConvNormAct, Inception, MLPConv, NaiveInception

__all__ = [
    "ABLATIONS",
    "VGG",
    "GoogLeNet",
    "GoogLeNetConfig",
    "NiN",
    "NiNConfig",
    "VGGConfig",
    "ablations_of",
    "create_model",
    "list_models",
    "register_model",
]


# ------------------------------------------------------------------------ registry

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}

#: Name suffix of each ablation, and what it changes.
ABLATIONS: dict[str, str] = {
    "no1x1": "every mlpconv block without its 1x1 layers: nothing replaces them, the block's spatial "
    "convolution maps straight to the block's output width, so pooling, dropout and head are unchanged",
    "fc": "global average pooling replaced by a fully connected classifier (flatten, dropout 0.5, one "
    "linear layer); the last block's final 1x1 layer, which made one map per class, is dropped",
    "naive": "every Inception module replaced by the naive module of the paper's Figure 2a: no 1x1 "
    "reductions before the 3x3 and 5x5 convolutions, no projection after the pooling branch",
}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__`` as a model entry point.

    ``fn(**kwargs)`` must return an ``nn.Module`` that has ``default_input_size`` and
    ``num_classes`` attributes.
    """
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"a model named {name!r} is already registered")
    _model_entrypoints[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (``"nin_*"``), sorted."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str such as 'nin_*', got {type(pattern).__name__}")
    return sorted(n for n in _model_entrypoints if fnmatch.fnmatchcase(n, pattern))


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` go to its config (e.g. ``num_classes=5``)."""
    if name not in _model_entrypoints:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}")
    return _model_entrypoints[name](**kwargs)


def ablations_of(name: str) -> list[str]:
    """The registered ablations of model ``name`` (``nin_digits`` -> ``nin_digits_no1x1``, ...)."""
    if name not in _model_entrypoints:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}")
    return [f"{name}_{s}" for s in ABLATIONS if f"{name}_{s}" in _model_entrypoints]


def _configure(config: object, kwargs: dict[str, object]) -> object:
    """``config`` with the fields named in ``kwargs`` replaced; an unknown field is a TypeError."""
    fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(f"unexpected model argument(s) {unknown}; expected some of {sorted(fields)}")
    return dataclasses.replace(config, **kwargs)  # type: ignore[type-var]


def _check_config(input_size: tuple[int, int, int], num_classes: int, dropout: float) -> None:
    if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f"input_size must be (C, H, W) positive ints, got {input_size!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


# ------------------------------------------------------------- Network in Network

# A pooling stage: (kind, kernel, stride), kind "max" or "avg". ceil_mode as in Caffe,
# where NiN was published, so 32 -> 16 -> 8 with 3 x 3 windows at stride 2.
Pool = tuple[str, int, int]


@dataclass(frozen=True)
class NiNConfig:
    """A Network in Network: mlpconv blocks, a pooling + dropout stage between them, and a head.

    ``blocks`` holds ``(kernel_size, widths)`` per mlpconv block. With the ``"gap"`` head
    the last block's last width becomes ``num_classes``: its maps are the class scores,
    averaged over the image (global average pooling, no parameters). With ``"fc"``, that
    last 1x1 layer is dropped and a linear layer reads the flattened maps instead.
    """

    input_size: tuple[int, int, int]
    blocks: tuple[tuple[int, tuple[int, ...]], ...]
    pools: tuple[Pool, ...]
    num_classes: int = 10
    dropout: float = 0.5
    norm: bool = False
    pointwise: bool = True
    head: str = "gap"


class NiN(nn.Module):
    """Network in Network (Lin, Chen and Yan, 2013), from a :class:`NiNConfig`.

    ``features`` holds ``block1``, ``pool1``, ``drop1``, ``block2``, ... (the blocks are
    :class:`~onebyone.MLPConv`); ``head`` turns the last maps into class scores.
    """

    def __init__(self, config: NiNConfig) -> None:
        super().__init__()
        _check_config(config.input_size, config.num_classes, config.dropout)
        if len(config.pools) != len(config.blocks) - 1:
            raise ValueError(
                f"pools must hold one stage per block but the last: {len(config.blocks)} blocks, "
                f"got {len(config.pools)} pools"
            )
        if config.head not in ("gap", "fc"):
            raise ValueError(f"head must be 'gap' or 'fc', got {config.head!r}")
        self.config = config
        self.default_input_size = config.input_size
        self.num_classes = config.num_classes
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, (_, height, width) = config.input_size[0], config.input_size
        for i, (kernel, widths) in enumerate(config.blocks, start=1):
            last = i == len(config.blocks)
            if last:
                # the class maps (gap), or nothing in their place (fc)
                widths = (*widths[:-1], config.num_classes) if config.head == "gap" else widths[:-1]
            scores = last and config.head == "gap"  # no ReLU on class scores
            block = MLPConv(channels, widths, kernel, norm=config.norm, last_act=not scores,
                            pointwise=config.pointwise)
            layers[f"block{i}"] = block
            channels = block.out_channels
            if not last:
                kind, k, s = config.pools[i - 1]
                if kind not in ("max", "avg"):
                    raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")
                pool_cls = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
                layers[f"pool{i}"] = pool_cls(k, s, ceil_mode=True)
                height, width = -(-(height - k) // s) + 1, -(-(width - k) // s) + 1
                layers[f"drop{i}"] = nn.Dropout(config.dropout)
        self.features = nn.Sequential(layers)
        if config.head == "gap":
            # N x classes x h x w -> N x classes: the average of each class map is its score
            self.head: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.head = nn.Sequential(
                nn.Flatten(),  # N x C x h x w -> N x C*h*w
                nn.Dropout(config.dropout),
                nn.Linear(channels * height * width, config.num_classes),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _nin(config: NiNConfig, kwargs: dict[str, object]) -> NiN:
    return NiN(_configure(config, kwargs))  # type: ignore[arg-type]


# The NiN paper's CIFAR-10 network (its Caffe model): three mlpconv blocks of widths
# 192-160-96, 192-192-192, 192-192-10; 3 x 3 max pooling then 3 x 3 average pooling at
# stride 2, dropout 0.5 after each; global average pooling. No BatchNorm (it came later).
#   3 x 32 x 32 -> block1 96 x 32 x 32 -> pool1 96 x 16 x 16 -> block2 192 x 16 x 16
#   -> pool2 192 x 8 x 8 -> block3 10 x 8 x 8 -> head 10
_NIN_CIFAR10 = NiNConfig(
    input_size=(3, 32, 32),
    blocks=((5, (192, 160, 96)), (5, (192, 192, 192)), (3, (192, 192, 10))),
    pools=(("max", 3, 2), ("avg", 3, 2)),
)

# For the 8 x 8 embedded digits: the same three blocks, narrower, 3 x 3 kernels, with
# BatchNorm so that a few epochs on 1,437 images are enough.
#   1 x 8 x 8 -> block1 64 x 8 x 8 -> pool1 64 x 4 x 4 -> block2 128 x 4 x 4
#   -> pool2 128 x 2 x 2 -> block3 10 x 2 x 2 -> head 10
_NIN_DIGITS = NiNConfig(
    input_size=(1, 8, 8),
    blocks=((3, (64, 64, 64)), (3, (128, 128, 128)), (3, (128, 128, 10))),
    pools=(("max", 2, 2), ("max", 2, 2)),
    norm=True,
)

# For 28 x 28 digits (MNIST, Fashion-MNIST): the CIFAR-10 layout at a third of the width.
#   1 x 28 x 28 -> block1 48 x 28 x 28 -> pool1 48 x 14 x 14 -> block2 96 x 14 x 14
#   -> pool2 96 x 7 x 7 -> block3 10 x 7 x 7 -> head 10
_NIN_MNIST = NiNConfig(
    input_size=(1, 28, 28),
    blocks=((5, (64, 48, 48)), (5, (96, 96, 96)), (3, (96, 96, 10))),
    pools=(("max", 3, 2), ("avg", 3, 2)),
    norm=True,
)


@register_model
def nin_cifar10(**kwargs: object) -> NiN:
    """The NiN paper's CIFAR-10 network (3 x 32 x 32, 10 classes)."""
    return _nin(_NIN_CIFAR10, kwargs)


@register_model
def nin_cifar10_no1x1(**kwargs: object) -> NiN:
    """nin_cifar10 without its 1x1 layers (see ABLATIONS['no1x1'])."""
    return _nin(_NIN_CIFAR10, {"pointwise": False, **kwargs})


@register_model
def nin_cifar10_fc(**kwargs: object) -> NiN:
    """nin_cifar10 with a fully connected head instead of global average pooling."""
    return _nin(_NIN_CIFAR10, {"head": "fc", **kwargs})


@register_model
def nin_digits(**kwargs: object) -> NiN:
    """NiN sized for the embedded 8 x 8 digits (1 x 8 x 8, 10 classes)."""
    return _nin(_NIN_DIGITS, kwargs)


@register_model
def nin_digits_no1x1(**kwargs: object) -> NiN:
    """nin_digits without its 1x1 layers (see ABLATIONS['no1x1'])."""
    return _nin(_NIN_DIGITS, {"pointwise": False, **kwargs})


@register_model
def nin_digits_fc(**kwargs: object) -> NiN:
    """nin_digits with a fully connected head instead of global average pooling."""
    return _nin(_NIN_DIGITS, {"head": "fc", **kwargs})


@register_model
def nin_mnist(**kwargs: object) -> NiN:
    """NiN sized for 28 x 28 digits (1 x 28 x 28, 10 classes)."""
    return _nin(_NIN_MNIST, kwargs)


@register_model
def nin_mnist_no1x1(**kwargs: object) -> NiN:
    """nin_mnist without its 1x1 layers (see ABLATIONS['no1x1'])."""
    return _nin(_NIN_MNIST, {"pointwise": False, **kwargs})


@register_model
def nin_mnist_fc(**kwargs: object) -> NiN:
    """nin_mnist with a fully connected head instead of global average pooling."""
    return _nin(_NIN_MNIST, {"head": "fc", **kwargs})


# ------------------------------------------------------------------------ GoogLeNet

# One row of the paper's Table 1: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj).
Row = tuple[int, int, int, int, int, int]

# GoogLeNet's Inception rows, from Table 1 of Szegedy et al., "Going deeper with convolutions".
TABLE_1: dict[str, Row] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

# A stem layer: ("conv", out_channels, kernel, stride) or ("pool", kernel, stride) (max, ceil mode).
StemLayer = tuple[str, int, int] | tuple[str, int, int, int]


@dataclass(frozen=True)
class GoogLeNetConfig:
    """A GoogLeNet: a stem, stages of Inception modules with 3 x 3 / 2 max pooling between them,
    global average pooling, dropout and a linear classifier.

    ``stages`` holds, per stage, the ``(name, row)`` of each Inception module, ``row``
    being Table 1's six widths. ``aux_logits`` adds the paper's auxiliary classifiers after
    the modules named in ``aux_after`` (used only in training mode). ``naive`` builds
    every module as :class:`~onebyone.NaiveInception` from the row's ch1x1, ch3x3, ch5x5.
    """

    input_size: tuple[int, int, int]
    stem: tuple[StemLayer, ...]
    stages: tuple[tuple[tuple[str, Row], ...], ...]
    num_classes: int = 10
    dropout: float = 0.4
    norm: bool = False
    naive: bool = False
    aux_logits: bool = False
    aux_after: tuple[str, ...] = ()


class InceptionAux(nn.Module):
    """The paper's auxiliary classifier: 5 x 5 / 3 average pooling, 1x1 convolution to 128 maps,
    a 1024-unit fully connected layer with ReLU, 70% dropout, and a linear classifier."""

    def __init__(
        self, in_channels: int, size: tuple[int, int], num_classes: int, *, norm: bool = False
    ) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.conv = ConvNormAct(in_channels, 128, 1, norm=norm)
        h, w = (size[0] - 5) // 3 + 1, (size[1] - 5) // 3 + 1
        self.fc1 = nn.Linear(128 * h * w, 1024)
        self.drop = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.pool(x))  # N x 128 x 4 x 4 at 14 x 14
        x = torch.relu(self.fc1(torch.flatten(x, 1)))  # N x 1024
        return self.fc2(self.drop(x))  # N x num_classes


class GoogLeNet(nn.Module):
    """GoogLeNet (Inception v1) from a :class:`GoogLeNetConfig`.

    In training mode with ``aux_logits``, ``forward`` returns ``(logits, aux1, aux2, ...)``;
    otherwise the logits alone. Modules are named after Table 1: ``inception3a`` ...
    """

    def __init__(self, config: GoogLeNetConfig) -> None:
        super().__init__()
        _check_config(config.input_size, config.num_classes, config.dropout)
        self.config = config
        self.default_input_size = config.input_size
        self.num_classes = config.num_classes
        channels, height, width = config.input_size
        stem: OrderedDict[str, nn.Module] = OrderedDict()
        for i, layer in enumerate(config.stem, start=1):
            if layer[0] == "conv":
                _, out, k, s = layer  # type: ignore[misc]
                stem[f"conv{i}"] = ConvNormAct(channels, out, k, s, norm=config.norm)
                channels = out
                height, width = (height + 2 * (k // 2) - k) // s + 1, (width + 2 * (k // 2) - k) // s + 1
            elif layer[0] == "pool":
                _, k, s = layer  # type: ignore[misc]
                stem[f"pool{i}"] = nn.MaxPool2d(k, s, ceil_mode=True)
                height, width = -(-(height - k) // s) + 1, -(-(width - k) // s) + 1
            else:
                raise ValueError(
                    f"stem layers are ('conv', out, k, stride) or ('pool', k, stride), got {layer!r}"
                )
        self.stem = nn.Sequential(stem)
        self.blocks = nn.Sequential()
        self.aux_names: list[str] = []
        for s, stage in enumerate(config.stages):
            if s > 0:
                self.blocks.add_module(f"pool{s}", nn.MaxPool2d(3, 2, ceil_mode=True))
                height, width = -(-(height - 3) // 2) + 1, -(-(width - 3) // 2) + 1
            for name, row in stage:
                n1, r3, n3, r5, n5, proj = row
                module: Inception | NaiveInception = (
                    NaiveInception(channels, n1, n3, n5, norm=config.norm)
                    if config.naive
                    else Inception(channels, n1, r3, n3, r5, n5, proj, norm=config.norm)
                )
                self.blocks.add_module(f"inception{name}", module)
                channels = module.out_channels
                if config.aux_logits and name in config.aux_after:
                    self.add_module(f"aux{name}", InceptionAux(channels, (height, width), config.num_classes,
                                                               norm=config.norm))
                    self.aux_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(channels, config.num_classes)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        x = self.stem(x)
        aux: list[Tensor] = []
        for name, module in self.blocks.named_children():
            x = module(x)
            if self.training and name.startswith("inception") and name[9:] in self.aux_names:
                aux.append(getattr(self, f"aux{name[9:]}")(x))
        x = torch.flatten(self.avgpool(x), 1)  # N x C
        logits = self.fc(self.dropout(x))  # N x num_classes
        return (logits, *aux) if aux else logits


def _googlenet(config: GoogLeNetConfig, kwargs: dict[str, object]) -> GoogLeNet:
    return GoogLeNet(_configure(config, kwargs))  # type: ignore[arg-type]


def _rows(*names: str) -> tuple[tuple[str, Row], ...]:
    return tuple((n, TABLE_1[n]) for n in names)


# The paper's network, Table 1 (no LRN: it has no parameters and later work dropped it;
# no BatchNorm: it came later).
#   3 x 224 x 224 -> conv1 (7x7/2) 64 x 112 x 112 -> pool 64 x 56 x 56 -> conv3 (1x1) 64 x 56 x 56
#   -> conv4 (3x3) 192 x 56 x 56 -> pool 192 x 28 x 28 -> 3a 256, 3b 480 x 28 x 28 -> pool 14 x 14
#   -> 4a 512, 4b 512, 4c 512, 4d 528, 4e 832 x 14 x 14 -> pool 7 x 7 -> 5a 832, 5b 1024 x 7 x 7
#   -> avgpool 1024 -> dropout 0.4 -> fc 1000
_GOOGLENET = GoogLeNetConfig(
    input_size=(3, 224, 224),
    stem=(("conv", 64, 7, 2), ("pool", 3, 2), ("conv", 64, 1, 1), ("conv", 192, 3, 1), ("pool", 3, 2)),
    stages=(_rows("3a", "3b"), _rows("4a", "4b", "4c", "4d", "4e"), _rows("5a", "5b")),
    num_classes=1000,
    aux_after=("4a", "4d"),
)

# For 32 x 32 colour images: Table 1's modules at their published widths, behind a stem
# that downsamples by 2 instead of 8.
#   3 x 32 x 32 -> conv1 64 x 32 x 32 -> pool 64 x 16 x 16 -> conv3, conv4 192 x 16 x 16
#   -> 3a, 3b 480 x 16 x 16 -> pool 8 x 8 -> 4a..4e 832 x 8 x 8 -> pool 4 x 4 -> 5a, 5b 1024 x 4 x 4 -> 10
_GOOGLENET_CIFAR10 = GoogLeNetConfig(
    input_size=(3, 32, 32),
    stem=(("conv", 64, 3, 1), ("pool", 3, 2), ("conv", 64, 1, 1), ("conv", 192, 3, 1)),
    stages=_GOOGLENET.stages,
    norm=True,
)

# For 28 x 28 digits: three modules at half of Table 1's widths.
#   1 x 28 x 28 -> conv1 32 x 28 x 28 -> pool 32 x 14 x 14 -> conv3, conv4 96 x 14 x 14
#   -> 3a 128, 3b 240 x 14 x 14 -> pool 240 x 7 x 7 -> 4a 256 x 7 x 7 -> 10
_GOOGLENET_MNIST = GoogLeNetConfig(
    input_size=(1, 28, 28),
    stem=(("conv", 32, 3, 1), ("pool", 3, 2), ("conv", 32, 1, 1), ("conv", 96, 3, 1)),
    stages=(
        (("3a", (32, 48, 64, 8, 16, 16)), ("3b", (64, 64, 96, 16, 48, 32))),
        (("4a", (96, 48, 104, 8, 24, 32)),),
    ),
    norm=True,
)

# For the 8 x 8 embedded digits: the same three modules behind a single 3 x 3 convolution.
#   1 x 8 x 8 -> conv1 64 x 8 x 8 -> 3a 128, 3b 240 x 8 x 8 -> pool 240 x 4 x 4 -> 4a 256 x 4 x 4 -> 10
_GOOGLENET_DIGITS = GoogLeNetConfig(
    input_size=(1, 8, 8),
    stem=(("conv", 64, 3, 1),),
    stages=_GOOGLENET_MNIST.stages,
    norm=True,
)


@register_model
def googlenet(**kwargs: object) -> GoogLeNet:
    """GoogLeNet as in the paper's Table 1 (3 x 224 x 224, 1000 classes); ``aux_logits=True`` adds
    the two auxiliary classifiers."""
    return _googlenet(_GOOGLENET, kwargs)


@register_model
def googlenet_naive(**kwargs: object) -> GoogLeNet:
    """googlenet built from naive Inception modules (see ABLATIONS['naive']): depth grows to 4,944 maps."""
    return _googlenet(_GOOGLENET, {"naive": True, **kwargs})


@register_model
def googlenet_cifar10(**kwargs: object) -> GoogLeNet:
    """GoogLeNet sized for 32 x 32 colour images (3 x 32 x 32, 10 classes), BatchNorm after each conv."""
    return _googlenet(_GOOGLENET_CIFAR10, kwargs)


@register_model
def googlenet_mnist(**kwargs: object) -> GoogLeNet:
    """A three-module GoogLeNet for 28 x 28 digits (1 x 28 x 28, 10 classes)."""
    return _googlenet(_GOOGLENET_MNIST, kwargs)


@register_model
def googlenet_mnist_naive(**kwargs: object) -> GoogLeNet:
    """googlenet_mnist built from naive Inception modules (see ABLATIONS['naive'])."""
    return _googlenet(_GOOGLENET_MNIST, {"naive": True, **kwargs})


@register_model
def googlenet_digits(**kwargs: object) -> GoogLeNet:
    """A three-module GoogLeNet for the 8 x 8 embedded digits (1 x 8 x 8, 10 classes)."""
    return _googlenet(_GOOGLENET_DIGITS, kwargs)


@register_model
def googlenet_digits_naive(**kwargs: object) -> GoogLeNet:
    """googlenet_digits built from naive Inception modules (see ABLATIONS['naive'])."""
    return _googlenet(_GOOGLENET_DIGITS, {"naive": True, **kwargs})


# ------------------------------------------------------------------------------ VGG

# A network of plain 3 x 3 convolutions (Simonyan and Zisserman, "Very deep convolutional networks
# for large-scale image recognition", 2014), the kind onebyone.compress turns into 1x1 bottlenecks.


@dataclass(frozen=True)
class VGGConfig:
    """A VGG-style network: stages of 3 x 3 convolutions (BatchNorm, ReLU), 2 x 2 max pooling between
    stages, global average pooling, dropout and a linear classifier. ``stages`` lists each stage's widths."""

    input_size: tuple[int, int, int]
    stages: tuple[tuple[int, ...], ...]
    num_classes: int = 10
    dropout: float = 0.3
    norm: bool = True


class VGG(nn.Module):
    """A VGG-style network from a :class:`VGGConfig`: ``features`` holds ``stage1``, ``pool1``, ...
    (each stage a sequence of :class:`~onebyone.ConvNormAct`), ``head`` the classifier."""

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        _check_config(config.input_size, config.num_classes, config.dropout)
        if not config.stages or not all(config.stages):
            raise ValueError(f"stages must list at least one width per stage, got {config.stages!r}")
        self.config = config
        self.default_input_size = config.input_size
        self.num_classes = config.num_classes
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = config.input_size[0]
        for i, widths in enumerate(config.stages, start=1):
            if i > 1:
                layers[f"pool{i - 1}"] = nn.MaxPool2d(2)
            convs = []
            for width in widths:
                convs.append(ConvNormAct(channels, width, 3, norm=config.norm))
                channels = width
            layers[f"stage{i}"] = nn.Sequential(*convs)
        self.features = nn.Sequential(layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(config.dropout),
                                  nn.Linear(channels, config.num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# For 28 x 28 digits: three stages of two 3 x 3 convolutions, 29 M MACs, all but 0.1% in 3 x 3 layers.
#   1 x 28 x 28 -> stage1 32 x 28 x 28 -> pool 32 x 14 x 14 -> stage2 64 x 14 x 14 -> pool 64 x 7 x 7
#   -> stage3 128 x 7 x 7 -> GAP 128 -> 10
_VGG_MNIST = VGGConfig(input_size=(1, 28, 28), stages=((32, 32), (64, 64), (128, 128)))


@register_model
def vgg_mnist(**kwargs: object) -> VGG:
    """A VGG-style network of 3 x 3 convolutions for 28 x 28 digits (1 x 28 x 28, 10 classes)."""
    return VGG(_configure(_VGG_MNIST, kwargs))  # type: ignore[arg-type]
