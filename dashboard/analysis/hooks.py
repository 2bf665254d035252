"""What every look inside a shared model stands on: the lock and the eval-mode, no-grad guard,
forward hooks removed however the pass ends, layer keys of reused modules, and the plain reads
of a model: its conv layers, their filter weights, per-channel statistics of an activation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dashboard.base.errors import LensError, ShapeError, UnknownNameError

# One model object is shared by every Streamlit session; hooks and the eval-mode switch must not
# interleave. Re-entrant so that a probe may call another probe.
_LOCK = threading.RLock()


@dataclass(frozen=True)
class ChannelStats:
    """Summary of one channel over a batch; `dead` = ≤ 0 (zero after a ReLU) everywhere."""

    channel: int
    mean: float
    max: float
    zero_fraction: float  # share of values ≤ 0, i.e. that a ReLU turns to zero
    dead: bool


@contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """Hold the lock, run in eval mode under no_grad, restore every module's own mode."""
    with _LOCK:
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for module, training in modes:
                module.training = training


@contextmanager
def _hooks() -> Iterator[list[torch.utils.hooks.RemovableHandle]]:
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Tensors inside nested tuples, lists and dicts, in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _first_tensor(*objs: Any) -> torch.Tensor | None:
    for obj in objs:
        for tensor in _tensors(obj):
            return tensor
    return None


def _parse_key(key: str) -> tuple[str, int]:
    """'layer1.0.relu#1' → ('layer1.0.relu', 1): the second call of a reused module."""
    name, sep, index = key.partition("#")
    if sep and index.isdigit():
        return name, int(index)
    return key, 0


def _key(name: str, call_index: int) -> str:
    return name if call_index == 0 else f"{name}#{call_index}"


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def _output_tensor(output: Any) -> torch.Tensor:
    tensor = _first_tensor(output)
    if tensor is None:
        raise LensError(f"the model returned no tensor ({type(output).__name__})")
    return tensor.detach()


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d in definition order, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def filter_weights(model: nn.Module, layer_name: str) -> torch.Tensor:
    """Weights of a Conv2d as a detached CPU copy: (C_out, C_in/groups, kh, kw)."""
    module = dict(model.named_modules()).get(layer_name)
    if not isinstance(module, nn.Conv2d):
        convs = ", ".join(name for name, _ in conv_layers(model)) or "none"
        what = "is not a Conv2d" if module is not None else "does not exist"
        raise UnknownNameError(f"layer {layer_name!r} {what}; conv layers: {convs}")
    return module.weight.detach().cpu().clone()


def channel_stats(act: torch.Tensor) -> list[ChannelStats]:
    """Per-channel mean, max and share of values ≤ 0 over a batch, (B, C, H, W) or (B, C)."""
    if act.dim() not in (2, 4) or act.shape[0] == 0:
        raise ShapeError(
            f"channel_stats needs a non-empty (B, C, H, W) or (B, C), got {tuple(act.shape)}"
        )
    values = (
        act.detach().to("cpu", torch.float64).transpose(0, 1).reshape(act.shape[1], -1)
    )  # (C, N)
    off = values <= 0
    means, maxima = values.mean(dim=1).tolist(), values.amax(dim=1).tolist()
    zero, dead = off.double().mean(dim=1).tolist(), off.all(dim=1).tolist()
    return [
        ChannelStats(channel=c, mean=means[c], max=maxima[c], zero_fraction=zero[c], dead=dead[c])
        for c in range(act.shape[1])
    ]
