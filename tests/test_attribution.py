"""Attribution through Captum against independent computations, on the shipped LeNet-5 and real
MNIST test digits: Integrated Gradients' completeness, Saliency = torch.autograd.grad, SmoothGrad
= the mean gradient under the same noise, Occlusion and Grad-CAM by hand, Guided Grad-CAM by a
hand-written guided backpropagation; and the shared model left exactly as it was."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dashboard import data
from dashboard.analysis import attribution, inputs, probe
from dashboard.base.errors import LensError
from dashboard.models import checkpoints
from tests.conftest import LENET5_MAP_LAYERS, snapshot
from tests.test_gradcam import hand_grad_cam as grad_cam_by_hand

REPO = Path(__file__).resolve().parent.parent
IMAGES = (0, 1, 2, 3)  # MNIST test digits 7, 2, 1, 0


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return checkpoints.load_checkpoint(REPO / "trained" / "lenet5-mnist.safetensors").model


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), 64)


def image(split: data.Split, index: int) -> torch.Tensor:
    return inputs.model_input(split.images[index].numpy(), split.info)


def plain_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).eval()(x)


def input_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """∂ logit_target / ∂ x by one torch.autograd.grad call on a private copy."""
    own = copy.deepcopy(model).eval()
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(own(x)[:, target].sum(), x)
    return grad


def test_integrated_gradients_add_up_to_the_logit_difference(model, mnist_test) -> None:
    info = mnist_test.info
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    checked = 0
    for index in IMAGES[:2]:
        x = image(mnist_test, index)
        logits = plain_logits(model, x)[0]
        black = ((torch.zeros_like(x) - mean) / std).expand_as(x)  # pixel value 0
        for baseline, reference in (("black", black), ("mean", torch.zeros_like(x))):
            predicted = int(logits.argmax())
            # 50 steps suffice for the predicted class (a large logit difference); a class
            # whose logit barely moves along the path needs more (500: < 1 % on all of them).
            for target, steps in ((predicted, 50), ((predicted + 4) % 10, 500)):
                settings = attribution.Settings(baseline=baseline, steps=steps)
                result = attribution.explain(
                    model, x, info, "integrated-gradients", target=target, settings=settings
                )
                expected_base = float(plain_logits(model, reference)[0, target])
                difference = float(logits[target]) - expected_base
                assert result.logit == pytest.approx(float(logits[target]), abs=1e-5)
                assert result.baseline_logit == pytest.approx(expected_base, abs=1e-5)
                # Completeness: Σ attributions = f(x) − f(baseline) up to Captum's delta, which
                # is < 1 % of the difference with enough steps, or a few thousandths where the
                # logit barely moves (float32 sums of hundreds of gradients: measured 1e-4 to
                # 2e-3 at 500 to 2,000 steps, not shrinking further).
                assert result.attribution_sum - difference == pytest.approx(
                    result.convergence_delta, abs=1e-4
                )
                assert abs(result.convergence_delta) < max(0.01 * abs(difference), 5e-3)
                checked += 1
    assert checked == 8


def test_the_blurred_baseline_is_a_gaussian_blur_of_the_image(model, mnist_test) -> None:
    x = image(mnist_test, 0)
    blurred = attribution.baseline_images(x, mnist_test.info, "blur")
    sigma = 0.1 * 28
    radius = int(np.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(x, (radius,) * 4, mode="reflect")
    by_hand = F.conv2d(padded, (kernel[:, None] * kernel[None, :])[None, None])
    torch.testing.assert_close(blurred, by_hand, rtol=0, atol=1e-5)
    result = attribution.explain(
        model,
        x,
        mnist_test.info,
        "integrated-gradients",
        settings=attribution.Settings(baseline="blur", steps=100),
    )
    difference = result.logit - float(plain_logits(model, by_hand)[0, result.target])
    assert abs(result.attribution_sum - difference) < 0.01 * abs(difference)


def test_saliency_is_the_input_gradient(model, mnist_test) -> None:
    for index in IMAGES:
        x = image(mnist_test, index)
        for target in (None, 5):
            result = attribution.explain(model, x, mnist_test.info, "saliency", target=target)
            expected = input_gradient(model, x, result.target)[0]
            np.testing.assert_allclose(result.values, expected.numpy(), rtol=0, atol=1e-6)
            np.testing.assert_allclose(result.absolute, expected.abs().sum(0).numpy(), atol=1e-6)
            np.testing.assert_allclose(result.signed, expected.sum(0).numpy(), atol=1e-6)
        assert attribution.explain(model, x, mnist_test.info, "saliency").target == int(
            plain_logits(model, x).argmax()
        )


def test_smoothgrad_is_the_mean_gradient_under_the_same_noise(model, mnist_test) -> None:
    x = image(mnist_test, 2)
    settings = attribution.Settings(noise_samples=12, noise_level=0.2, seed=7)
    result = attribution.explain(model, x, mnist_test.info, "smoothgrad", settings=settings)
    sigma = 0.2 / mnist_test.info.std[0]  # 20 % of the pixel range in normalized units
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(7)  # Captum's NoiseTunnel draws one normal sample for all 12 copies
    noise = torch.normal(0.0, torch.full((12, 1, 28, 28), sigma))
    torch.random.set_rng_state(generator_state)
    noisy = x.repeat(12, 1, 1, 1) + noise
    expected = input_gradient(model, noisy, result.target).mean(dim=0)
    np.testing.assert_allclose(result.values, expected.numpy(), rtol=0, atol=1e-6)
    again = attribution.explain(model, x, mnist_test.info, "smoothgrad", settings=settings)
    np.testing.assert_array_equal(again.values, result.values)  # the seed fixes the noise


def test_occlusion_is_the_mean_drop_over_the_windows_by_hand(model, mnist_test) -> None:
    x = image(mnist_test, 1)
    info = mnist_test.info
    window, stride = attribution.occlusion_window((28, 28), attribution.Settings())
    assert (window, stride) == (4, 2)
    result = attribution.explain(model, x, info, "occlusion")
    target = result.target
    black = attribution.baseline_images(x, info, "black")
    base = float(plain_logits(model, x)[0, target])
    total = torch.zeros(28, 28, dtype=torch.float64)
    covered = torch.zeros(28, 28, dtype=torch.float64)
    batch = []
    positions = [(y, x0) for y in range(0, 28 - window + 1, stride) for x0 in range(0, 25, stride)]
    for y, x0 in positions:
        occluded = x.clone()
        rows, columns = slice(y, y + window), slice(x0, x0 + window)
        occluded[..., rows, columns] = black[..., rows, columns]
        batch.append(occluded)
    scores = plain_logits(model, torch.cat(batch))[:, target].double()
    for (y, x0), score in zip(positions, scores, strict=True):
        total[y : y + window, x0 : x0 + window] += base - score
        covered[y : y + window, x0 : x0 + window] += 1
    expected = torch.where(covered > 0, total / covered.clamp(min=1), 0)
    assert len(positions) == 13 * 13
    np.testing.assert_allclose(result.values[0], expected.numpy(), rtol=0, atol=1e-4)


def hand_grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> torch.Tensor:
    """The hand formula of the Grad-CAM tests, shaped as Captum's maps (1, 1, h, w)."""
    return grad_cam_by_hand(model, x, layer, target)[None, None]


def test_grad_cam_equals_the_formula_at_every_conv_block(model, mnist_test) -> None:
    flow = probe.shape_flow(model, (1, 28, 28))
    layers = attribution.cam_layers(flow)
    assert layers == LENET5_MAP_LAYERS
    assert attribution.default_layer(flow) == "features.relu2"  # the last block's output
    checked = 0
    for index in IMAGES[:3]:
        x = image(mnist_test, index)
        predicted = int(plain_logits(model, x).argmax())
        for layer in layers:
            settings = attribution.Settings(layer=layer)
            for target in (predicted, (predicted + 3) % 10):
                result = attribution.explain(
                    model, x, mnist_test.info, "grad-cam", target=target, settings=settings
                )
                cam = hand_grad_cam(model, x, layer, target)
                np.testing.assert_allclose(result.layer_map, cam[0, 0].numpy(), atol=1e-5)
                upsampled = F.interpolate(cam, (28, 28), mode="bilinear", align_corners=False)
                np.testing.assert_allclose(result.values, upsampled[0].numpy(), atol=1e-5)
                assert result.layer == layer
                checked += 1
    assert checked == 36


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


class _GuidedModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedReLU.apply(x)


def hand_guided_backprop(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    own = copy.deepcopy(model).eval()
    for name, module in list(own.named_modules()):
        if isinstance(module, nn.ReLU):
            parent_name, _, child = name.rpartition(".")
            setattr(own.get_submodule(parent_name), child, _GuidedModule())
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(own(x)[0, target], x)
    return grad


def test_guided_grad_cam_is_guided_backprop_times_grad_cam(model, mnist_test) -> None:
    for index in IMAGES[:2]:
        x = image(mnist_test, index)
        result = attribution.explain(model, x, mnist_test.info, "guided-grad-cam")
        cam = hand_grad_cam(model, x, "features.relu2", result.target)
        upsampled = F.interpolate(cam, (28, 28), mode="bilinear", align_corners=False)
        expected = hand_guided_backprop(model, x, result.target) * upsampled
        np.testing.assert_allclose(result.values, expected[0].numpy(), rtol=0, atol=1e-6)
        assert result.layer == "features.relu2"


def test_default_layers_of_the_shipped_architectures() -> None:
    expected = {
        "lenet5-mnist": "features.relu2",
        "course-net-mnist": "features.relu2",  # conv → pool → relu: past the pooling
        "bn-cnn-mnist": "features.relu1",  # past the batch norm
        "vgg13-small-cifar10": "features.relu5_2",
        "resnet18-small-cifar10": "layer4.1",  # the last BasicBlock: residual sum, ReLU
    }
    for name, layer in expected.items():
        loaded = checkpoints.load_checkpoint(REPO / "trained" / f"{name}.safetensors")
        flow = probe.shape_flow(loaded.model, loaded.card.input_shape)
        assert attribution.default_layer(flow) == layer, name


@pytest.mark.reads_data
def test_a_resnet_block_and_a_cifar_image_get_every_method() -> None:
    loaded = checkpoints.load_checkpoint(REPO / "trained" / "resnet18-small-cifar10.safetensors")
    # One real CIFAR-10 test image, read alone from the shipped sample (decoding the whole
    # test split would take most of this test's time).
    info = data.dataset_info("cifar10")
    picture = Image.open(REPO / "trained" / "data" / "cifar10-sample" / "test" / "cat" / "0000.jpg")
    x = inputs.model_input(data.preprocess_pil(picture, info).numpy(), info)
    # Few steps, noisy copies and occlusion windows: this checks shapes and layers, not values.
    quick = attribution.Settings(steps=8, noise_samples=4, window=8, stride=8)
    maps = attribution.explain_all(loaded.model, x, info, settings=quick)
    assert list(maps) == list(attribution.METHODS)
    for method, result in maps.items():
        channels = 1 if method == "grad-cam" else 3
        assert result.values.shape == (channels, 32, 32), method
        assert np.isfinite(result.values).all(), method
        assert np.abs(result.values).max() > 0, method  # every method found something
    assert maps["grad-cam"].layer_map.shape == (4, 4)  # layer4's 4×4 maps


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def test_the_shared_model_is_not_changed_by_any_method(model, mnist_test) -> None:
    shared = copy.deepcopy(model)
    shared.train()
    shared.classifier.eval()  # a mixed mode must come back exactly as it was
    shared.features.conv1.weight.requires_grad_(False)  # and so must a frozen parameter
    shared.features.relu1.inplace = True  # a ReLU in place stays in place
    before = snapshot(shared)
    x = image(mnist_test, 5)
    maps = attribution.explain_all(shared, x, mnist_test.info)
    reference = attribution.explain_all(copy.deepcopy(model).eval(), x, mnist_test.info)
    for method in attribution.METHODS:  # computed in eval mode regardless of the model's mode
        np.testing.assert_allclose(maps[method].values, reference[method].values, atol=1e-6)
    after = snapshot(shared)
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["inplace"] == before["inplace"]
    assert all(g is None for g in after["grads"])  # no parameter gradient was written
    assert hooks_left(shared) == 0


def test_bad_requests_are_one_line_lens_errors(model, mnist_test) -> None:
    x = image(mnist_test, 0)
    info = mnist_test.info
    with pytest.raises(LensError, match="unknown method"):
        attribution.explain(model, x, info, "lime")
    with pytest.raises(LensError, match="unknown baseline"):
        attribution.explain(model, x, info, "saliency", settings=attribution.Settings("white"))
    with pytest.raises(LensError, match="out of range"):
        attribution.explain(model, x, info, "saliency", target=10)
    with pytest.raises(LensError, match="no spatial output"):
        attribution.explain(
            model, x, info, "grad-cam", settings=attribution.Settings(layer="classifier.fc1")
        )
    with pytest.raises(LensError, match="no spatial output"):
        attribution.explain(
            model, x, info, "guided-grad-cam", settings=attribution.Settings(layer="flatten")
        )
    with pytest.raises(LensError, match="no layer"):
        attribution.explain(
            model, x, info, "grad-cam", settings=attribution.Settings(layer="features.nope")
        )
    with pytest.raises(LensError, match="one image"):
        attribution.explain(model, torch.cat([x, x]), info, "saliency")
    with pytest.raises(LensError, match="SmoothGrad averages"):
        attribution.Explainer(model, info, attribution.Settings(smooth_over="occlusion"))
    assert hooks_left(model) == 0
