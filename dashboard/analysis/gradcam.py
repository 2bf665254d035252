"""Grad-CAM: where in the image a layer saw evidence for a class.

Grad-CAM (Selvaraju et al. 2017): the gradient of the class score with respect to a layer's
maps, averaged over each map, weights the maps; their sum through a ReLU is the
class-activation map, upsampled bilinearly to the input size.

Computed with one forward hook and `torch.autograd.grad`. The hook hands the rest of the model
a copy of the layer's output and keeps the original, so an operation acting in place after the
layer (torchvision's `ReLU(inplace=True)` after a conv) cannot change the maps or gradient read
here. The hook also sees non-Sequential blocks (a ResNet's BasicBlock), whose output is the
residual sum after its ReLU.

Which layer: the output of the last convolutional block (after its activation and pooling),
as pytorch-grad-cam recommends (`model.layer4[-1]` of a ResNet, `model.features[-1]` of a VGG).
A conv or batch-norm output before its activation is a poor choice: its negative values,
which the following ReLU would zero, count against every class whose weight is positive, so
the weighted sum is often ≤ 0 everywhere and the map is empty although the class has support.

The model is the cached one every Streamlit session shares, so nothing here may change it:
no copy is made (a VGG would cost hundreds of MB per call); the work runs under the probe's
lock, in eval mode with every module's own mode restored after, and without touching
`requires_grad`: the captured maps are a fresh leaf that needs a gradient, and
`torch.autograd.grad` asks for that gradient only, so no parameter's `.grad` is written.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dashboard.analysis import inputs, probe
from dashboard.base.errors import LensError, ShapeError, UnknownNameError

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True)
class GradCam:
    """A class-activation map for one image, one layer and one class."""

    layer: str
    target: int  # class index the map explains
    score: float  # the model's logit for `target` on this image
    raw: np.ndarray  # (h, w) float32 at the layer's resolution, ≥ 0
    heatmap: np.ndarray  # (H, W) float32 upsampled to the input, ≥ 0 up to interpolation

    @property
    def empty(self) -> bool:
        """True when no location supports the class (the ReLU zeroed every position)."""
        return not bool((self.raw > 0).any())


def _candidates(flow: probe.ShapeFlow) -> list[probe.LayerRecord]:
    """Records with (C, H, W) outputs that run once per forward: leaves, and blocks other
    than Sequential ones (a Sequential's output is its last layer's, already listed).

    A module called twice (torchvision's ResNet reuses one ReLU) is left out: a hook on it
    would see several outputs and could not tell which one is meant.
    """
    repeated = {r.name for r in flow.records if r.call_index > 0}
    return [
        r
        for r in flow.records
        if len(r.output_shape) == 3
        and r.name not in repeated
        and (r.is_leaf or r.type != "Sequential")
    ]


def spatial_layers(flow: probe.ShapeFlow) -> list[str]:
    """The layers Grad-CAM can read, in forward order (a block before the layers inside it)."""
    return [r.name for r in _candidates(flow)]


def is_block(flow: probe.ShapeFlow, layer: str) -> bool:
    """True for a container (a ResNet block): its output is what the block hands on."""
    return any(r.name == layer and not r.is_leaf for r in flow.records)


def default_layer(flow: probe.ShapeFlow) -> str | None:
    """The last convolutional block's output: the block (a ResNet's last BasicBlock) holding
    the last conv layer, else that conv's maps after their activation (LeNet's relu2, VGG's
    last ReLU: the rectified maps of the Grad-CAM paper), else the conv's own maps."""
    candidates = _candidates(flow)
    names = {r.name for r in candidates}
    leaves = flow.leaves
    convs = [i for i, r in enumerate(leaves) if r.type == "Conv2d" and r.name in names]
    if not convs:
        return None
    last = leaves[convs[-1]]
    blocks = [r.name for r in candidates if not r.is_leaf and last.name.startswith(r.name + ".")]
    if blocks:
        return blocks[0]  # the outermost: what the block hands on, residual sum included
    for record in leaves[convs[-1] + 1 :]:  # past batch norm and pooling, to the activation
        if len(record.output_shape) != 3 or record.type in {"Linear", "Conv2d"}:
            break
        if inputs.is_activation(record) and record.name in names:
            return record.name
    return last.name


@contextmanager
def _shared_model(model: nn.Module) -> Iterator[None]:
    """Hold the probe's lock and eval mode; restore each module's own train/eval flag."""
    with probe._LOCK:  # the same lock every probe takes: one hooked forward at a time
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training


def _maps_and_scores(
    model: nn.Module, module: nn.Module, layer: str, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass with gradients: (the layer's output as a leaf needing a gradient,
    the model's scores computed from it)."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _args: tuple, output: object) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            return None
        maps = output.detach().requires_grad_(True)  # (1, K, h, w)
        captured.append(maps)
        return maps.clone()  # what the model goes on with: in-place ops change only the copy

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            scores = model(x)
    finally:
        handle.remove()
    if not captured:
        raise LensError(f"Grad-CAM failed at {layer}: its output is not a tensor")
    if len(captured) > 1:
        raise LensError(f"{layer} runs {len(captured)} times per image: pick another layer")
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise LensError("Grad-CAM needs a classifier: the model must return (1, classes) scores")
    return captured[0], scores


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> GradCam:
    """Grad-CAM of class `target` at `layer` for one normalized image `x` (1, C, H, W)."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ShapeError(f"Grad-CAM takes one image shaped (1, C, H, W), got {tuple(x.shape)}")
    module = dict(model.named_modules()).get(layer)
    if module is None or not layer:
        raise UnknownNameError(f"no layer named {layer!r} in the model")
    param = next(model.parameters(), None)
    x = x.detach().clone().to(param.device if param is not None else x.device)
    with _shared_model(model):
        maps, scores = _maps_and_scores(model, module, layer, x)
        if not 0 <= target < scores.shape[1]:
            raise LensError(f"class {target} is out of range: the model has {scores.shape[1]}")
        if maps.dim() != 4:
            raise ShapeError(f"{layer} has no spatial output, so it has no Grad-CAM map")
        (grads,) = torch.autograd.grad(scores[0, target], maps)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1): each map's importance
    cam = torch.relu((weights * maps.detach()).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    upsampled = F.interpolate(cam, tuple(x.shape[-2:]), mode="bilinear")  # (1, 1, H, W)
    return GradCam(
        layer=layer,
        target=int(target),
        score=float(scores[0, target].detach()),
        raw=cam[0, 0].cpu().numpy().astype(np.float32),
        heatmap=upsampled[0, 0].cpu().numpy().astype(np.float32),
    )
