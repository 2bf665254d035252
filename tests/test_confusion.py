"""confusion: the page's numbers on real predictions — two course-nets trained for a second on
real MNIST digits — checked against scikit-learn and against counts made by hand; class orders;
CIFAR-100's superclass view on files written in the real CIFAR-100 layout."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import classification_report, confusion_matrix, recall_score

from dashboard import data, figures, models, training
from dashboard.analysis import confusion, metrics
from dashboard.base.errors import ShapeError
from tests.test_data import _write_py2_pickle

# CIFAR-100's fine → coarse labels as commonly published (e.g. ryanchankh/cifar100coarse's
# sparse2coarse): an independent transcription of the grouping on the CIFAR page.
PUBLISHED_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


# Tiny models: on 2 shared, busy cores a second torch thread mostly waits at barriers.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.take_first(
        data.load_split("mnist", "test", data_root=shared_datasets, download=False), 2000
    )


def _trained(shared_datasets: Path, images: int, seed: int) -> torch.nn.Module:
    train = data.load_split("mnist", "train", data_root=shared_datasets, download=False)
    torch.manual_seed(seed)
    model = models.build_model("course-net", in_channels=1, num_classes=10, input_size=28)
    training.fit(
        model, data.take_first(train, images), None, training.TrainConfig(epochs=1, seed=seed)
    )
    return model


@pytest.fixture(scope="module")
def pred_a(shared_datasets: Path, mnist_test: data.Split) -> metrics.Predictions:
    """Model A: course-net after 1,000 training digits (often wrong)."""
    return metrics.predict(_trained(shared_datasets, 1000, 0), mnist_test, batch_size=500)


@pytest.fixture(scope="module")
def pred_b(shared_datasets: Path, mnist_test: data.Split) -> metrics.Predictions:
    """Model B: course-net after 3,000 training digits (better, not everywhere)."""
    return metrics.predict(_trained(shared_datasets, 3000, 1), mnist_test, batch_size=500)


# --------------------------------------------------------------------------- matrix and report


def test_matrix_and_report_tables_equal_sklearn(pred_a: metrics.Predictions) -> None:
    cm = metrics.confusion(pred_a)
    np.testing.assert_array_equal(cm, confusion_matrix(pred_a.labels, pred_a.predicted))
    assert cm.sum() == 2000
    assert 0.5 < pred_a.accuracy < 0.97  # right often, wrong often enough to have many cells

    names = list(pred_a.classes)
    expected = classification_report(
        pred_a.labels, pred_a.predicted, target_names=names, output_dict=True, zero_division=0
    )
    table = confusion.report_table(metrics.report(pred_a), pred_a.classes)
    assert list(table["Class"]) == names
    for column, key in (("Precision", "precision"), ("Recall", "recall"), ("F1", "f1-score")):
        assert list(table[column]) == [expected[n][key] for n in names]
    assert list(table["Support"]) == [expected[n]["support"] for n in names]
    # by hand: recall is the diagonal over the row, precision over the column
    np.testing.assert_allclose(table["Recall"], np.diag(cm) / cm.sum(axis=1))
    np.testing.assert_allclose(table["Precision"], np.diag(cm) / cm.sum(axis=0))
    np.testing.assert_allclose(confusion.recall(cm), np.diag(cm) / cm.sum(axis=1))

    order = np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])
    ordered = confusion.report_table(metrics.report(pred_a), pred_a.classes, order=order)
    assert list(ordered["Class"]) == [names[k] for k in order]
    assert list(ordered["F1"]) == [expected[names[k]]["f1-score"] for k in order]


def test_csv_downloads_read_back_to_sklearns_numbers(pred_a: metrics.Predictions) -> None:
    cm = metrics.confusion(pred_a)
    matrix = pd.read_csv(io.StringIO(confusion.matrix_csv(cm, pred_a.classes)), index_col=0)
    assert matrix.index.name == confusion.MATRIX_CORNER
    assert list(matrix.columns) == list(pred_a.classes)
    np.testing.assert_array_equal(matrix.to_numpy(), cm)

    report = metrics.report(pred_a)
    rows = pd.read_csv(io.StringIO(confusion.report_csv(report, pred_a.classes)))
    assert list(rows["Class"]) == [*pred_a.classes, "macro avg", "weighted avg", "accuracy"]
    expected = classification_report(pred_a.labels, pred_a.predicted, output_dict=True)
    np.testing.assert_allclose(rows["Recall"][:10], [expected[c]["recall"] for c in "0123456789"])
    assert rows["F1"].iloc[-1] == pytest.approx(pred_a.accuracy, abs=1e-15)
    assert rows["Support"].iloc[-1] == 2000


def test_top_cells_are_the_named_top_confusions(pred_a: metrics.Predictions) -> None:
    cm = metrics.confusion(pred_a)
    cells = confusion.top_cells(cm, 10)
    named = metrics.top_confusions(cm, pred_a.classes, 10)
    assert [(pred_a.classes[c.true], pred_a.classes[c.predicted], c.count) for c in cells] == named
    assert all(c.true != c.predicted and c.count == cm[c.true, c.predicted] for c in cells)
    first_cell = cells[0]
    assert first_cell.label(pred_a.classes) == (
        f"{first_cell.true} → {first_cell.predicted}: {first_cell.count} images"
    )
    assert confusion.Cell(4, 9, 1).label(pred_a.classes) == "4 → 9: 1 image"


# --------------------------------------------------------------------------- the gallery


def test_every_cell_gallery_holds_exactly_its_images(pred_a: metrics.Predictions) -> None:
    cm = metrics.confusion(pred_a)
    seen: list[int] = []
    for true in range(10):
        for predicted in range(10):
            items = confusion.gallery(pred_a, true, predicted)
            assert len(items) == cm[true, predicted]
            for item in items:
                assert pred_a.labels[item.index] == true == item.true
                assert pred_a.predicted[item.index] == predicted == item.predicted
                assert item.p_predicted == pred_a.probabilities[item.index, predicted]
                assert item.p_true == pred_a.probabilities[item.index, true]
                # the prediction is the argmax, so its probability is at least the true class's
                assert item.p_predicted >= item.p_true
            assert [i.index for i in items] == sorted(i.index for i in items)
            seen += [i.index for i in items]
    assert sorted(seen) == list(range(2000))  # the cells partition the split


def test_gallery_pages_and_captions(pred_a: metrics.Predictions) -> None:
    items = confusion.gallery(pred_a, 0, 0)
    assert len(items) > 80
    pages = confusion.page_count(len(items), 40)
    assert pages == -(-len(items) // 40)
    joined = [i for p in range(pages) for i in confusion.page_of(items, p, 40)]
    assert joined == items
    assert confusion.page_of(items, 99, 40) == items[(pages - 1) * 40 :]  # clamped to the last
    assert confusion.page_count(0, 40) == 1
    assert confusion.page_of([], 0, 40) == []

    wrong = confusion.GalleryItem(12, 4, 9, 0.8312, 0.1234)
    assert wrong.caption(pred_a.classes) == "p(9) = 0.83  \ntrue p(4) = 0.12"
    assert confusion.GalleryItem(3, 7, 7, 0.99, 0.99).caption(pred_a.classes) == "p(7) = 0.99"


def test_thumbnails_enlarge_by_whole_pixels(mnist_test: data.Split) -> None:
    digit = mnist_test.images[0].numpy()  # (1, 28, 28)
    thumb = confusion.thumbnail(digit, 112)
    assert thumb.shape == (112, 112)
    np.testing.assert_array_equal(thumb[::4, ::4], digit[0])
    np.testing.assert_array_equal(thumb[3::4, 3::4], digit[0])
    rgb = np.arange(3 * 32 * 32, dtype=np.uint8).reshape(3, 32, 32)
    big = confusion.thumbnail(rgb, 112)
    assert big.shape == (96, 96, 3)
    np.testing.assert_array_equal(big[::3, ::3], rgb.transpose(1, 2, 0))


# --------------------------------------------------------------------------- class orders


def test_orders_are_permutations(pred_a: metrics.Predictions) -> None:
    cm = metrics.confusion(pred_a)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 30, (100, 100)) + np.diag(rng.integers(50, 200, 100))
    for matrix, classes in ((cm, pred_a.classes), (big, data.dataset_info("cifar100").classes)):
        for how in confusion.ORDERS:
            order = confusion.class_order(matrix, classes, how)
            assert sorted(order.tolist()) == list(range(len(classes))), how
            shown = confusion.reorder(matrix, order)
            assert shown.sum() == matrix.sum()
            assert np.trace(shown) == np.trace(matrix)
            k, m = 1, len(classes) - 1
            assert shown[k, m] == matrix[order[k], order[m]]
    with pytest.raises(ValueError, match="unknown class order"):
        confusion.class_order(cm, pred_a.classes, "random")


def test_name_and_recall_orders(pred_a: metrics.Predictions) -> None:
    names = ["class10", "Bird", "class2", "ant", "class1"]
    assert [names[k] for k in confusion.order_by_name(names)] == [
        "ant", "Bird", "class1", "class2", "class10",
    ]  # fmt: skip
    cm = metrics.confusion(pred_a)
    order = confusion.order_by_recall(cm)
    recalls = np.diag(cm) / cm.sum(axis=1)
    assert list(recalls[order]) == sorted(recalls)  # worst first
    tied = np.array([[5, 5, 0], [0, 10, 0], [5, 0, 5]])
    assert confusion.order_by_recall(tied).tolist() == [0, 2, 1]  # ties keep class order


def test_clustered_order_puts_confused_classes_side_by_side() -> None:
    # Six classes: 0 and 3 are mistaken for each other, so are 1 and 5, 2 and 4; a little
    # noise between all of them.
    cm = np.full((6, 6), 1) + np.diag([100] * 6)
    for a, b, n in ((0, 3, 30), (1, 5, 25), (2, 4, 20)):
        cm[a, b] = cm[b, a] = n
    order = confusion.order_clustered(cm).tolist()
    position = {c: k for k, c in enumerate(order)}
    for a, b in ((0, 3), (1, 5), (2, 4)):
        assert abs(position[a] - position[b]) == 1, order
    # Chains: 7 ↔ 1 ↔ 4 (1 is confused with both): 1 sits between them.
    chain = np.diag([50] * 8)
    chain[7, 1] = chain[1, 7] = 12
    chain[1, 4] = chain[4, 1] = 9
    order = confusion.order_clustered(chain).tolist()
    middle = order.index(1)
    assert {order[middle - 1], order[middle + 1]} == {7, 4}
    # Nothing confused: the order stays as it is.
    assert confusion.order_clustered(np.diag([10] * 5)).tolist() == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- two models


def test_difference_and_recall_changes_of_two_real_models(
    pred_a: metrics.Predictions, pred_b: metrics.Predictions
) -> None:
    cm_a, cm_b = metrics.confusion(pred_a), metrics.confusion(pred_b)
    diff = confusion.difference(cm_a, cm_b)
    np.testing.assert_array_equal(diff, cm_b - cm_a)
    assert diff.sum() == 0  # the same images, counted twice
    np.testing.assert_array_equal(diff.sum(axis=1), 0)
    assert np.trace(diff) == round((pred_b.accuracy - pred_a.accuracy) * 2000)

    better = confusion.improvement(diff)
    np.testing.assert_array_equal(np.diag(better), np.diag(diff))
    off = ~np.eye(10, dtype=bool)
    np.testing.assert_array_equal(better[off], -diff[off])

    changes = confusion.recall_changes(cm_a, cm_b, pred_a.classes)
    recall_a = recall_score(pred_a.labels, pred_a.predicted, average=None)
    recall_b = recall_score(pred_b.labels, pred_b.predicted, average=None)
    assert sorted(c.index for c in changes) == list(range(10))
    for c in changes:
        assert c.recall_a == pytest.approx(recall_a[c.index], abs=1e-12)
        assert c.recall_b == pytest.approx(recall_b[c.index], abs=1e-12)
        assert c.support == int((pred_a.labels == c.index).sum())
        assert c.images == diff[c.index, c.index]
    deltas = [c.delta for c in changes]
    assert deltas == sorted(deltas, reverse=True)

    up, down = confusion.improved(changes), confusion.got_worse(changes)
    assert len(up) + len(down) == int((recall_a != recall_b).sum())
    assert {c.index for c in up} == set(np.flatnonzero(recall_b > recall_a))
    assert {c.index for c in down} == set(np.flatnonzero(recall_b < recall_a))
    assert [c.delta for c in down] == sorted(c.delta for c in down)  # largest loss first
    assert pred_b.accuracy > pred_a.accuracy
    assert len(up) > 0

    fig = figures.confusion_difference(cm_a, cm_b, pred_a.classes)
    heat = fig.data[0]
    np.testing.assert_array_equal(heat.z, better)  # blue where B is better, red where worse
    assert heat.zmid == 0
    assert heat.zmax == -heat.zmin == np.abs(better).max()
    assert heat.text[3][3] == ("" if diff[3, 3] == 0 else f"{diff[3, 3]:+d}".replace("-", "−"))

    table = confusion.changes_table(up)
    assert list(table["Class"]) == [c.name for c in up]
    np.testing.assert_allclose(table["Δ recall (points)"], [100 * c.delta for c in up])


def test_matrices_of_different_images_are_refused(pred_a: metrics.Predictions) -> None:
    cm = metrics.confusion(pred_a)
    other = metrics.confusion(
        dataclasses.replace(pred_a, labels=pred_a.labels[:100], predicted=pred_a.predicted[:100])
    )
    with pytest.raises(ShapeError, match="do not count the same images"):
        confusion.difference(cm, other)
    with pytest.raises(ShapeError):
        confusion.recall_changes(cm, cm[:5, :5], pred_a.classes)


def test_a_model_with_other_outputs_is_refused(pred_a: metrics.Predictions) -> None:
    confusion.check_outputs(pred_a)
    wide = dataclasses.replace(pred_a, probabilities=np.zeros((2000, 100), dtype=np.float32))
    with pytest.raises(ShapeError, match="100 outputs but the dataset has 10 classes"):
        confusion.check_outputs(wide)


# --------------------------------------------------------------------------- CIFAR-100


def write_cifar100(root: Path, per_class: int, seed: int = 0) -> None:
    """cifar-100-python/{train,test,meta} in the real format (Python-2 pickles), every fine class
    `per_class` times in the test file, with its published coarse label beside it."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine_names = list(data.dataset_info("cifar100").classes)
    coarse_names = list(data.dataset_info("cifar100-coarse").classes)
    meta = {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
    _write_py2_pickle(folder / "meta", meta)
    for name, count in (("train", 1), ("test", per_class)):
        fine = rng.permutation(np.repeat(np.arange(100), count)).tolist()
        _write_py2_pickle(
            folder / name,
            {
                "batch_label": f"{name} batch",
                "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
                "filenames": [f"img_{i}.png" for i in range(len(fine))],
                "fine_labels": fine,
                "coarse_labels": [PUBLISHED_COARSE[f] for f in fine],
            },
        )


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar100(root, per_class=3)
    return root


def test_fine_to_coarse_table_is_the_published_grouping(cifar100_root: Path) -> None:
    mapping = data.cifar100_fine_to_coarse()
    assert list(mapping) == PUBLISHED_COARSE
    fine_names = data.dataset_info("cifar100").classes
    coarse_names = data.dataset_info("cifar100-coarse").classes
    assert coarse_names[mapping[fine_names.index("whale")]] == "aquatic_mammals"
    assert coarse_names[mapping[fine_names.index("pickup_truck")]] == "vehicles_1"
    assert np.bincount(mapping).tolist() == [5] * 20
    # the files' own coarse labels, read by the data layer, agree image by image
    fine = data.load_split("cifar100", "test", data_root=cifar100_root, download=False)
    coarse = data.load_split("cifar100-coarse", "test", data_root=cifar100_root, download=False)
    assert len(fine) == 300
    np.testing.assert_array_equal(np.asarray(mapping)[fine.labels.numpy()], coarse.labels.numpy())


def test_superclass_view_of_a_fine_model(cifar100_root: Path) -> None:
    fine = data.load_split("cifar100", "test", data_root=cifar100_root, download=False)
    coarse = data.load_split("cifar100-coarse", "test", data_root=cifar100_root, download=False)
    torch.manual_seed(0)
    model = models.build_model("simple-convnet", in_channels=3, num_classes=100, input_size=32)
    pred = metrics.predict(model, fine)
    mapping = np.asarray(data.cifar100_fine_to_coarse())
    view = confusion.coarse_predictions(pred, mapping, coarse.info.classes)

    np.testing.assert_array_equal(view.labels, coarse.labels.numpy())
    np.testing.assert_array_equal(view.predicted, mapping[pred.predicted])
    assert view.classes == coarse.info.classes
    assert view.probabilities.shape == (300, 20)
    by_hand = np.stack([pred.probabilities[:, mapping == c].sum(axis=1) for c in range(20)], 1)
    np.testing.assert_allclose(view.probabilities, by_hand, rtol=1e-6)
    np.testing.assert_allclose(view.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        metrics.confusion(view),
        confusion_matrix(mapping[fine.labels.numpy()], mapping[pred.predicted], labels=range(20)),
    )
    # the same model on the coarse-labelled split (labels already superclasses): same view
    on_coarse = confusion.coarse_predictions(metrics.predict(model, coarse), mapping, view.classes)
    np.testing.assert_array_equal(on_coarse.labels, view.labels)
    np.testing.assert_array_equal(on_coarse.predicted, view.predicted)
    # a 20-output model on fine labels: its outputs are kept, the labels mapped
    twenty = models.build_model("simple-convnet", in_channels=3, num_classes=20, input_size=32)
    answers = metrics.predict(twenty, fine)
    seen = confusion.coarse_predictions(answers, mapping, view.classes)
    np.testing.assert_array_equal(seen.predicted, answers.predicted)
    np.testing.assert_array_equal(seen.labels, view.labels)
    with pytest.raises(ShapeError, match="superclass view"):
        confusion.coarse_predictions(
            dataclasses.replace(pred, classes=pred.classes[:10]), mapping, view.classes
        )
