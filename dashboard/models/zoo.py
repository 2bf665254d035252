"""torchvision's classification models as `tv:NAME`, and ImageNet weights: read from the torch hub
cache (downloaded once, checked, never unpickled as code), with the head and the first conv
adapted to other classes and channels. torchvision is imported on first use only."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from types import ModuleType

    from torchvision.models import WeightsEnum

from dashboard.base.errors import CheckpointError, LensError, UnknownNameError
from dashboard.models.architectures import ModelInfo

TV_PREFIX = "tv:"
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation: offline machines fail fast instead of hanging


@functools.cache
def torchvision_names() -> list[str]:
    """torchvision's classification models, each buildable as `tv:NAME`."""
    return sorted(_zoo().list_models(module=_zoo()))


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
