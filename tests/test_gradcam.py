"""Grad-CAM against the formula computed by hand (plain hooks and torch.autograd.grad) on models
trained on real MNIST and CIFAR-10; the default layer's map is never empty on the shipped
models; and the shared model it runs on is left exactly as it was."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dashboard import data
from dashboard.analysis import attribution, gradcam, inputs, probe
from dashboard.base.errors import LensError
from dashboard.models import checkpoints
from tests.conftest import snapshot

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model(lenet5_mnist_checkpoint: Path) -> nn.Module:
    return checkpoints.load_checkpoint(lenet5_mnist_checkpoint).model


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets)


def image(split: data.Split, index: int) -> torch.Tensor:
    return inputs.model_input(split.images[index].numpy(), split.info)


def hand_grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> torch.Tensor:
    """ReLU(Σ_k mean_ij(∂y_c/∂A_k) · A_k) with torch.autograd.grad, on a private copy."""
    own = copy.deepcopy(model).eval()
    kept: dict[str, torch.Tensor] = {}
    module = dict(own.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, args, out: kept.update(maps=out))
    try:
        with torch.enable_grad():
            scores = own(x)
            (grads,) = torch.autograd.grad(scores[0, target], kept["maps"])
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    return torch.relu((weights * kept["maps"]).sum(dim=1))[0].detach()  # (h, w)


def test_grad_cam_equals_the_formula_by_hand(model: nn.Module, mnist_test: data.Split) -> None:
    flow = probe.shape_flow(model, (1, 28, 28))
    assert gradcam.default_layer(flow) == "features.relu2"
    assert gradcam.spatial_layers(flow)[:3] == [
        "features.conv1",
        "features.relu1",
        "features.pool1",
    ]
    checked = 0
    for index in (0, 1, 2, 3):
        x = image(mnist_test, index)
        with torch.no_grad():
            scores = model(x)[0]
        predicted = int(scores.argmax())
        for layer in ("features.conv1", "features.conv2", "features.relu2"):
            for target in {predicted, (predicted + 3) % 10}:
                cam = attribution.grad_cam(model, x, layer, target)
                expected = hand_grad_cam(model, x, layer, target)
                assert cam.raw.shape == tuple(expected.shape)
                np.testing.assert_allclose(cam.raw, expected.numpy(), rtol=0, atol=1e-5)
                upsampled = F.interpolate(expected[None, None], (28, 28), mode="bilinear")
                np.testing.assert_allclose(cam.heatmap, upsampled[0, 0], rtol=0, atol=1e-5)
                assert cam.heatmap.shape == (28, 28)
                assert cam.score == pytest.approx(float(scores[target]), abs=1e-5)
                checked += 1
    assert checked >= 20


SHIPPED = {  # checkpoint in trained/ → (dataset, its default Grad-CAM layer)
    "lenet5-mnist": ("mnist", "features.relu2"),
    "resnet18-small-cifar10": ("cifar10", "layer4.1"),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_conv_layer_of_the_shipped_models_equals_the_formula_and_the_default_has_support(
    name: str, shared_datasets: Path
) -> None:
    """Every conv layer, for the predicted class and another, equals the formula; the default
    (the last conv block's output) has support for the predicted class on nearly all of the
    first 20 test images (a map can be empty: every channel's weighted sum below zero, which
    the page says) — the last conv's own output (the old default) had none on image 0."""
    dataset, default = SHIPPED[name]
    shipped = checkpoints.load_checkpoint(REPO_ROOT / "trained" / f"{name}.safetensors").model
    split = data.load_split(dataset, "test", data_root=shared_datasets)
    flow = probe.shape_flow(shipped, tuple(split.images.shape[1:]))
    assert gradcam.default_layer(flow) == default
    assert default in gradcam.spatial_layers(flow)
    convs = [r.name for r in flow.leaves if r.type == "Conv2d"]
    assert len(convs) == {"lenet5-mnist": 2, "resnet18-small-cifar10": 20}[name]
    assert set(convs) <= set(gradcam.spatial_layers(flow))
    supported = 0
    for index in range(20):
        x = image(split, index)
        with torch.no_grad():
            predicted = int(shipped(x).argmax())
        cam = attribution.grad_cam(shipped, x, default, predicted)
        supported += not cam.empty
        expected = hand_grad_cam(shipped, x, default, predicted)
        np.testing.assert_allclose(cam.raw, expected.numpy(), rtol=1e-4, atol=1e-5)
        if index > 0:
            continue
        for layer in convs:
            for target in (predicted, (predicted + 3) % 10):
                cam = attribution.grad_cam(shipped, x, layer, target)
                expected = hand_grad_cam(shipped, x, layer, target)
                np.testing.assert_allclose(cam.raw, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert supported >= 18, f"{name}: support for the prediction on {supported} of 20 images"


def test_an_in_place_activation_after_the_layer_does_not_change_its_map(
    model: nn.Module, mnist_test: data.Split
) -> None:
    """torchvision's convs feed a ReLU(inplace=True): Grad-CAM at the conv must read the conv's
    own maps and gradient, as the same model with a ReLU that is not in place gives them."""
    in_place = copy.deepcopy(model)
    in_place.features.relu1 = nn.ReLU(inplace=True)
    in_place.features.relu2 = nn.ReLU(inplace=True)
    x = image(mnist_test, 3)
    for layer in ("features.conv1", "features.conv2"):
        for target in range(10):
            cam = attribution.grad_cam(in_place, x, layer, target)
            expected = hand_grad_cam(model, x, layer, target)
            np.testing.assert_allclose(cam.raw, expected.numpy(), rtol=1e-4, atol=1e-5)


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_the_shared_model_is_not_mutated(model: nn.Module, mnist_test: data.Split) -> None:
    shared = copy.deepcopy(model)
    shared.train()
    shared.classifier.eval()  # a mixed mode must come back exactly as it was
    shared.features.conv1.weight.requires_grad_(False)  # and so must frozen parameters
    before = snapshot(shared)
    x = image(mnist_test, 5)
    eval_copy = copy.deepcopy(model).eval()
    reference = attribution.grad_cam(eval_copy, x, "features.conv2", 4)
    cam = attribution.grad_cam(shared, x, "features.conv2", 4)
    np.testing.assert_array_equal(cam.raw, reference.raw)  # computed in eval mode regardless
    after = snapshot(shared)
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"])  # no parameter gradient was written
    assert hooks_left(shared) == 0


def test_frozen_model_still_gets_a_map(model: nn.Module, mnist_test: data.Split) -> None:
    frozen = copy.deepcopy(model).requires_grad_(False)
    x = image(mnist_test, 1)
    cam = attribution.grad_cam(frozen, x, "features.conv2", 2)
    expected = hand_grad_cam(model, x, "features.conv2", 2)
    np.testing.assert_allclose(cam.raw, expected.numpy(), rtol=0, atol=1e-5)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_bad_requests_are_lens_errors(model: nn.Module, mnist_test: data.Split) -> None:
    x = image(mnist_test, 0)
    with pytest.raises(LensError, match="no layer"):
        attribution.grad_cam(model, x, "features.nope", 0)
    with pytest.raises(LensError, match="out of range"):
        attribution.grad_cam(model, x, "features.conv2", 10)
    with pytest.raises(LensError, match="no spatial output"):
        attribution.grad_cam(model, x, "classifier.fc1", 0)
    with pytest.raises(LensError, match="one image"):
        attribution.grad_cam(model, torch.cat([x, x]), "features.conv2", 0)
    assert hooks_left(model) == 0
