"""The course's architectures as `nn.Module`s (LeNet → AlexNet → VGG → ResNet, and the small
nets of the tutorials), each sized for its input, and `ModelInfo`, the facts shown about any
architecture before it is built."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from dashboard.base.errors import ShapeError

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
