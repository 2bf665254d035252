"""Registry of architectures: a name becomes a fresh `nn.Module`, with the facts the pages show.

Registry models are the seed architectures of the course (LeNet → AlexNet → VGG → ResNet), each
laid out as `features` → [`avgpool`] → `flatten` → `classifier` (ResNet keeps torchvision's
`conv1` … `layer4` → `avgpool` → `flatten` → `fc`). Every activation is an `nn.Module`, never
in-place, and flattening is an `nn.Flatten`, so forward hooks see every step of the forward pass.
`alexnet`, `vgg13` and `resnet18` keep torchvision's parameter names, so ImageNet weights load
into them. Any classification model of torchvision is available as `tv:NAME`.

The networks themselves are in `architectures`, torchvision's models and ImageNet weights in
`zoo`; here the registry that names them and `build_model`. Checkpoints and their cards
(`checkpoints`, `card_schema`), uploaded models (`uploads`) and the training-dynamics record
(`dynamics`) sit beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from dashboard.base.errors import LensError, UnknownNameError
from dashboard.models.architectures import ModelInfo as ModelInfo
from dashboard.models.architectures import (
    _alexnet,
    _alexnet_small,
    _bn_cnn,
    _course_net,
    _lenet5,
    _resnet18,
    _resnet18_small,
    _simple_convnet,
    _vgg13,
    _vgg13_small,
)
from dashboard.models.zoo import TV_PREFIX as TV_PREFIX
from dashboard.models.zoo import (
    _adapt,
    _build_torchvision,
    _imagenet_state_dict,
    _torchvision_info,
    _tv_name,
    _zoo,
)
from dashboard.models.zoo import torchvision_names as torchvision_names
from dashboard.models.zoo import weights_path as weights_path


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


def model_names() -> list[str]:
    """Registry names, in teaching order (torchvision's models are `tv:NAME`, not listed here)."""
    return list(_REGISTRY)


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
