"""dashboard.analysis.atlas on the shipped checkpoints and real MNIST / CIFAR-10 test images: top-k
against a plain forward pass per image, crop boxes against the gradient support in an
all-positive copy of the model, class selectivity against the formula by hand."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dashboard import data
from dashboard.analysis import atlas, probe
from dashboard.base.errors import LensError, UnknownNameError
from dashboard.data import batches
from dashboard.models import checkpoints

TRAINED = Path(__file__).resolve().parent.parent / "trained"
IMAGES = 300  # real test images per split: enough for ties to be rare and top-9 to mean much


def load(name: str) -> nn.Module:
    return checkpoints.load_checkpoint(TRAINED / f"{name}.safetensors").model


@pytest.fixture(scope="module")
def mnist(shared_datasets: Path) -> data.Split:
    return data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), IMAGES)


@pytest.fixture(scope="module")
def cifar(shared_datasets: Path) -> data.Split:
    split = data.load_split("cifar10", "test", data_root=shared_datasets)
    return data.subset(split, torch.arange(0, len(split), len(split) // 200))  # every class


def brute_force(model: nn.Module, split: data.Split, tap: atlas.Tap) -> np.ndarray:
    """(N, C, H·W) of the tapped tensor, one plain forward pass per image with a hook."""
    module = dict(model.named_modules())[tap.module]
    maps: list[torch.Tensor] = []
    calls: list[torch.Tensor] = []

    def keep(_: nn.Module, args: tuple, output: torch.Tensor | None = None) -> None:
        calls.append((output if tap.side == "output" else args[0]).detach().clone())

    handle = (
        module.register_forward_hook(keep)
        if tap.side == "output"
        else module.register_forward_pre_hook(keep)
    )
    m, s = batches._channel_constants(split.info.mean, split.info.std, "cpu")
    try:
        with torch.no_grad():
            for i in range(len(split)):
                calls.clear()
                model(((split.images[i].float() / 255 - m) / s)[None])  # (1, C, H, W)
                maps.append(calls[tap.call_index][0].flatten(1))
    finally:
        handle.remove()
    return torch.stack(maps).numpy()


LENET_AND_COURSE = [
    ("lenet5-mnist", layer) for layer in ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2")
] + [
    ("course-net-mnist", layer) for layer in ("conv1", "pool1", "relu1", "conv2", "pool2", "relu2")
]


@pytest.mark.parametrize(("name", "short"), LENET_AND_COURSE)
def test_top_k_equals_a_forward_pass_per_image(
    name: str, short: str, mnist: data.Split, one_torch_thread: None
) -> None:
    model = load(name)
    layer = f"features.{short}"
    result = atlas.compute_atlas(model, mnist, layer, top=9, batch_size=64)
    # No batch norm in these nets: a conv's values are its own output.
    maps = brute_force(model, mnist, atlas.Tap(layer, 0, "output"))  # (N, C, P)
    maxima = maps.max(axis=2)
    assert result.maxima.shape == maxima.shape == (IMAGES, maps.shape[1])
    np.testing.assert_allclose(result.maxima, maxima, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.means, maps.mean(axis=2), rtol=1e-5, atol=1e-5)
    for c in range(maps.shape[1]):
        expected = np.sort(maxima[:, c])[::-1][:9]
        np.testing.assert_allclose(result.top_value[c], expected, rtol=1e-5, atol=1e-5)
        for k, example in enumerate(result.top(c)):
            # the image named has that maximum (ties aside: any image with the value will do)
            assert maxima[example.index, c] == pytest.approx(expected[k], abs=1e-5)
            y, x = example.position
            assert maps[example.index, c, y * result.map_width + x] == pytest.approx(
                maxima[example.index, c], abs=1e-5
            )
    np.testing.assert_allclose(result.dead_share, (maxima <= 0).mean(axis=0), atol=1e-7)
    if short.startswith("relu"):  # most negative: the ReLU's input
        before = brute_force(model, mnist, atlas.Tap(layer, 0, "input")).min(axis=2)
    else:
        before = maps.min(axis=2)
    np.testing.assert_allclose(result.minima, before, rtol=1e-5, atol=1e-5)
    for c in range(maps.shape[1]):
        np.testing.assert_allclose(
            result.bottom_value[c], np.sort(before[:, c])[:9], rtol=1e-5, atol=1e-5
        )


def test_a_conv_followed_by_batch_norm_is_read_after_it(mnist: data.Split) -> None:
    """bn-cnn: conv1 → bn1 → relu1; the values are bn1's (the inference copy folds bn1 into
    conv1: the same numbers up to rounding)."""
    model = load("bn-cnn-mnist")
    plan = atlas.plan_layer(model, "features.conv1")
    assert plan.values == atlas.Tap("features.bn1", 0, "output")
    assert plan.activation == "features.relu1"
    assert plan.description == "features.conv1 → features.bn1, before features.relu1"
    sample = data.take_first(mnist, 64)
    result = atlas.compute_atlas(model, sample, "features.conv1")
    expected = brute_force(model, sample, plan.values).max(axis=2)
    np.testing.assert_allclose(result.maxima, expected, rtol=1e-4, atol=1e-4)
    assert result.activation == "features.relu1"


def test_resnet_plans_residual_blocks_and_reused_modules() -> None:
    model = load("resnet18-small-cifar10")
    conv2 = atlas.plan_layer(model, "layer1.0.conv2")  # bn2, then the residual sum: no activation
    assert conv2.values == atlas.Tap("layer1.0.bn2", 0, "output")
    assert conv2.activation is None
    stem = atlas.plan_layer(model, "conv1")
    assert (stem.values.module, stem.activation) == ("bn1", "relu")
    relu = atlas.plan_layer(model, "layer4.1.relu2")
    assert relu.before == atlas.Tap("layer4.1.relu2", 0, "input")
    import torchvision

    tv = torchvision.models.resnet18()  # torchvision reuses one ReLU module per block
    second = atlas.plan_layer(tv, "layer1.0.relu#1")
    assert second.values == atlas.Tap("layer1.0.relu", 1, "output")
    assert atlas.plan_layer(tv, "layer1.0.conv1").activation == "layer1.0.relu"
    with pytest.raises(UnknownNameError, match="no layer named"):
        atlas.plan_layer(model, "layer9.conv")


def test_reused_module_call_is_read_on_its_own_call(cifar: data.Split) -> None:
    """torchvision's BasicBlock runs self.relu twice: "#1" is the call after the residual sum."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    sample = data.take_first(cifar, 16)
    result = atlas.compute_atlas(model, sample, "layer1.0.relu#1", negatives=False)
    expected = brute_force(model, sample, atlas.Tap("layer1.0.relu", 1, "output")).max(axis=2)
    np.testing.assert_allclose(result.maxima, expected, rtol=1e-4, atol=1e-4)
    first = atlas.compute_atlas(model, sample, "layer1.0.relu", negatives=False)
    assert not np.allclose(first.maxima, result.maxima)


# ---------------------------------------------------------------------------------------------
# Receptive fields


def positive_copy(model: nn.Module) -> nn.Module:
    """Every weight positive, batch norm an identity-like positive scale, max pooling turned
    into average pooling: every input pixel inside a receptive field then has a positive
    gradient, and every pixel outside has none."""
    positive = copy.deepcopy(model).double().eval()
    for module in positive.modules():
        for p in module.parameters(recurse=False):
            p.data = p.data.abs() + 0.01
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
    for parent in positive.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                pool = nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode)
                setattr(parent, child_name, pool)
    return positive


def gradient_support(model: nn.Module, tap: atlas.Tap, shape: tuple[int, ...], y: int, x: int):
    """Rows and columns of the input pixels whose gradient is non-zero for output (y, x) of
    channel 0; the forward pass stops at the layer, so any input size goes."""
    image = torch.ones((1, *shape), dtype=torch.float64, requires_grad=True)
    kept: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> None:
        kept.append(tensor)

    with atlas.tapped(model, {tap: keep}) as run:
        run(image)
    kept[0][0, 0, y, x].backward()
    support = image.grad[0].abs().sum(0) > 0
    rows, cols = torch.nonzero(support, as_tuple=True)
    top, left, bottom, right = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    assert bool(support[top:bottom, left:right].all()), "the support is not a rectangle"
    return int(top), int(left), int(bottom), int(right)


@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("lenet5-mnist", ["features.conv1", "features.pool1", "features.conv2", "features.pool2"]),
        ("course-net-mnist", ["features.relu1", "features.conv2", "features.relu2"]),
        (
            "resnet18-small-cifar10",
            [
                "conv1",
                "layer1.0.conv2",
                "layer2.0.conv1",
                "layer2.0.relu2",
                "layer3.1.conv2",
                "layer4.0.relu2",
            ],
        ),
    ],
)
def test_crop_box_equals_the_gradient_support(name: str, layers: list[str]) -> None:
    model = load(name)
    positive = positive_copy(model)
    input_shape = tuple(checkpoints.read_card(TRAINED / f"{name}.json").input_shape)
    flow = probe.shape_flow(model, input_shape)
    for layer in layers:
        record = flow.find(layer)
        rf, jump, start = atlas.geometry(record, input_shape[1:])
        H, W = record.output_shape[1:]
        tap = atlas.plan_layer(model, layer).values
        for y, x in {(0, 0), (H // 2, W // 3), (H - 1, W - 1), (0, W - 1)}:
            top, left, bottom, right = atlas.box(rf, jump, start, y, x)
            clipped = (max(top, 0), max(left, 0), min(bottom, input_shape[1]),
                       min(right, input_shape[2]))  # fmt: skip
            assert gradient_support(positive, tap, input_shape, y, x) == clipped, (layer, y, x)
            # The part outside the image: the same layer on an image with a margin of whole
            # steps around it (the geometry does not depend on the image size).
            steps = -(-int(rf.max()) // int(jump.max()))
            margin = steps * int(jump.max())
            bigger = (input_shape[0], input_shape[1] + 2 * margin, input_shape[2] + 2 * margin)
            found = gradient_support(positive, tap, bigger, y + steps, x + steps)
            assert found == (top + margin, left + margin, bottom + margin, right + margin)


def test_box_of_the_atlas_examples(mnist: data.Split) -> None:
    result = atlas.compute_atlas(load("lenet5-mnist"), data.take_first(mnist, 50), "features.conv2")
    # conv1 5×5 pad 2 → pool 2 → conv2 5×5: rf 14, jump 2, start −2
    assert (tuple(result.rf), tuple(result.jump), tuple(result.start)) == (
        (14, 14),
        (2, 2),
        (-2, -2),
    )
    assert result.box(0, 0) == (-2, -2, 12, 12)
    assert result.box(9, 3) == (16, 4, 30, 18)
    assert (result.map_height, result.map_width) == (10, 10)


def test_crop_draws_the_outside_as_a_checkerboard() -> None:
    image = np.arange(1, 26, dtype=np.uint8).reshape(1, 5, 5)
    out = atlas.crop(image, (-2, 3, 2, 7), cell=1)  # rows −2..1, columns 3..6
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[2:, :2, 0], image[0, 0:2, 3:5])
    np.testing.assert_array_equal(out[2:, :2, 1], image[0, 0:2, 3:5])  # gray → RGB
    outside = np.ones((4, 4), dtype=bool)
    outside[2:, :2] = False
    assert set(np.unique(out[outside])) <= set(atlas.PADDING_GREYS)
    assert out[0, 0, 0] != out[0, 1, 0]  # a checkerboard, not a flat fill
    rgb = np.stack([image[0], image[0] * 2, image[0] * 3])
    np.testing.assert_array_equal(atlas.crop(rgb, (0, 0, 5, 5)).transpose(2, 0, 1), rgb)


# ---------------------------------------------------------------------------------------------
# Statistics by hand


def test_selectivity_index_by_hand() -> None:
    # 5 images of classes 0, 0, 1, 1, 2 and 3 channels (maxima; negatives count as 0)
    labels = np.array([0, 0, 1, 1, 2])
    maxima = np.array(
        [
            [4.0, 1.0, -1.0],
            [2.0, 1.0, -2.0],
            [1.0, 1.0, -1.0],
            [0.0, 1.0, -3.0],
            [-1.0, 1.0, -1.0],
        ]
    )
    means = atlas.class_means(np.maximum(maxima, 0), labels, num_classes=4)
    # channel 0: class means 3, 0.5, 0; class 3 has no image
    np.testing.assert_allclose(means[0, :3], [3.0, 0.5, 0.0])
    assert np.isnan(means[0, 3])
    index = atlas.selectivity_index(means)
    # μmax = 3, μ−max = (0.5 + 0) / 2 = 0.25 → (3 − 0.25) / (3 + 0.25) = 11 / 13
    assert index[0] == pytest.approx(11 / 13)
    assert index[1] == 0.0  # the same for every class
    assert index[2] == 0.0  # never fires
    np.testing.assert_allclose(atlas.dead_share(maxima), [0.4, 0.0, 1.0])


def test_top_k_order_and_ties() -> None:
    values = np.array([[1.0], [3.0], [3.0], [2.0], [0.0]])
    np.testing.assert_array_equal(atlas.top_k(values, 3), [[1, 2, 3]])
    np.testing.assert_array_equal(atlas.top_k(values, 9), [[1, 2, 3, 0, 4]])


def test_histograms_cover_every_maximum() -> None:
    rng = np.random.default_rng(0)
    maxima = rng.normal(size=(500, 3)).astype(np.float32)
    maxima[:, 2] = 1.5  # one value only
    counts, edges = atlas.histograms(maxima, 10)
    assert counts.sum(axis=1).tolist() == [500, 500, 500]
    assert edges[0, 0] == maxima[:, 0].min()
    assert edges[0, -1] == pytest.approx(maxima[:, 0].max())
    assert (edges[2, 0], edges[2, -1]) == (1.0, 2.0)


def test_histograms_leave_out_non_finite_maxima() -> None:
    maxima = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, np.inf], [2.0, np.nan]])
    counts, edges = atlas.histograms(maxima.astype(np.float32), 4)
    assert counts.sum(axis=1).tolist() == [3, 0]
    assert (edges[0, 0], edges[0, -1]) == (1.0, 3.0)
    assert np.isfinite(edges).all()


# ---------------------------------------------------------------------------------------------
# Records, progress, stop, and the shared model


def test_arrays_round_trip_and_json_record(mnist: data.Split) -> None:
    model = load("lenet5-mnist")
    sample = data.take_first(mnist, 40)
    seen: list[tuple[int, int]] = []
    result = atlas.compute_atlas(
        model,
        sample,
        "features.pool1",
        top=4,
        batch_size=16,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(16, 40), (32, 40), (40, 40)]
    arrays = result.to_arrays()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    again = atlas.ChannelAtlas.from_arrays(arrays)
    for field in arrays:
        a, b = getattr(result, field), getattr(again, field)
        assert np.array_equal(a, b, equal_nan=True) if isinstance(a, np.ndarray) else a == b
    record = atlas.to_json(result)
    assert (record["layer"], record["split"], record["images"]) == ("features.pool1", "test", 40)
    assert len(record["channels"]) == 6
    first = record["channels"][0]
    assert set(first) == {"channel", "top", "selectivity", "dead_share"}
    assert len(first["top"]) == 4
    example = first["top"][0]
    y, x = example["position"]
    assert example["box"] == list(result.box(y, x))
    assert example["activation"] == pytest.approx(
        float(result.maxima[example["index"], 0]), abs=1e-5
    )
    without = atlas.compute_atlas(model, sample, "features.pool1", negatives=False)
    assert "minima" not in without.to_arrays()
    with pytest.raises(LensError, match="without the most negative"):
        without.bottom(0)


def test_stop_and_the_shared_model_untouched(mnist: data.Split) -> None:
    model = load("lenet5-mnist").train()
    grads = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(atlas.StoppedError, match="stopped after 0 of 40"):
        atlas.compute_atlas(
            model, data.take_first(mnist, 40), "features.conv2", should_stop=lambda: True
        )
    atlas.compute_atlas(model, data.take_first(mnist, 40), "features.conv2")
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layers_offered_and_refused(mnist: data.Split) -> None:
    model = load("course-net-mnist")
    flow = probe.shape_flow(model, (1, 28, 28))
    assert atlas.atlas_layers(model, flow) == [
        f"features.{n}" for n in ("conv1", "pool1", "relu1", "conv2", "pool2", "relu2")
    ]
    result = atlas.compute_atlas(model, data.take_first(mnist, 20), "classifier.fc")
    assert result.maxima.shape == (20, 10)  # a linear layer's units: one "position" each
    assert result.box(0, 0) == (0, 0, 28, 28)
