"""Grad-CAM through captum against the formula computed by hand, on a LeNet-5 trained on real
MNIST; and the shared model it runs on is left exactly as it was."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dashboard import checkpoints, data, gradcam, inputs, probe
from dashboard.errors import LensError


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


def test_captum_equals_the_formula_by_hand(model: nn.Module, mnist_test: data.Split) -> None:
    flow = probe.shape_flow(model, (1, 28, 28))
    assert gradcam.default_layer(flow) == "features.conv2"
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
                cam = gradcam.grad_cam(model, x, layer, target)
                expected = hand_grad_cam(model, x, layer, target)
                assert cam.raw.shape == tuple(expected.shape)
                np.testing.assert_allclose(cam.raw, expected.numpy(), rtol=0, atol=1e-5)
                upsampled = F.interpolate(expected[None, None], (28, 28), mode="bilinear")
                np.testing.assert_allclose(cam.heatmap, upsampled[0, 0], rtol=0, atol=1e-5)
                assert cam.heatmap.shape == (28, 28)
                assert cam.score == pytest.approx(float(scores[target]), abs=1e-5)
                checked += 1
    assert checked >= 20


def test_the_predicted_class_has_support(model: nn.Module, mnist_test: data.Split) -> None:
    x = image(mnist_test, 0)
    with torch.no_grad():
        predicted = int(model(x).argmax())
    cam = gradcam.grad_cam(model, x, "features.conv2", predicted)
    assert not cam.empty
    assert cam.raw.max() > 0


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
    }


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
    reference = gradcam.grad_cam(eval_copy, x, "features.conv2", 4)
    cam = gradcam.grad_cam(shared, x, "features.conv2", 4)
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
    cam = gradcam.grad_cam(frozen, x, "features.conv2", 2)
    expected = hand_grad_cam(model, x, "features.conv2", 2)
    np.testing.assert_allclose(cam.raw, expected.numpy(), rtol=0, atol=1e-5)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_bad_requests_are_lens_errors(model: nn.Module, mnist_test: data.Split) -> None:
    x = image(mnist_test, 0)
    with pytest.raises(LensError, match="no layer"):
        gradcam.grad_cam(model, x, "features.nope", 0)
    with pytest.raises(LensError, match="out of range"):
        gradcam.grad_cam(model, x, "features.conv2", 10)
    with pytest.raises(LensError, match="no spatial output"):
        gradcam.grad_cam(model, x, "classifier.fc1", 0)
    with pytest.raises(LensError, match="one image"):
        gradcam.grad_cam(model, torch.cat([x, x]), "features.conv2", 0)
    assert hooks_left(model) == 0
