"""Representations: blocks, features, probes and CKA, checked against independent computations
on real shipped checkpoints and real MNIST / CIFAR-10 images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dashboard import data, models
from dashboard.analysis import metrics
from dashboard.analysis import representations as rep
from dashboard.base import cache
from dashboard.base.errors import LensError, ShapeError
from dashboard.models import checkpoints

TRAINED = Path(__file__).resolve().parent.parent / "trained"


@pytest.fixture(scope="module")
def lenet5() -> nn.Module:
    return checkpoints.load_checkpoint(TRAINED / "lenet5-mnist.safetensors").model


@pytest.fixture(scope="module")
def mnist(shared_datasets: Path) -> dict[str, data.Split]:
    return {s: data.load_split("mnist", s, data_root=shared_datasets) for s in ("train", "test")}


def _call_order(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Every module call of one forward pass, in order, as probe keys ("relu#1" for repeats)."""
    order: list[str] = []
    counts: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():

        def hook(module: nn.Module, args: tuple, output: object, name: str = name) -> None:
            counts[name] = counts.get(name, 0) + 1
            order.append(name if counts[name] == 1 else f"{name}#{counts[name] - 1}")

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return order


def _plain_features(
    model: nn.Module, split: data.Split, module: str, *, capture: str = "output"
) -> np.ndarray:
    """A block's features the plain way: one hook on the model itself, batches of 100, the
    spatial mean of conv maps; independent of extract_features' copy, layout and bookkeeping."""
    layer = dict(model.named_modules())[module]
    got: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> None:
        got.append(tensor.mean(dim=(2, 3)) if tensor.dim() == 4 else tensor.flatten(1))

    if capture == "output":
        handle = layer.register_forward_hook(lambda m, i, o: keep(o))
    else:
        handle = layer.register_forward_pre_hook(lambda m, i: keep(i[0]))
    try:
        with torch.no_grad():
            for x, _ in data.iterate_batches(split, 100, shuffle=False):
                model(x)
    finally:
        handle.remove()
    return torch.cat(got).numpy()


# ---------------------------------------------------------------------------------------------
# Blocks


def test_lenet5_blocks_are_its_stages_in_forward_order(lenet5: nn.Module) -> None:
    blocks = rep.model_blocks(lenet5, (1, 28, 28))
    stages = [f"features.{name}" for name in ("conv1", "pool1", "conv2", "pool2")]
    assert [b.name for b in blocks] == stages + [f"classifier.fc{i}" for i in (1, 2, 3)]
    conv1 = blocks[0]  # read after its ReLU, named by its conv
    assert (conv1.module, conv1.shape, conv1.features(), conv1.features(flatten=True)) == (
        "features.relu1",
        (6, 28, 28),
        6,
        6 * 28 * 28,
    )
    assert conv1.through == ("features.conv1", "features.relu1")
    assert [b.features() for b in blocks] == [6, 6, 16, 16, 120, 84, 10]
    layers, default = rep.projector_layers(lenet5, (1, 28, 28))
    # fc3's input is fc2's block output (after its ReLU): no separate layer, fc2 is the default
    assert (layers, default) == (blocks, "classifier.fc2")


@pytest.mark.parametrize(
    ("name", "first", "default", "default_features"),
    [
        ("course-net", "features.conv1", "classifier.fc:input", 320),
        ("bn-cnn", "features.conv1", "classifier.fc2", 30),
        ("simple-convnet", "features.conv1", "classifier.fc1", 100),
        ("alexnet-small", "features.conv1", "classifier.fc2", 128),
        ("vgg13-small", "features.conv1_1", "classifier.fc2", 128),
        ("resnet18-small", "conv1", "avgpool", 128),
        ("tv:resnet18", "conv1", "avgpool", 512),
        ("tv:mobilenet_v2", "features.0.0", "classifier.1:input", 1280),
        ("tv:squeezenet1_0", "features.0", "features.12", 512),
    ],
)
def test_blocks_follow_the_real_forward_pass(
    name: str, first: str, default: str, default_features: int
) -> None:
    model = models.build_model(name)
    shape = models.model_info(name).input_shape
    layers, chosen = rep.projector_layers(model, shape)
    blocks = [b for b in layers if b.capture == "output"]
    assert blocks == rep.model_blocks(model, shape)
    assert blocks[0].name == first
    assert rep.find_block(layers, chosen).features() == default_features
    assert chosen == default
    # Every block's hooked module is called, and in the order the blocks are listed.
    order = _call_order(model, shape)
    positions = [order.index(b.module) for b in blocks]
    assert positions == sorted(positions)
    # The last block is the last layer: its output is the logits.
    assert blocks[-1].features() == models.model_info(name).num_classes


def test_resnet_blocks_are_its_residual_units() -> None:
    model = models.build_model("resnet18-small")
    names = [b.name for b in rep.model_blocks(model, (3, 32, 32))]
    units = [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    assert names == ["conv1", *units, "avgpool", "fc"]
    block = rep.find_block(rep.model_blocks(model, (3, 32, 32)), "layer2.0")
    assert (block.kind, block.shape) == ("BasicBlock", (32, 16, 16))


def test_a_model_that_cannot_take_the_input_says_where() -> None:
    with pytest.raises(ShapeError, match=r"classifier\.fc"):
        rep.model_blocks(models.build_model("course-net"), (1, 32, 32))


# ---------------------------------------------------------------------------------------------
# Features


def test_features_equal_a_plain_hook_and_predictions_equal_predict(
    lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    chosen = rep.sample_indices(len(mnist["test"]), 600)
    blocks = rep.model_blocks(lenet5, (1, 28, 28))
    seen: list[float] = []
    features = rep.extract_features(
        lenet5, mnist["test"], blocks, indices=chosen, on_progress=lambda f, _: seen.append(f)
    )
    images = data.subset(mnist["test"], torch.as_tensor(chosen))
    for block in blocks:
        expected = _plain_features(lenet5, images, block.module)
        assert features.layers[block.name].dtype == np.float32
        np.testing.assert_allclose(features.layers[block.name], expected, rtol=1e-5, atol=1e-5)
    predicted = metrics.predict(lenet5, images)
    np.testing.assert_array_equal(features.predicted, predicted.predicted)
    np.testing.assert_array_equal(features.labels, images.labels.numpy())
    np.testing.assert_array_equal(features.indices, chosen)
    assert features.accuracy == pytest.approx(predicted.accuracy)
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert not lenet5.training  # the shared model is left as it was


def test_flattened_features_and_the_last_linear_input(
    mnist: dict[str, data.Split],
) -> None:
    model = checkpoints.load_checkpoint(TRAINED / "course-net-mnist.safetensors").model
    layers, default = rep.projector_layers(model, (1, 28, 28))
    head, pool2 = rep.find_block(layers, default), rep.find_block(layers, "features.pool2")
    images = data.take_first(mnist["test"], 300)
    flat = rep.extract_features(model, images, [pool2, head], flatten=True)
    plain_input = _plain_features(model, images, "classifier.fc", capture="input")
    np.testing.assert_allclose(flat.layers[head.name], plain_input, rtol=1e-5, atol=1e-5)
    # fc's input is the flattened pool2 block: the same 320 numbers per image
    np.testing.assert_allclose(flat.layers["features.pool2"], plain_input, rtol=1e-5, atol=1e-5)
    assert flat.layers["features.pool2"].shape == (300, 320)


def test_features_round_trip_through_plain_arrays(
    lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    blocks = rep.model_blocks(lenet5, (1, 28, 28))[::-1]  # an order a sorted store would lose
    features = rep.extract_features(lenet5, data.take_first(mnist["test"], 50), blocks)
    arrays = features.to_arrays()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    back = rep.Features.from_arrays(dict(sorted(arrays.items())))
    assert list(back.layers) == [b.name for b in blocks]
    for name, values in features.layers.items():
        np.testing.assert_array_equal(back.layers[name], values)
    np.testing.assert_array_equal(back.predicted, features.predicted)
    assert back.flatten is False


def test_cached_features_are_computed_once_and_read_back_from_disk(
    lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    blocks = rep.model_blocks(lenet5, (1, 28, 28))
    chosen = rep.sample_indices(len(mnist["test"]), 200)
    model_id = cache.checkpoint_digest(TRAINED / "lenet5-mnist.safetensors", "lenet5", {})
    runs: list[float] = []

    def features(indices: np.ndarray = chosen) -> rep.Features:
        return rep.cached_features(
            lenet5,
            model_id,
            mnist["test"],
            blocks,
            indices=indices,
            on_progress=lambda fraction, _: runs.append(fraction),
        )

    first = features()
    ran = len(runs)
    cache.clear_memory()  # the next call must find it on disk
    again = features()
    assert len(runs) == ran > 0  # the pass ran once
    assert list(cache.results_dir().joinpath(rep.FEATURES_KIND).glob("*.safetensors"))
    plain = rep.extract_features(lenet5, mnist["test"], blocks, indices=chosen)
    for found in (first, again):
        assert list(found.layers) == list(plain.layers)
        for name, values in plain.layers.items():
            np.testing.assert_array_equal(found.layers[name], values)
        np.testing.assert_array_equal(found.predicted, plain.predicted)
        np.testing.assert_array_equal(found.indices, chosen)
    other = features(chosen[:100])  # other images are another entry
    assert len(runs) > ran
    np.testing.assert_array_equal(other.layers[blocks[0].name], plain.layers[blocks[0].name][:100])


def test_too_many_flattened_features_ask_for_fewer_images(
    lenet5: nn.Module, mnist: dict[str, data.Split], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rep, "MAX_FEATURE_BYTES", 1024**2)
    conv1 = rep.model_blocks(lenet5, (1, 28, 28))[0]
    with pytest.raises(LensError, match="fewer images or pooled features"):
        rep.extract_features(lenet5, mnist["test"], [conv1], flatten=True)


def test_a_sample_of_a_class_sorted_folder_holds_every_class(shared_datasets: Path) -> None:
    test = data.load_split("cifar10", "test", data_root=shared_datasets)
    chosen = rep.sample_indices(len(test), 500)
    assert len(np.unique(test.labels.numpy()[chosen])) == 10
    assert len(np.unique(test.labels.numpy()[:100])) == 1  # the first images hold one class
    np.testing.assert_array_equal(chosen, rep.sample_indices(len(test), 500))
    assert (np.diff(chosen) > 0).all()
    np.testing.assert_array_equal(rep.sample_indices(7, 50), np.arange(7))


# ---------------------------------------------------------------------------------------------
# Probes


@pytest.fixture(scope="module")
def lenet5_probe_sets(
    lenet5: nn.Module, mnist: dict[str, data.Split]
) -> tuple[rep.Features, rep.Features]:
    blocks = rep.model_blocks(lenet5, (1, 28, 28))
    train = rep.extract_features(
        lenet5, mnist["train"], blocks, indices=rep.sample_indices(len(mnist["train"]), 1000)
    )
    test = rep.extract_features(
        lenet5, mnist["test"], blocks, indices=rep.sample_indices(len(mnist["test"]), 600)
    )
    return train, test


def test_probes_equal_scikit_learn_on_plain_hook_features(
    lenet5: nn.Module,
    mnist: dict[str, data.Split],
    lenet5_probe_sets: tuple[rep.Features, rep.Features],
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = lenet5_probe_sets
    report = rep.probe_layers(train, test)
    assert [p.layer for p in report.layers] == list(test.layers)
    train_images = data.subset(mnist["train"], torch.as_tensor(train.indices))
    test_images = data.subset(mnist["test"], torch.as_tensor(test.indices))
    y_train, y_test = train_images.labels.numpy(), test_images.labels.numpy()
    blocks = {b.name: b for b in rep.model_blocks(lenet5, (1, 28, 28))}
    for record in report.layers[2:5]:  # conv2, pool2, fc1: three kinds of block
        module = blocks[record.layer].module
        x_train = _plain_features(lenet5, train_images, module)
        x_test = _plain_features(lenet5, test_images, module)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        # Features equal to float32 rounding (channels-last copy vs plain hook) can move lbfgs'
        # answer on one borderline image, no more.
        expected = probe.fit(x_train, y_train).score(x_test, y_test)
        assert abs(record.probe_accuracy - expected) <= 1 / len(y_test) + 1e-12
        knn = KNeighborsClassifier(10, metric="cosine", algorithm="brute").fit(x_train, y_train)
        assert record.knn_accuracy == pytest.approx(knn.score(x_test, y_test), abs=1e-12)
        rows = rep.sample_indices(len(x_test), rep.SILHOUETTE_SAMPLE)
        expected = silhouette_score(x_test[rows], y_test[rows])
        assert record.silhouette == pytest.approx(expected, abs=1e-5)
        assert record.features == x_test.shape[1]
    own = metrics.predict(lenet5, test_images).accuracy
    assert report.model_accuracy == pytest.approx(own)
    last = report.layers[-1]
    assert abs(last.probe_accuracy - own) <= 0.03  # the logits' probe is the model, nearly
    assert report.layers[0].probe_accuracy < last.probe_accuracy  # and depth separates
    assert (report.train_images, report.test_images) == (1000, 600)


def test_probe_json_is_strict(lenet5_probe_sets: tuple[rep.Features, rep.Features]) -> None:
    import json

    train, test = lenet5_probe_sets
    one_class = rep.Features(
        {k: v[test.labels == 3] for k, v in test.layers.items()},
        test.indices[test.labels == 3],
        test.labels[test.labels == 3],
        test.predicted[test.labels == 3],
        flatten=False,
    )
    report = rep.probe_layers(train, one_class)
    assert all(p.silhouette is None for p in report.layers)  # one class: undefined, not NaN
    text = json.dumps(report.to_json(), allow_nan=False)
    assert set(json.loads(text)) == {"layers", "model_accuracy", "train_images", "test_images"}


def test_probes_need_two_classes_to_learn(
    lenet5_probe_sets: tuple[rep.Features, rep.Features],
) -> None:
    train, test = lenet5_probe_sets
    keep = train.labels == 1
    only_ones = rep.Features(
        {k: v[keep] for k, v in train.layers.items()},
        train.indices[keep],
        train.labels[keep],
        train.predicted[keep],
        flatten=False,
    )
    with pytest.raises(LensError, match="one class"):
        rep.probe_layers(only_ones, test)


# ---------------------------------------------------------------------------------------------
# Linear CKA


def test_cka_by_hand_on_a_small_example() -> None:
    # One feature each: linear CKA is the squared correlation. Centered x = (−1, 0, 1) and
    # y = (1, 4, 9) − 14/3 = (−11, −2, 13)/3: (x·y)² / (|x|² |y|²) = 8² / (2 · 294/9) = 48/49.
    x = np.array([[1.0], [2.0], [3.0]])
    y = np.array([[1.0], [4.0], [9.0]])
    assert rep.linear_cka(x, y) == pytest.approx(48 / 49, abs=1e-12)
    # Two features against one, worked through ‖YᵀX‖² / (‖XᵀX‖ ‖YᵀY‖) with centered
    # X = [[−1, −1], [0, 2], [1, −1]] and y = (−1, 0, 1): YᵀX = (2, 0); XᵀX = [[2, 0], [0, 6]].
    x2 = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, 0.0]])
    assert rep.linear_cka(x2, x) == pytest.approx(4 / (math.sqrt(40) * 2), abs=1e-12)


def test_cka_is_one_on_itself_and_invariant_to_rotation_and_scale(
    lenet5_probe_sets: tuple[rep.Features, rep.Features],
) -> None:
    _, test = lenet5_probe_sets
    x = test.layers["classifier.fc1"][:500].astype(np.float64)
    y = test.layers["features.conv2"][:500].astype(np.float64)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))  # orthogonal
    assert rep.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = rep.linear_cka(x, y)
    assert 0 < base < 1
    assert rep.linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert rep.linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    assert rep.linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-10)  # centering
    # Many more features than images: the Gram-matrix form gives the same number.
    wide = np.hstack([x[:40]] * 4)  # 40 images × 480 features
    kernel = rep._centered(wide) @ rep._centered(wide).T
    other = rep._centered(y[:40]) @ rep._centered(y[:40]).T
    expected = np.sum(kernel * other) / (np.linalg.norm(kernel) * np.linalg.norm(other))
    assert rep.linear_cka(wide, y[:40]) == pytest.approx(expected, abs=1e-10)


def test_cka_matrix_of_one_model_and_of_two_seed_study_models(
    mnist: dict[str, data.Split],
) -> None:
    base = checkpoints.load_checkpoint(TRAINED / "study-lenet5-base.safetensors").model
    sgd = checkpoints.load_checkpoint(TRAINED / "study-lenet5-sgd.safetensors").model
    images = data.subset(mnist["test"], torch.as_tensor(rep.sample_indices(10_000, 600)))
    blocks = rep.model_blocks(base, (1, 28, 28))
    a = rep.extract_features(base, images, blocks).layers
    b = rep.extract_features(sgd, images, rep.model_blocks(sgd, (1, 28, 28))).layers
    own = rep.cka_matrix(a)
    assert own.shape == (7, 7)
    np.testing.assert_allclose(np.diag(own), 1.0, atol=1e-12)
    np.testing.assert_allclose(own, own.T)
    between = rep.cka_matrix(a, b)
    names_a, names_b = list(a), list(b)
    for i, j in [(0, 0), (2, 5), (6, 6), (4, 1)]:
        expected = rep.linear_cka(a[names_a[i]], b[names_b[j]])
        assert between[i, j] == pytest.approx(expected, abs=1e-12)
    assert ((between >= 0) & (between <= 1 + 1e-12)).all()
    # Two trainings of one architecture agree most at the same depth near the output.
    assert between[6, 6] > between[6, 0]
    with pytest.raises(ShapeError, match="same images"):
        rep.cka_matrix(a, {k: v[:10] for k, v in b.items()})


def test_knn_in_small_blocks_equals_one_block(
    monkeypatch: pytest.MonkeyPatch, lenet5_probe_sets: tuple[rep.Features, rep.Features]
) -> None:
    """k-NN over a whole training split is computed a block of test rows at a time (memory):
    blocks of 7 rows give the votes of one block over everything."""
    train, test = lenet5_probe_sets
    x_train, x_test = train.layers["classifier.fc1"], test.layers["classifier.fc1"]
    whole = rep.knn_accuracy(x_train, train.labels, x_test, test.labels)
    monkeypatch.setattr(rep, "KNN_BLOCK", 7 * len(x_train))
    assert rep.knn_accuracy(x_train, train.labels, x_test, test.labels) == whole
