"""analysis.feature_vis on the shipped checkpoints: optimized images excite their channel more
than any real test image does (same pixel range), class models are classified as their class,
results are reproducible by seed, and the shared model is left as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dashboard import data
from dashboard.analysis import atlas, feature_vis, probe
from dashboard.base.errors import LensError, ShapeError
from dashboard.models import checkpoints

TRAINED = Path(__file__).resolve().parent.parent / "trained"


def load(name: str) -> checkpoints.LoadedCheckpoint:
    return checkpoints.load_checkpoint(TRAINED / f"{name}.safetensors")


def normalized(images: np.ndarray, card: checkpoints.Card) -> torch.Tensor:
    m = torch.tensor(card.normalization["mean"]).view(1, -1, 1, 1)
    s = torch.tensor(card.normalization["std"]).view(1, -1, 1, 1)
    return (torch.from_numpy(images) - m) / s


@pytest.fixture(scope="module")
def lenet() -> checkpoints.LoadedCheckpoint:
    return load("lenet5-mnist")


@pytest.fixture(scope="module")
def conv2_visualization(
    lenet: checkpoints.LoadedCheckpoint, one_torch_thread: None
) -> feature_vis.FeatureVisualization:
    card = lenet.card
    return feature_vis.visualize_channels(
        lenet.model,
        "features.conv2",
        tuple(card.input_shape),
        card.normalization["mean"],
        card.normalization["std"],
    )


def test_every_channel_beats_its_best_test_image(
    lenet: checkpoints.LoadedCheckpoint,
    conv2_visualization: feature_vis.FeatureVisualization,
    shared_datasets: Path,
    one_torch_thread: None,
) -> None:
    """lenet5-mnist's conv2, all 16 channels: the image's mean activation exceeds the largest
    mean activation any of the 10,000 MNIST test images gives that channel."""
    vis = conv2_visualization
    assert vis.images.shape == (16, 1, 28, 28)
    assert vis.images.min() >= 0.0
    assert vis.images.max() <= 1.0  # the dataset's pixel range
    assert vis.units.tolist() == list(range(16))
    assert (int(vis.steps[0]), bool(vis.stopped[0])) == (256, False)
    # the objective reported, recomputed on the original model with an independent hook
    maps = probe.activations(lenet.model, normalized(vis.images, lenet.card), ["features.conv2"])
    own = maps["features.conv2"][torch.arange(16), torch.arange(16)].flatten(1)  # (16, 100)
    np.testing.assert_allclose(vis.objective, own.mean(1).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vis.maximum, own.amax(1).numpy(), rtol=1e-4, atol=1e-4)
    split = data.load_split("mnist", "test", data_root=shared_datasets)
    result = atlas.compute_atlas(lenet.model, split, "features.conv2", negatives=False)
    assert result.images == 10_000
    best_mean = result.means.max(axis=0)  # the best test image per channel, by the same measure
    assert (vis.objective > best_mean).all(), np.round(vis.objective - best_mean, 3)
    top = result.top_index[:, 0]  # the atlas's best example (by maximum) does not do better
    assert (vis.objective > result.means[top, np.arange(16)]).all()


def test_reproducible_by_seed_and_independent_of_the_batch(
    lenet: checkpoints.LoadedCheckpoint,
    conv2_visualization: feature_vis.FeatureVisualization,
    one_torch_thread: None,
) -> None:
    card = lenet.card
    args = (lenet.model, "features.conv2", (1, 28, 28), card.normalization["mean"],
            card.normalization["std"])  # fmt: skip
    alone = feature_vis.visualize_channels(*args, channels=[3, 11])
    np.testing.assert_allclose(alone.images, conv2_visualization.images[[3, 11]], atol=1e-4)
    again = feature_vis.visualize_channels(*args, channels=[3, 11])
    np.testing.assert_array_equal(alone.images, again.images)
    other = feature_vis.visualize_channels(
        *args, channels=[3, 11], settings=feature_vis.VisSettings(seed=1)
    )
    assert np.abs(other.images - alone.images).max() > 0.1


def test_progress_stop_and_the_shared_model_untouched(lenet: checkpoints.LoadedCheckpoint) -> None:
    model = lenet.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[int, int]] = []
    threads: list[int] = []
    previous = torch.get_num_threads()

    def progress(step: int, total: int) -> None:
        seen.append((step, total))
        threads.append(torch.get_num_threads())

    vis = feature_vis.visualize_channels(
        model,
        "features.relu1",
        (1, 28, 28),
        [0.1307],
        [0.3081],
        channels=[0, 5],
        settings=feature_vis.VisSettings(steps=20, threads=1),
        progress=progress,
        should_stop=lambda: len(seen) >= 7,
    )
    assert seen == [(k, 20) for k in range(1, 8)]
    assert set(threads) == {1}
    assert torch.get_num_threads() == previous
    assert (int(vis.steps[0]), bool(vis.stopped[0])) == (7, True)
    assert vis.images.shape == (2, 1, 28, 28)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    again = feature_vis.FeatureVisualization.from_arrays(vis.to_arrays())
    assert again.layer == "features.relu1"
    np.testing.assert_array_equal(again.images, vis.images)
    assert again.rgb().shape == (2, 28, 28, 3)


def test_class_models_are_classified_as_their_class(lenet: checkpoints.LoadedCheckpoint) -> None:
    """Simonyan et al.'s class model of every digit: the model gives it its class."""
    card = lenet.card
    vis = feature_vis.visualize_classes(
        lenet.model,
        (1, 28, 28),
        card.normalization["mean"],
        card.normalization["std"],
        settings=feature_vis.VisSettings(steps=128),
    )
    assert vis.layer == "classes"
    assert vis.images.shape == (10, 1, 28, 28)
    assert vis.images.min() >= 0.0
    assert vis.images.max() <= 1.0
    with torch.no_grad():
        logits = lenet.model.eval()(normalized(vis.images, card))
    assert logits.argmax(1).tolist() == list(range(10))
    np.testing.assert_allclose(vis.objective, logits.diagonal().numpy(), rtol=1e-4, atol=1e-3)


def test_rgb_channels_through_the_fourier_parameterization() -> None:
    """resnet18-small: conv1 → bn1 is read at bn1 (folded into conv1 in the private copy); the
    images stay in 0..1 and excite their channel more than the zero (mean) image does."""
    loaded = load("resnet18-small-cifar10")
    card = loaded.card
    mean, std = card.normalization["mean"], card.normalization["std"]
    vis = feature_vis.visualize_channels(
        loaded.model, "layer1.0.conv1", (3, 32, 32), mean, std, channels=[0, 1, 2],
        settings=feature_vis.VisSettings(steps=64),
    )  # fmt: skip
    assert vis.images.shape == (3, 3, 32, 32)
    assert 0.0 <= vis.images.min() < vis.images.max() <= 1.0
    maps = probe.activations(loaded.model, normalized(vis.images, card), ["layer1.0.bn1"])
    own = maps["layer1.0.bn1"][torch.arange(3), torch.arange(3)].flatten(1).mean(1)
    np.testing.assert_allclose(vis.objective, own.numpy(), rtol=1e-3, atol=1e-3)
    grey = normalized(np.full((1, 3, 32, 32), 0.5, dtype=np.float32), card)
    flat = probe.activations(loaded.model, grey, ["layer1.0.bn1"])["layer1.0.bn1"][0, :3]
    assert (vis.objective > flat.flatten(1).mean(1).numpy() + 0.5).all()


def test_fourier_image_starts_grey_and_colours_decorrelate() -> None:
    zero = torch.zeros((2, *feature_vis._FourierImage.init_shape(3, 8, 10)))
    image = feature_vis._FourierImage(zero, 8, 10, decay_power=1.0)()
    assert image.shape == (2, 3, 8, 10)
    torch.testing.assert_close(image, torch.full_like(image, 0.5))
    assert np.linalg.norm(feature_vis.COLOR_CORRELATION, axis=0).max() == pytest.approx(1.0)
    # the spectrum's amplitude scale falls as 1 / frequency (clamped at the lowest one)
    freqs = feature_vis._frequencies(8, 10)
    assert freqs[0, 0] == 0
    assert freqs[0, 1] == pytest.approx(0.1)
    assert freqs[4, 0] == pytest.approx(0.5)


def test_total_variation_by_hand() -> None:
    image = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    # vertical differences 1, 0 → mean 0.5; horizontal 1, 0 → mean 0.5
    assert feature_vis._total_variation(image).tolist() == [1.0]


def test_bad_units_and_layers() -> None:
    loaded = load("lenet5-mnist")
    with pytest.raises(LensError, match=r"channels must lie in 0\.\.5"):
        feature_vis.visualize_channels(loaded.model, "features.conv1", (1, 28, 28), [0.1], [0.3],
                                       channels=[6])  # fmt: skip
    with pytest.raises(ShapeError, match="breaks"):
        feature_vis.visualize_classes(loaded.model, (1, 20, 20), [0.1], [0.3])


def test_frozen_copy_needs_no_gradient_for_weights() -> None:
    model = load("bn-cnn-mnist").model
    private = feature_vis.frozen_copy(model, (1, 28, 28))
    assert private is not model
    assert not any(p.requires_grad for p in private.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(private, nn.Module)
