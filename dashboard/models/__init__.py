"""Registry of architectures: a name becomes a fresh `nn.Module`, with the facts the pages show.

Registry models are the seed architectures of the course (LeNet → AlexNet → VGG → ResNet), each
laid out as `features` → [`avgpool`] → `flatten` → `classifier` (ResNet keeps torchvision's
`conv1` … `layer4` → `avgpool` → `flatten` → `fc`). Every activation is an `nn.Module`, never
in-place, and flattening is an `nn.Flatten`, so forward hooks see every step of the forward pass.
`alexnet`, `vgg13` and `resnet18` keep torchvision's parameter names, so ImageNet weights load
into them. Any classification model of torchvision is available as `tv:NAME`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import tempfile
import urllib.request
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from types import ModuleType

    from torchvision.models import WeightsEnum

from dashboard.base.errors import CheckpointError, LensError, ShapeError, UnknownNameError

TV_PREFIX = "tv:"
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation: offline machines fail fast instead of hanging

Layers = list[tuple[str, nn.Module]]


@dataclass(frozen=True)
class ModelInfo:
    """What the pages and the command line show about an architecture before building it."""

    name: str
    description: str  # one line
    input_shape: tuple[int, int, int]  # default (C, H, W) the model was designed for
    num_classes: int  # default
    origin: str  # the tutorial or paper it comes from
    options: dict[str, tuple[Any, ...]]  # the model's own options; the first value is the default
    first_conv: str | None  # qualified name of the first Conv2d (for filter views)


class ConvNet(nn.Module):
    """features → [avgpool] → flatten → classifier; every step a module so hooks see it."""

    def __init__(
        self, features: nn.Sequential, classifier: nn.Sequential, avgpool: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.flatten = nn.Flatten()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (B, C, H, W)
        if self.avgpool is not None:
            x = self.avgpool(x)
        return self.classifier(self.flatten(x))  # (B, num_classes)


class BasicBlock(nn.Module):
    """ResNet's two-conv block; parameter names match torchvision's, each ReLU is its own module."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.relu2 = nn.ReLU()  # after the residual sum

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNet(nn.Module):
    """ResNet with BasicBlocks: ImageNet stem (7×7/2 conv + max-pool) or CIFAR stem (3×3/1 conv)."""

    def __init__(
        self,
        blocks: tuple[int, ...],  # BasicBlocks in each of the four stages
        widths: tuple[int, ...],
        *,
        in_channels: int,
        num_classes: int,
        cifar_stem: bool,
    ) -> None:
        super().__init__()
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = None if cifar_stem else nn.MaxPool2d(3, stride=2, padding=1)
        in_planes, stages = widths[0], []
        for stage, (count, planes) in enumerate(zip(blocks, widths, strict=True)):
            layer = [BasicBlock(in_planes, planes, stride=1 if stage == 0 else 2)]
            layer += [BasicBlock(planes, planes) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layer))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        _init_like_torchvision(self, linear_std=None)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, C0, H, W)
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C4, H/8, W/8) or /32
        return self.fc(self.flatten(self.avgpool(x)))  # (B, num_classes)


def _init_like_torchvision(model: nn.Module, linear_std: float | None) -> None:
    """Kaiming-normal convs (fan-out), zero biases; N(0, std) linears when std is given (VGG)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


# --- building blocks ------------------------------------------------------------------------


def _sequential(layers: Layers, indexed: bool = False) -> nn.Sequential:
    """Named layers read well (`features.conv1`); `indexed` keeps torchvision's `features.0`."""
    if indexed:
        return nn.Sequential(*(module for _, module in layers))
    return nn.Sequential(OrderedDict(layers))


def _activation(kind: str) -> nn.Module:
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[kind]()


def _first(value: int | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


def _out_len(layer: nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d, size: int) -> int:
    """Output side of a conv or pool for a square input, as PyTorch computes it (0: too small)."""
    kernel, stride = _first(layer.kernel_size), _first(layer.stride)
    padding, dilation = _first(layer.padding), _first(getattr(layer, "dilation", 1))
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if isinstance(layer, nn.Conv2d):
        return span // stride + 1 if span >= 0 else 0
    ceil = bool(layer.ceil_mode)
    out = (span + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + padding:  # a window may not start in the padding
        out -= 1
    return max(out, 0)


def _walk(features: nn.Sequential, channels: int, size: int) -> tuple[int, int, str | None]:
    """(channels, side) after `features` for a square input, and the layer that breaks if any."""
    for name, layer in features.named_children():
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            size = _out_len(layer, size)
            if isinstance(layer, nn.Conv2d):
                channels = layer.out_channels
            if size < 1:
                return channels, size, name
    return channels, size, None


def _feature_shape(
    model: str, features: nn.Sequential, channels: int, size: int
) -> tuple[int, int]:
    out_channels, side, broken = _walk(features, channels, size)
    if broken is not None:
        smallest = next(s for s in range(size, 4097) if _walk(features, channels, s)[2] is None)
        layer = type(features.get_submodule(broken)).__name__
        raise ShapeError(
            f"{model} cannot take {size}×{size} inputs: they shrink to nothing at "
            f"features.{broken} ({layer}); use at least {smallest}×{smallest}"
        )
    return out_channels, side


def _convnet(
    model: str,
    features: Layers,
    head: Callable[[int], Layers],
    *,
    in_channels: int,
    input_size: int,
    avgpool: int | None = None,
    indexed: bool = False,
) -> ConvNet:
    """Wire features and a classifier whose first Linear takes what the features put out."""
    stack = _sequential(features, indexed)
    channels, side = _feature_shape(model, stack, in_channels, input_size)
    if avgpool is not None:
        side = avgpool
    classifier = _sequential(head(channels * side * side), indexed)
    return ConvNet(stack, classifier, nn.AdaptiveAvgPool2d(avgpool) if avgpool else None)


# --- registry builders: (in_channels, num_classes, input_size, **options) -> nn.Module ----------


def _course_net(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    features: Layers = [
        ("conv1", nn.Conv2d(in_channels, 10, 5)),
        ("pool1", nn.MaxPool2d(2)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(10, 20, 5)),
        ("pool2", nn.MaxPool2d(2)),
        ("relu2", nn.ReLU()),
    ]
    return _convnet(
        "course-net",
        features,
        lambda n: [("fc", nn.Linear(n, num_classes))],
        in_channels=in_channels,
        input_size=input_size,
    )


def _simple_convnet(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    features: Layers = [
        ("conv1", nn.Conv2d(in_channels, 30, 5)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
    ]
    return _convnet(
        "simple-convnet",
        features,
        lambda n: [
            ("fc1", nn.Linear(n, 100)),
            ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(100, num_classes)),
        ],
        in_channels=in_channels,
        input_size=input_size,
    )


def _lenet5(
    in_channels: int,
    num_classes: int,
    input_size: int,
    *,
    activation: str,
    pooling: str,
    batch_norm: bool,
) -> nn.Module:
    pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
    features: Layers = []
    for i, (c_in, c_out, pad) in enumerate([(in_channels, 6, 2), (6, 16, 0)], start=1):
        features.append((f"conv{i}", nn.Conv2d(c_in, c_out, 5, padding=pad)))
        if batch_norm:
            features.append((f"bn{i}", nn.BatchNorm2d(c_out)))
        features += [(f"{activation}{i}", _activation(activation)), (f"pool{i}", pool(2))]

    def head(n: int) -> Layers:
        layers: Layers = []
        for i, (f_in, f_out) in enumerate([(n, 120), (120, 84)], start=1):
            layers.append((f"fc{i}", nn.Linear(f_in, f_out)))
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm1d(f_out)))
            layers.append((f"{activation}{i}", _activation(activation)))
        return [*layers, ("fc3", nn.Linear(84, num_classes))]

    return _convnet("lenet5", features, head, in_channels=in_channels, input_size=input_size)


def _bn_cnn(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    features: Layers = [
        ("conv1", nn.Conv2d(in_channels, 32, 5, padding=2)),
        ("bn1", nn.BatchNorm2d(32)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
    ]
    return _convnet(
        "bn-cnn",
        features,
        lambda n: [
            ("fc1", nn.Linear(n, 70)),
            ("tanh1", nn.Tanh()),
            ("fc2", nn.Linear(70, 30)),
            ("tanh2", nn.Tanh()),
            ("fc3", nn.Linear(30, num_classes)),
        ],
        in_channels=in_channels,
        input_size=input_size,
    )


# AlexNet's five convs as (out_channels, kernel, stride, padding); "M" = overlapping 3×3/2 max-pool.
ALEXNET_CFG: list[tuple[int, int, int, int] | str] = [
    (64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M",
]  # fmt: skip
# The same pattern for 32 px: widths / 4, 5×5 kernels at stride 1 where AlexNet has 11×11/4 and 5×5.
ALEXNET_SMALL_CFG: list[tuple[int, int, int, int] | str] = [
    (16, 5, 1, 2), "M", (48, 5, 1, 2), "M", (96, 3, 1, 1), (64, 3, 1, 1), (64, 3, 1, 1), "M",
]  # fmt: skip


def _alexnet_like(
    model: str,
    cfg: list[tuple[int, int, int, int] | str],
    hidden: int,
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    avgpool: int | None,
    indexed: bool,
) -> ConvNet:
    features: Layers = []
    channels, convs, pools = in_channels, 0, 0
    for item in cfg:
        if isinstance(item, str):
            pools += 1
            features.append((f"pool{pools}", nn.MaxPool2d(3, stride=2)))
            continue
        out, kernel, stride, padding = item
        convs += 1
        conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=padding)
        features += [(f"conv{convs}", conv), (f"relu{convs}", nn.ReLU())]
        channels = out

    def head(n: int) -> Layers:
        return [
            ("dropout1", nn.Dropout(0.5)),
            ("fc1", nn.Linear(n, hidden)),
            ("relu1", nn.ReLU()),
            ("dropout2", nn.Dropout(0.5)),
            ("fc2", nn.Linear(hidden, hidden)),
            ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(hidden, num_classes)),
        ]

    return _convnet(
        model,
        features,
        head,
        in_channels=in_channels,
        input_size=input_size,
        avgpool=avgpool,
        indexed=indexed,
    )


def _alexnet(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    return _alexnet_like(
        "alexnet",
        ALEXNET_CFG,
        4096,
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        avgpool=6,
        indexed=True,
    )


def _alexnet_small(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    return _alexnet_like(
        "alexnet-small",
        ALEXNET_SMALL_CFG,
        128,
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        avgpool=None,
        indexed=False,
    )


# VGG's configuration B (13 weight layers); "M" = 2×2/2 max-pool.
VGG13_CFG: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M",
]  # fmt: skip


def _vgg_like(
    model: str,
    divisor: int,
    *,
    in_channels: int,
    num_classes: int,
    input_size: int,
    small: bool,
) -> ConvNet:
    """VGG13 itself, or (small) widths / divisor, BatchNorm and ceil-mode pools (28 px → 1×1)."""
    features: Layers = []
    channels, block, conv = in_channels, 1, 0
    for item in VGG13_CFG:
        if item == "M":
            features.append((f"pool{block}", nn.MaxPool2d(2, stride=2, ceil_mode=small)))
            block, conv = block + 1, 0
            continue
        out, conv = int(item) // divisor, conv + 1
        features.append((f"conv{block}_{conv}", nn.Conv2d(channels, out, 3, padding=1)))
        if small:
            features.append((f"bn{block}_{conv}", nn.BatchNorm2d(out)))
        features.append((f"relu{block}_{conv}", nn.ReLU()))
        channels = out
    hidden = 4096 if not small else channels

    def head(n: int) -> Layers:
        return [
            ("fc1", nn.Linear(n, hidden)),
            ("relu1", nn.ReLU()),
            ("dropout1", nn.Dropout(0.5)),
            ("fc2", nn.Linear(hidden, hidden)),
            ("relu2", nn.ReLU()),
            ("dropout2", nn.Dropout(0.5)),
            ("fc3", nn.Linear(hidden, num_classes)),
        ]

    net = _convnet(
        model,
        features,
        head,
        in_channels=in_channels,
        input_size=input_size,
        avgpool=None if small else 7,
        indexed=not small,
    )
    _init_like_torchvision(net, linear_std=0.01)
    return net


def _vgg13(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    return _vgg_like(
        "vgg13",
        1,
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        small=False,
    )


def _vgg13_small(in_channels: int, num_classes: int, input_size: int, *, width: int) -> nn.Module:
    return _vgg_like(
        "vgg13-small",
        width,
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        small=True,
    )


def _resnet18(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    # Global average pooling: the input size changes no parameter.
    return ResNet(
        (2, 2, 2, 2),
        (64, 128, 256, 512),
        in_channels=in_channels,
        num_classes=num_classes,
        cifar_stem=False,
    )


def _resnet18_small(
    in_channels: int, num_classes: int, input_size: int, *, width: float
) -> nn.Module:
    return ResNet(
        (2, 2, 2, 2),
        tuple(max(1, round(w * width)) for w in (64, 128, 256, 512)),
        in_channels=in_channels,
        num_classes=num_classes,
        cifar_stem=True,
    )


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    build: Callable[..., nn.Module]
    imagenet_weights: str | None = None  # torchvision model whose ImageNet weights fit ours


def _entry(
    build: Callable[..., nn.Module],
    name: str,
    description: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    origin: str,
    first_conv: str,
    options: dict[str, tuple[Any, ...]] | None = None,
    imagenet_weights: str | None = None,
) -> _Entry:
    info = ModelInfo(name, description, input_shape, num_classes, origin, options or {}, first_conv)
    return _Entry(info, build, imagenet_weights)


MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)

_REGISTRY: dict[str, _Entry] = {
    e.info.name: e
    for e in [
        _entry(
            _course_net,
            "course-net",
            "conv 10@5 → max-pool → ReLU → conv 20@5 → max-pool → ReLU → fc 320→10",
            MNIST_SHAPE,
            10,
            "PyTorch MNIST course tutorial",
            "features.conv1",
        ),
        _entry(
            _simple_convnet,
            "simple-convnet",
            "conv 30@5 → ReLU → max-pool 2 → fc 100 → ReLU → fc 10",
            MNIST_SHAPE,
            10,
            "SimpleConvNet, Saito: Deep Learning from Scratch (2016), ch. 7",
            "features.conv1",
        ),
        _entry(
            _lenet5,
            "lenet5",
            "LeNet-5: conv 6@5 → pool → conv 16@5 → pool → fc 120 → fc 84 → fc 10",
            MNIST_SHAPE,
            10,
            "LeCun et al. 1998, Gradient-based learning applied to document recognition",
            "features.conv1",
            options={
                "activation": ("relu", "sigmoid", "tanh"),
                "pooling": ("max", "avg"),
                "batch_norm": (False, True),
            },
        ),
        _entry(
            _bn_cnn,
            "bn-cnn",
            "conv 32@5 pad 2 → BN → ReLU → max-pool → fc 70 tanh → fc 30 tanh → fc 10",
            MNIST_SHAPE,
            10,
            "batch-normalised MNIST tutorial CNN (batch norm: Ioffe & Szegedy 2015)",
            "features.conv1",
        ),
        _entry(
            _alexnet,
            "alexnet",
            "AlexNet for 224×224 ImageNet images, layer for layer as torchvision's (61.1M params)",
            IMAGENET_SHAPE,
            1000,
            "Krizhevsky et al. 2012; torchvision's one-GPU variant (Krizhevsky 2014)",
            "features.0",
            imagenet_weights="alexnet",
        ),
        _entry(
            _vgg13,
            "vgg13",
            "VGG-13 (configuration B) for 224×224 images, layer for layer as torchvision's",
            IMAGENET_SHAPE,
            1000,
            "Simonyan & Zisserman 2014, Very Deep Convolutional Networks",
            "features.0",
            imagenet_weights="vgg13",
        ),
        _entry(
            _resnet18,
            "resnet18",
            "ResNet-18 for 224×224 images, layer for layer as torchvision's (11.7M params)",
            IMAGENET_SHAPE,
            1000,
            "He et al. 2015, Deep Residual Learning for Image Recognition",
            "conv1",
            imagenet_weights="resnet18",
        ),
        _entry(
            _alexnet_small,
            "alexnet-small",
            "AlexNet's five convs and three pools at 1/4 width for 28–32 px images",
            CIFAR_SHAPE,
            10,
            "scaled from Krizhevsky et al. 2012",
            "features.conv1",
        ),
        _entry(
            _vgg13_small,
            "vgg13-small",
            "VGG-13 with BatchNorm, widths divided by `width`, for 28–32 px images",
            CIFAR_SHAPE,
            10,
            "scaled from Simonyan & Zisserman 2014",
            "features.conv1_1",
            options={"width": (4, 1, 2, 8)},
        ),
        _entry(
            _resnet18_small,
            "resnet18-small",
            "CIFAR-style ResNet-18 (3×3 stem, no max-pool), widths × `width`, for 28–32 px",
            CIFAR_SHAPE,
            10,
            "He et al. 2015, CIFAR-style stem",
            "conv1",
            options={"width": (0.25, 0.125, 0.5, 1.0)},
        ),
    ]
}


# --- public API -------------------------------------------------------------------------------


def model_names() -> list[str]:
    """Registry names, in teaching order (torchvision's models are `tv:NAME`, not listed here)."""
    return list(_REGISTRY)


@functools.cache
def torchvision_names() -> list[str]:
    """torchvision's classification models, each buildable as `tv:NAME`."""
    return sorted(_zoo().list_models(module=_zoo()))


def model_info(name: str) -> ModelInfo:
    """Defaults and provenance of a registry model or of `tv:NAME`."""
    if name.startswith(TV_PREFIX):
        return _torchvision_info(_tv_name(name))
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownNameError(
            f"unknown model {name!r}; choose one of {', '.join(model_names())}, "
            f"or tv:NAME for a torchvision model (e.g. tv:resnet18)"
        )
    return entry.info


def build_model(
    name: str,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
    pretrained: bool = False,
    **options: Any,
) -> nn.Module:
    """A fresh model in train mode; arguments left as None take the defaults of `model_info`.

    `input_size` (the side of a square input) sizes the first Linear of models that flatten
    feature maps, and a size they cannot take raises ShapeError. Models with global pooling
    (ResNets, most `tv:` models) take any size and ignore it; torchvision's transformers
    (`tv:vit_*`, `tv:maxvit_t`) are built for it unless pretrained weights fix it.
    `pretrained` loads torchvision's default ImageNet weights (`tv:NAME`, and `alexnet`, `vgg13`,
    `resnet18` whose layers match torchvision's) from the torch hub cache, downloading them once.
    With weights loaded, a different `num_classes` replaces the classification head with a fresh
    layer, and a different `in_channels` replaces the first conv: one channel gets the sum of the
    RGB kernels (a gray image then gives the colour model's response), other counts repeat the RGB
    kernels scaled by 3 / in_channels.
    """
    info = model_info(name)
    in_channels = _positive("in_channels", in_channels, info.input_shape[0])
    num_classes = _positive("num_classes", num_classes, info.num_classes)
    input_size = _positive("input_size", input_size, info.input_shape[-1])
    chosen = _choose_options(info, options)
    if name.startswith(TV_PREFIX):
        tv_name = _tv_name(name)
        return _build_torchvision(tv_name, in_channels, num_classes, input_size, pretrained)
    entry = _REGISTRY[name]
    if not pretrained:
        return entry.build(in_channels, num_classes, input_size, **chosen)
    if entry.imagenet_weights is None:
        with_weights = [n for n, e in _REGISTRY.items() if e.imagenet_weights]
        raise LensError(
            f"{name} has no pretrained weights; only {', '.join(with_weights)} and tv:NAME "
            "models come with ImageNet weights (train this one instead)"
        )
    model = entry.build(3, 1000, input_size)
    weights = _zoo().get_model_weights(entry.imagenet_weights).DEFAULT
    model.load_state_dict(_imagenet_state_dict(weights, name))
    _adapt(model, in_channels, num_classes, 1000)
    return model


# --- options and arguments --------------------------------------------------------------------


def _positive(argument: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LensError(f"{argument} must be a positive whole number, not {value!r}")
    return value


def _choose_options(info: ModelInfo, given: dict[str, Any]) -> dict[str, Any]:
    """Each option's value, checked against the allowed ones (strings from a command line too)."""
    unknown = sorted(set(given) - set(info.options))
    if unknown:
        known = ", ".join(info.options) or "none"
        raise LensError(f"{info.name} has no option {unknown[0]!r}; its options: {known}")
    chosen = {}
    for option, allowed in info.options.items():
        value = given.get(option, allowed[0])
        match = next((a for a in allowed if _same_value(value, a)), None)
        if match is None:
            choices = ", ".join(str(a) for a in allowed)
            raise LensError(
                f"{info.name}: {option}={value!r} is not allowed; choose one of {choices}"
            )
        chosen[option] = match
    return chosen


def _same_value(value: Any, allowed: Any) -> bool:
    if isinstance(value, str) and not isinstance(allowed, str):
        return value.strip().lower() == str(allowed).lower()
    # True == 1 in Python; a flag and a number must not stand in for each other.
    return isinstance(value, bool) == isinstance(allowed, bool) and value == allowed


# --- torchvision's zoo ------------------------------------------------------------------------


def _zoo() -> ModuleType:
    """torchvision.models, imported on first use: importing torchvision takes ~2 s (its ops
    load torch._dynamo), which the app's first page and the registry models never need."""
    import torchvision.models

    return torchvision.models


def _tv_name(name: str) -> str:
    tv_name = name.removeprefix(TV_PREFIX)
    if tv_name not in torchvision_names():
        raise UnknownNameError(
            f"unknown torchvision model {name!r}; choose tv:NAME with NAME one of "
            + ", ".join(torchvision_names())
        )
    return tv_name


@functools.cache
def _torchvision_info(tv_name: str) -> ModelInfo:
    weights = _zoo().get_model_weights(tv_name).DEFAULT
    meta = weights.meta
    title, origin = _builder_doc(tv_name)
    top1 = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    description = f"{title}, {meta['num_params'] / 1e6:.1f}M params"
    if top1 is not None:
        description += f", ImageNet top-1 {top1:.3f} %"
    crop = getattr(weights.transforms, "keywords", {}).get("crop_size", 224)
    with _ParametersOnMeta():  # layer names only: no weight memory, no initialisation cost
        model = _zoo().get_model(tv_name, **_tv_kwargs(tv_name))
    stem = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    return ModelInfo(
        name=TV_PREFIX + tv_name,
        description=description,
        input_shape=(3, crop, crop),
        num_classes=len(meta["categories"]),
        origin=origin,
        options={},
        first_conv=stem,
    )


class _ParametersOnMeta(TorchFunctionMode):
    """Allocate `torch.empty` (how layers create their weights) on the meta device.

    Unlike `with torch.device("meta")`, other tensors stay real: RegNet's builder computes its
    widths with tensors and reads them back with `.tolist()`, which a meta tensor cannot do.
    """

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _builder_doc(tv_name: str) -> tuple[str, str]:
    """("ResNet-18", "Deep Residual Learning … (https://…)") from the builder's docstring."""
    doc = _zoo().get_model_builder(tv_name).__doc__ or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    title = re.sub(r"^Constructs an? ", "", paragraph)
    title = re.split(r" (?:model|architecture|from|as described)\b", title)[0].rstrip(" ,")
    paper = re.search(r"`([^`<]+?)\s*<(https?://[^>]+)>`", paragraph)
    origin = f"{paper.group(1)} ({paper.group(2)})" if paper else "torchvision"
    return title or tv_name, origin


def _tv_kwargs(tv_name: str) -> dict[str, Any]:
    # Their defaults return (logits, aux logits) in train mode; the pages want one logits tensor.
    if tv_name in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    return {}


def _size_kwargs(tv_name: str, input_size: int) -> dict[str, Any]:
    # Transformers fix their input size when built; convolutional models take any size.
    if tv_name.startswith("vit_"):
        return {"image_size": input_size}
    if tv_name.startswith("maxvit_"):
        return {"input_size": (input_size, input_size)}
    return {}


def _build_torchvision(
    tv_name: str, in_channels: int, num_classes: int, input_size: int, pretrained: bool
) -> nn.Module:
    kwargs = _tv_kwargs(tv_name)
    if not pretrained:
        kwargs |= _size_kwargs(tv_name, input_size)
        model = _zoo().get_model(tv_name, num_classes=num_classes, **kwargs)
        _adapt(model, in_channels, num_classes, num_classes, pretrained_stem=False)
        return model
    weights = _zoo().get_model_weights(tv_name).DEFAULT
    _imagenet_state_dict(weights, TV_PREFIX + tv_name)  # cached and safe to unpickle
    # torchvision's builder loads the file from the hub cache and applies its model's quirks
    # (sizes fixed by the weights, Inception's input transform).
    model = _zoo().get_model(tv_name, weights=weights, **kwargs)
    _adapt(model, in_channels, num_classes, len(weights.meta["categories"]))
    return model


def _adapt(
    model: nn.Module,
    in_channels: int,
    num_classes: int,
    built_classes: int,
    *,
    pretrained_stem: bool = True,
) -> None:
    """Swap the last layer for `num_classes` and the first conv for `in_channels`, in place."""
    if num_classes != built_classes:
        name, old = [
            (n, m)
            for n, m in model.named_modules()
            if (isinstance(m, nn.Linear) and m.out_features == built_classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == built_classes)
        ][-1]
        if isinstance(old, nn.Linear):
            head: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        else:
            head = _conv_like(old, old.in_channels, num_classes)  # SqueezeNet's 1×1 conv head
        model.set_submodule(name, head)
    name, old = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if in_channels == old.in_channels:
        return
    stem = _conv_like(old, in_channels, old.out_channels)
    if pretrained_stem:
        with torch.no_grad():
            rgb = old.weight  # (out, 3, k, k)
            if in_channels == 1:
                stem.weight.copy_(rgb.sum(1, keepdim=True))
            else:
                repeats = math.ceil(in_channels / rgb.shape[1])
                stem.weight.copy_(rgb.repeat(1, repeats, 1, 1)[:, :in_channels] * 3 / in_channels)
            if old.bias is not None:
                stem.bias.copy_(old.bias)
    model.set_submodule(name, stem)
    if getattr(model, "transform_input", False):  # Inception's RGB re-normalisation needs 3
        model.transform_input = False


def _conv_like(old: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )


# --- ImageNet weights in the torch hub cache --------------------------------------------------


def weights_path(weights: WeightsEnum) -> Path:
    """Where torchvision keeps (and looks for) a weights file: <torch hub dir>/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def _imagenet_state_dict(weights: WeightsEnum, label: str) -> dict[str, Tensor]:
    """The weights file, downloaded into the hub cache if missing, read without unpickling code."""
    path = weights_path(weights)
    if not path.exists():
        try:
            _download(weights.url, path)
        except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
            raise LensError(
                f"could not download ImageNet weights for {label} (URL {weights.url}): offline? "
                f"Place the file {path.name} in {path.parent}"
            ) from err
    try:
        mmap = zipfile.is_zipfile(path)  # checks the pickle without reading every tensor
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # any unreadable or unsafe pickle
        raise CheckpointError(
            f"{path} is not a plain state dict ({type(err).__name__}); delete it and try again"
        ) from err


def _download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch `url` into `dest` atomically; check the SHA-256 prefix the file name carries."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = urllib.request.build_opener()  # reads the proxy settings of the environment now
    request = urllib.request.Request(url, headers={"User-Agent": "cnn-lens"})
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".part", delete=False) as part:
        try:
            with opener.open(request, timeout=timeout) as response:
                while chunk := response.read(1 << 20):
                    part.write(chunk)
                    digest.update(chunk)
            part.close()
            expected = torch.hub.HASH_REGEX.search(dest.name)
            if expected and not digest.hexdigest().startswith(expected.group(1)):
                raise ValueError(f"{url} does not match the SHA-256 prefix {expected.group(1)}")
            os.replace(part.name, dest)
        finally:
            if os.path.exists(part.name):
                os.remove(part.name)
