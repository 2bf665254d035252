"""metrics: predictions of a quickly trained course-net on 1,000 real MNIST test images,
checked against scikit-learn and against counts made by hand."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from sklearn.metrics import classification_report, confusion_matrix

from dashboard import data, models, training
from dashboard.analysis import metrics

# First 1,000 MNIST test labels per class (torchvision's order): a fact of the data set.
FIRST_1000_TEST_COUNTS = [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]


# Tiny models: on 2 shared, busy cores a second torch thread mostly waits at barriers.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    split = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    return data.take_first(split, 1000)


@pytest.fixture(scope="module")
def trained(shared_datasets: Path) -> torch.nn.Module:
    """course-net after one epoch on 2,000 training images: right often, wrong often enough."""
    train = data.load_split("mnist", "train", data_root=shared_datasets, download=False)
    torch.manual_seed(0)
    model = models.build_model("course-net", in_channels=1, num_classes=10, input_size=28)
    training.fit(model, data.take_first(train, 2000), None, training.TrainConfig(epochs=1))
    return model


@pytest.fixture(scope="module")
def pred(trained: torch.nn.Module, mnist_test: data.Split) -> metrics.Predictions:
    return metrics.predict(trained, mnist_test, batch_size=256)


def test_predictions_are_the_softmax_of_one_plain_forward_pass(trained, mnist_test, pred):
    x = (mnist_test.images.float() / 255 - 0.1307) / 0.3081
    with torch.no_grad():
        expected = torch.softmax(trained(x), dim=1).numpy()
    np.testing.assert_allclose(pred.probabilities, expected, rtol=1e-5, atol=1e-6)
    assert pred.probabilities.dtype == np.float32
    assert pred.probabilities.shape == (1000, 10)
    np.testing.assert_array_equal(pred.predicted, expected.argmax(axis=1))
    np.testing.assert_array_equal(pred.labels, mnist_test.labels.numpy())
    assert pred.classes == tuple("0123456789")
    assert pred.source == mnist_test.source
    # A quickly trained model: well above chance, far from perfect.
    assert 0.5 < pred.accuracy < 0.97
    _, accuracy = training.evaluate_model(trained, mnist_test)
    assert pred.accuracy == accuracy


def test_confusion_matrix_equals_sklearn_and_a_count_by_hand(pred):
    cm = metrics.confusion(pred)
    by_hand = np.zeros((10, 10), dtype=np.int64)
    np.add.at(by_hand, (pred.labels, pred.predicted), 1)
    np.testing.assert_array_equal(cm, by_hand)
    np.testing.assert_array_equal(cm, confusion_matrix(pred.labels, pred.predicted))
    assert cm.sum() == 1000
    assert cm.sum(axis=1).tolist() == FIRST_1000_TEST_COUNTS  # rows are the true classes
    assert np.trace(cm) == round(pred.accuracy * 1000)


def test_report_equals_sklearn_and_the_matrix_formulas(pred):
    rep = metrics.report(pred)
    expected = classification_report(
        pred.labels, pred.predicted, target_names=list("0123456789"), output_dict=True
    )
    assert rep == expected
    cm = metrics.confusion(pred).astype(float)
    for k, name in enumerate(pred.classes):
        precision = cm[k, k] / cm[:, k].sum() if cm[:, k].sum() else 0.0
        recall = cm[k, k] / cm[k].sum()
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert rep[name]["precision"] == pytest.approx(precision, abs=1e-12)
        assert rep[name]["recall"] == pytest.approx(recall, abs=1e-12)
        assert rep[name]["f1-score"] == pytest.approx(f1, abs=1e-12)
        assert rep[name]["support"] == FIRST_1000_TEST_COUNTS[k]
    assert rep["accuracy"] == pytest.approx(pred.accuracy)


def test_an_untrained_model_gets_zero_not_a_warning_for_classes_it_never_predicts(mnist_test):
    torch.manual_seed(0)
    model = models.build_model("course-net", in_channels=1, num_classes=10, input_size=28)
    untrained = metrics.predict(model, mnist_test)
    never = sorted(set(range(10)) - set(untrained.predicted.tolist()))
    assert never  # an untrained net favours a few classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = metrics.report(untrained)
        cm = metrics.confusion(untrained)
    assert cm.shape == (10, 10)  # every class keeps its row and column
    for k in never:
        assert rep[str(k)]["precision"] == 0.0
        assert cm[:, k].sum() == 0


def test_cell_indices_hold_exactly_the_images_of_their_cell(pred):
    cm = metrics.confusion(pred)
    seen = []
    for t in range(10):
        for p in range(10):
            cell = metrics.cell_indices(pred, t, p)
            assert len(cell) == cm[t, p]
            assert (pred.labels[cell] == t).all()
            assert (pred.predicted[cell] == p).all()
            seen.extend(cell.tolist())
    assert sorted(seen) == list(range(1000))  # every image in exactly one cell
    wrong = metrics.misclassified(pred)
    assert len(wrong) == 1000 - np.trace(cm)
    assert (pred.labels[wrong] != pred.predicted[wrong]).all()
    assert wrong.tolist() == sorted(wrong.tolist())


def test_top_confusions_are_the_largest_off_diagonal_cells_in_order(pred):
    cm = np.array([[50, 3, 7], [7, 40, 0], [1, 7, 60]])
    top = metrics.top_confusions(cm, ("a", "b", "c"), k=4)
    # Ties (7) keep row-major order; the diagonal never appears; k cuts the list.
    assert top == [("a", "c", 7), ("b", "a", 7), ("c", "b", 7), ("a", "b", 3)]
    assert metrics.top_confusions(np.diag([5, 5]), ("x", "y")) == []  # no mistakes, no list

    real = metrics.confusion(pred)
    brute = sorted(
        ((str(t), str(p), int(real[t, p])) for t in range(10) for p in range(10) if t != p),
        key=lambda item: -item[2],
    )
    brute = [item for item in brute if item[2] > 0][:10]
    assert metrics.top_confusions(real, pred.classes) == brute


def test_predict_does_not_depend_on_batch_size_and_restores_train_mode(trained, mnist_test, pred):
    trained.train()
    again = metrics.predict(trained, mnist_test, batch_size=1000)
    assert trained.training
    np.testing.assert_array_equal(again.predicted, pred.predicted)
    np.testing.assert_allclose(again.probabilities, pred.probabilities, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- the inference copy

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MNIST = ("course-net", "lenet5", "bn-cnn", "simple-convnet")


def _plain_softmax(model: torch.nn.Module, split: data.Split) -> np.ndarray:
    """The straightforward way: normalize by hand, model(x) in eval mode, softmax."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(split), 500):
            x = (split.images[start : start + 500].float() / 255 - 0.1307) / 0.3081
            out.append(torch.softmax(model(x), dim=1))
    return torch.cat(out).numpy()


@pytest.mark.parametrize("name", SHIPPED_MNIST)
def test_predict_answers_like_a_plain_forward_pass_on_every_mnist_test_image(name, shared_datasets):
    from dashboard.models import checkpoints

    loaded = checkpoints.load_checkpoint(REPO / "trained" / f"{name}-mnist.safetensors")
    model = loaded.model
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    pred = metrics.predict(model, test)
    expected = _plain_softmax(model, test)
    np.testing.assert_allclose(pred.probabilities, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(pred.predicted, expected.argmax(axis=1))
    assert pred.accuracy == loaded.card.test_accuracy  # what training measured on the same images
    # The shared model is untouched: same weights, same layout, no layer swapped or fused.
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
        assert value.is_contiguous(), key
    assert not isinstance(model, torch.fx.GraphModule)
    assert all(not getattr(m, "inplace", False) for m in model.modules())


def test_the_inference_copy_folds_batch_norm_and_keeps_the_answers(shared_datasets):
    from dashboard.models import checkpoints

    model = checkpoints.load_checkpoint(REPO / "trained" / "bn-cnn-mnist.safetensors").model
    fast = metrics.inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    test = data.load_split("mnist", "test", data_root=shared_datasets, download=False)
    x = data.normalize(test.images[:64], test.info.mean, test.info.std)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=0, atol=1e-4)


class _ValueDependent(torch.nn.Module):
    """A forward fx cannot trace (a branch on the data): predict must still answer right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4 * 26 * 26, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        if float(y.mean()) > 1e9:  # never true, but only known at run time
            y = -y
        return self.head(y.flatten(1))


class _OutOfOrder(torch.nn.Module):
    """Batch norm listed right after the conv but fed by something else: nothing to fold."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
        )
        self.head = torch.nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self.features
        y = relu(conv(x)) + bn(x.expand(-1, 4, -1, -1))  # the conv's output is read twice
        return self.head(relu(bn(y)).flatten(1))


@pytest.mark.parametrize("kind", [_ValueDependent, _OutOfOrder])
def test_predict_is_right_for_models_the_fast_copy_cannot_rewrite(kind, mnist_test):
    torch.manual_seed(0)
    model = kind()
    with torch.no_grad():  # batch norm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    pred = metrics.predict(model, mnist_test)
    expected = _plain_softmax(model, mnist_test)
    np.testing.assert_allclose(pred.probabilities, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(pred.predicted, expected.argmax(axis=1))


def test_predictions_on_a_split_resized_when_read_equal_resizing_up_front(shared_datasets):
    stored = data.load_split("cifar10", "test", data_root=shared_datasets, download=False)
    lazy = data.take_first(
        data.load_split(
            "cifar10", "test", data_root=shared_datasets, download=False, input_size=224
        ),
        12,
    )
    assert isinstance(lazy.images, data.ResizedImages)
    up_front = TF.resize(stored.images[:12], [224, 224], antialias=True)
    eager = dataclasses.replace(lazy, images=up_front.contiguous())
    torch.manual_seed(0)
    model = models.build_model("resnet18", in_channels=3, num_classes=10, input_size=224)
    lazily = metrics.predict(model, lazy, batch_size=5)  # batches of 5, 5 and 2 resized
    eagerly = metrics.predict(model, eager, batch_size=12)
    np.testing.assert_allclose(lazily.probabilities, eagerly.probabilities, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(lazily.predicted, eagerly.predicted)
    np.testing.assert_array_equal(lazily.labels, stored.labels[:12].numpy())
    # and a plain forward pass of the up-front tensor agrees
    model.eval()
    with torch.no_grad():
        x = data.normalize(up_front, lazy.info.mean, lazy.info.std)
        plain = torch.softmax(model(x), dim=1).numpy()
    np.testing.assert_allclose(lazily.probabilities, plain, rtol=0, atol=1e-5)
    assert metrics.default_batch(lazy) == 26  # 4 M input numbers / (3 × 224 × 224)
    assert metrics.default_batch(stored) == metrics.PREDICT_BATCH
