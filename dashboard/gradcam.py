"""Grad-CAM: where in the image a conv layer saw evidence for a class.

Computed with captum's `LayerGradCam` (Selvaraju et al. 2017): the gradient of the class score
with respect to the layer's maps, averaged over each map, weights the maps; their sum through a
ReLU is the class-activation map. It is upsampled bilinearly to the input size with captum's
`LayerAttribution.interpolate`.

The model is the cached one every Streamlit session shares, so nothing here may change it:
no copy is made (a VGG would cost hundreds of MB per call); instead the work runs under the
probe's lock (so no other session's hooks or forward pass interleave with captum's hook), in
eval mode with every module's own mode restored after, and without touching `requires_grad`:
captum marks the layer's output as needing a gradient itself and asks `torch.autograd.grad`
for that gradient only, so no parameter's `.grad` is written.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dashboard import probe
from dashboard.errors import LensError, ShapeError, UnknownNameError

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


def spatial_layers(flow: probe.ShapeFlow) -> list[str]:
    """Leaf layers with (C, H, W) outputs that run once per forward: Grad-CAM candidates.

    A module called twice (torchvision's ResNet reuses one ReLU) is left out: a hook on it
    would see several outputs and could not tell which one is meant.
    """
    repeated = {r.name for r in flow.records if r.call_index > 0}
    return [
        r.name
        for r in flow.leaves
        if len(r.output_shape) == 3 and r.name not in repeated and r.call_index == 0
    ]


def default_layer(flow: probe.ShapeFlow) -> str | None:
    """The last conv layer that runs once: the usual Grad-CAM choice (coarse but semantic)."""
    candidates = set(spatial_layers(flow))
    convs = [r.name for r in flow.leaves if r.type == "Conv2d" and r.name in candidates]
    return convs[-1] if convs else None


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


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> GradCam:
    """Grad-CAM of class `target` at `layer` for one normalized image `x` (1, C, H, W)."""
    from captum.attr import LayerAttribution, LayerGradCam  # 0.5 s to import: only when used

    if x.dim() != 4 or x.shape[0] != 1:
        raise ShapeError(f"Grad-CAM takes one image shaped (1, C, H, W), got {tuple(x.shape)}")
    module = dict(model.named_modules()).get(layer)
    if module is None or not layer:
        raise UnknownNameError(f"no layer named {layer!r} in the model")
    param = next(model.parameters(), None)
    x = x.detach().clone().to(param.device if param is not None else x.device)
    with _shared_model(model):
        logits = _logits(model, x)
        if not 0 <= target < logits.shape[1]:
            raise LensError(f"class {target} is out of range: the model has {logits.shape[1]}")
        try:
            cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
        except AssertionError as err:  # captum's way of saying the hook saw nothing
            raise LensError(f"Grad-CAM failed at {layer}: {err}") from err
    if cam.dim() != 4:
        raise ShapeError(f"{layer} has no spatial output, so it has no Grad-CAM map")
    cam = cam.detach()
    upsampled = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    return GradCam(
        layer=layer,
        target=int(target),
        score=float(logits[0, target]),
        raw=cam[0, 0].cpu().numpy().astype(np.float32),
        heatmap=upsampled[0, 0].cpu().numpy().astype(np.float32),
    )


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise LensError("Grad-CAM needs a classifier: the model must return (1, classes) scores")
    return out
