"""Grad-CAM's layers: which layers have a class-activation map, which one to show first, and
the guard every Grad-CAM of the shared model runs under.

Grad-CAM (Selvaraju et al. 2017): the gradient of the class score with respect to a layer's
maps, averaged over each map, weights the maps; their sum through a ReLU is the
class-activation map, upsampled bilinearly to the input size. It is computed by Captum's
LayerGradCam (`attribution.grad_cam` for the Activations page, `attribution.explain` for the
Attribution page), checked in the tests against the formula by hand with torch.autograd.grad.

The default layer is the last conv block's output (a ResNet's BasicBlock, whose output is the
residual sum after its ReLU; the activation after a VGG's last conv), as pytorch-grad-cam
recommends (`model.layer4[-1]` of a ResNet, `model.features[-1]` of a VGG). A conv or
batch-norm output before its activation is a poor choice: its negative values, which the
following ReLU would zero, count against every class whose weight is positive, so the weighted
sum is often ≤ 0 everywhere and the map is empty although the class has support.

The model is the cached one every Streamlit session shares, so nothing may change it: the work
runs under the probe's lock, in eval mode with every module's own mode restored after.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from dashboard.analysis import inputs, probe

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
