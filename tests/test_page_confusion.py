"""The Confusion matrix page under AppTest, with real checkpoints trained on real MNIST: the
accuracy, matrix, report and gallery it shows are checked against scikit-learn run on the
checkpoint's own predictions, computed here independently of the page's caches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, recall_score
from streamlit.testing.v1 import AppTest

from dashboard import data, models, training
from dashboard.analysis import confusion, metrics, probe
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import plotly_array as array
from tests.pages import plotly_specs
from tests.test_confusion import write_cifar100

APP = str(REPO_ROOT / "app.py")  # the entry point, so st.switch_page finds the other pages
PAGE = "pages/6_Confusion_matrix.py"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_key(lenet5_mnist_checkpoint: Path) -> str:
    return f"ckpt:{lenet5_mnist_checkpoint}"


def save(model: torch.nn.Module, folder: Path, architecture: str, dataset: str) -> str:
    """A checkpoint (weights and card) of a model built for `dataset`; → its model key."""
    info = data.dataset_info(dataset)
    name = f"{architecture}-{dataset}"
    card = checkpoints.Card(
        name=name,
        architecture=architecture,
        model_args={
            "in_channels": info.channels,
            "num_classes": info.num_classes,
            "input_size": info.size,
        },
        dataset=dataset,
        classes=list(info.classes),
        normalization={"mean": list(info.mean), "std": list(info.std)},
    )
    return f"ckpt:{checkpoints.save_checkpoint(model, card, folder / name)}"


@pytest.fixture(scope="module")
def second_key(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A weaker real model for the comparison: course-net after 1,500 digits."""
    train = data.load_split("mnist", "train", data_root=shared_datasets)
    subset = dataclasses.replace(train, images=train.images[:1500], labels=train.labels[:1500])
    torch.manual_seed(1)
    model = models.build_model("course-net", in_channels=1, num_classes=10, input_size=28)
    training.fit(model, subset, None, training.TrainConfig(epochs=1, seed=1, threads=1))
    return save(model, tmp_path_factory.mktemp("second"), "course-net", "mnist")


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets)


def answers(key: str, split: data.Split) -> metrics.Predictions:
    """The checkpoint's predictions, computed here without the page's caches."""
    model = checkpoints.load_checkpoint(key.removeprefix("ckpt:")).model
    return metrics.predict(model, split)


@pytest.fixture(scope="module")
def pred(model_key: str, mnist_test: data.Split) -> metrics.Predictions:
    return answers(model_key, mnist_test)


# --------------------------------------------------------------------------- helpers


def open_page(**state) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120).switch_page(PAGE)
    extra = [v for k, v in state.items() if k in ("lens_model", "lens_compare_model")]
    app.session_state["lens_extra_models"] = [v for v in extra if v.startswith("ckpt:")]
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, app.exception
    return app


CHART_KEYS = ("cm_chart", "cm_side_A", "cm_side_B", "cm_difference")


def heatmaps(app: AppTest) -> dict[str, dict]:
    """The page's plotly charts by their keys (the clickable matrix is "cm_chart")."""
    return plotly_specs(app, CHART_KEYS)


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def dialog_titles(app: AppTest) -> list[str]:
    """The titles of the dialogs open on the page."""
    found: list[str] = []

    def walk(node) -> None:
        if getattr(node, "type", "") == "dialog":
            found.append(node.proto.dialog.title)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(app._tree)
    return found


def gallery_buttons(app: AppTest) -> list[int]:
    return [int(b.label.removeprefix("#")) for b in app.button if b.key.startswith("cm_open_")]


# --------------------------------------------------------------------------- tests


def test_accuracy_matrix_and_report_equal_sklearn(
    model_key: str, pred: metrics.Predictions
) -> None:
    app = open_page(lens_model=model_key)
    expected = confusion_matrix(pred.labels, pred.predicted)
    assert metric(app, "Accuracy") == f"{accuracy_score(pred.labels, pred.predicted):.2%}"
    assert metric(app, "Images") == "10,000"
    assert metric(app, "Misclassified") == f"{int(expected.sum() - np.trace(expected)):,}"

    chart = heatmaps(app)["cm_chart"]
    np.testing.assert_array_equal(array(chart["data"][0]["z"]), expected)
    cells = array(chart["data"][1]["customdata"])  # the click targets: (true, predicted)
    assert cells.tolist() == [[i, j] for i in range(10) for j in range(10)]

    report = classification_report(
        pred.labels, pred.predicted, target_names=list(pred.classes), output_dict=True
    )
    table = app.dataframe[0].value
    assert list(table["Class"]) == list(pred.classes)
    assert list(table["Recall"]) == [report[c]["recall"] for c in pred.classes]
    assert list(table["Precision"]) == [report[c]["precision"] for c in pred.classes]
    assert list(table["F1"]) == [report[c]["f1-score"] for c in pred.classes]

    top = [b.label for b in app.button if b.key.startswith("cm_top_")]
    cm = metrics.confusion(pred)
    assert top == [c.label(pred.classes) for c in confusion.top_cells(cm, 8)]


def test_show_and_order_redraw_the_same_counts(model_key: str, pred: metrics.Predictions) -> None:
    app = open_page(lens_model=model_key)
    cm = confusion_matrix(pred.labels, pred.predicted)
    app.button_group(key="cm_show").set_value("row").run()
    app.button_group(key="cm_order").set_value("clustered").run()
    assert not app.exception, app.exception
    order = confusion.order_clustered(cm)
    chart = heatmaps(app)["cm_chart"]
    rows = cm / cm.sum(axis=1, keepdims=True) * 100
    np.testing.assert_allclose(array(chart["data"][0]["z"]), rows[np.ix_(order, order)])
    assert chart["layout"]["xaxis"]["ticktext"] == [pred.classes[k] for k in order]
    # a click on position (k, l) still names the classes drawn there
    cells = array(chart["data"][1]["customdata"])
    assert cells[0 * 10 + 1].tolist() == [order[0], order[1]]
    assert list(app.dataframe[0].value["Class"]) == [pred.classes[k] for k in order]


def test_a_cell_opens_exactly_its_images(model_key: str, pred: metrics.Predictions) -> None:
    app = open_page(lens_model=model_key)
    cm = metrics.confusion(pred)
    worst = confusion.top_cells(cm, 1)[0]
    app.button(key=f"cm_top_{worst.true}_{worst.predicted}").click().run()
    assert not app.exception, app.exception
    inside = metrics.cell_indices(pred, worst.true, worst.predicted)
    assert len(inside) == worst.count
    assert gallery_buttons(app) == inside[:40].tolist()  # the first page
    assert len(app.get("image")) == min(40, worst.count)
    # in a dialog over the matrix: where the user clicked, not below the screen's edge
    assert dialog_titles(app) == [
        f"True {worst.true} → predicted {worst.predicted}: {worst.count} image"
        + ("s" if worst.count != 1 else "")
    ]
    assert all(
        pred.labels[i] == worst.true and pred.predicted[i] == worst.predicted for i in inside
    )

    # a diagonal cell holds hundreds: pages of 40, the second page the next 40
    context = f"{model_key}|mnist|test|labelled"
    app.session_state["cm_cell"] = {"for": context, "cell": (1, 1)}
    app.run()
    ones = metrics.cell_indices(pred, 1, 1)
    assert len(ones) == cm[1, 1] > 80
    assert gallery_buttons(app) == ones[:40].tolist()
    app.session_state["cm_page"] = 2
    app.run()
    assert not app.exception, app.exception
    assert gallery_buttons(app) == ones[40:80].tolist()
    assert any(f"Images 41–80 of {len(ones):,}" in c.value for c in app.caption)

    app.button(key="cm_close").click().run()
    assert gallery_buttons(app) == []
    assert dialog_titles(app) == []


def test_an_image_opens_on_the_activations_page(model_key: str, pred: metrics.Predictions) -> None:
    app = open_page(lens_model=model_key)
    worst = confusion.top_cells(metrics.confusion(pred), 1)[0]
    app.button(key=f"cm_top_{worst.true}_{worst.predicted}").click().run()
    index = int(metrics.cell_indices(pred, worst.true, worst.predicted)[1])
    app.button(key=f"cm_open_{index}").click().run()
    assert not app.exception, app.exception
    assert app.session_state["lens_image_index"] == index
    assert app.session_state["lens_model"] == model_key
    assert app.title[0].value == "Activations"
    assert app.number_input(key="_lens_image_index").value == index


def test_two_checkpoints_their_difference_and_recall_changes(
    model_key: str, second_key: str, mnist_test: data.Split, pred: metrics.Predictions
) -> None:
    app = open_page(lens_model=model_key, lens_compare_model=second_key)
    other = answers(second_key, mnist_test)
    cm_a = confusion_matrix(pred.labels, pred.predicted)
    cm_b = confusion_matrix(other.labels, other.predicted)
    charts = heatmaps(app)
    np.testing.assert_array_equal(array(charts["cm_side_A"]["data"][0]["z"]), cm_a)
    np.testing.assert_array_equal(array(charts["cm_side_B"]["data"][0]["z"]), cm_b)
    diff = cm_b - cm_a
    better = np.where(np.eye(10, dtype=bool), diff, -diff)
    np.testing.assert_array_equal(array(charts["cm_difference"]["data"][0]["z"]), better)
    assert metric(app, "Accuracy B") == f"{accuracy_score(other.labels, other.predicted):.2%}"

    recall_a = recall_score(pred.labels, pred.predicted, average=None)
    recall_b = recall_score(other.labels, other.predicted, average=None)
    tables = [t.value for t in app.dataframe[1:]]
    shown = {
        int(name): (a, b)
        for t in tables
        for name, a, b in t[["Class", "Recall A", "Recall B"]].values
    }
    changed = np.flatnonzero(recall_a != recall_b)
    assert sorted(shown) == changed.tolist()
    for k, (a, b) in shown.items():
        assert a == pytest.approx(recall_a[k], abs=1e-12)
        assert b == pytest.approx(recall_b[k], abs=1e-12)
    up = sum(1 for k in changed if recall_b[k] > recall_a[k])
    assert metric(app, "Classes better / worse") == f"{up} / {len(changed) - up}"


@pytest.fixture(scope="module")
def cifar100_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """CIFAR-100 files in the real layout and a 100-class checkpoint (random weights)."""
    root = tmp_path_factory.mktemp("c100data")
    write_cifar100(root, per_class=3)
    torch.manual_seed(0)
    model = models.build_model("simple-convnet", in_channels=3, num_classes=100, input_size=32)
    return root, save(model, tmp_path_factory.mktemp("c100"), "simple-convnet", "cifar100")


def test_cifar100_fine_and_superclass_views(cifar100_case: tuple[Path, str]) -> None:
    root, key = cifar100_case
    app = open_page(lens_model=key, lens_dataset="cifar100", lens_data_root=str(root))
    split = data.load_split("cifar100", "test", data_root=root, download=False)
    fine = answers(key, split)
    z = array(heatmaps(app)["cm_chart"]["data"][0]["z"])
    np.testing.assert_array_equal(
        z, confusion_matrix(fine.labels, fine.predicted, labels=range(100))
    )
    assert "text" not in heatmaps(app)["cm_chart"]["data"][0]  # no cell text above 20 classes

    app.button_group(key="cm_level").set_value("coarse").run()
    assert not app.exception, app.exception
    mapping = np.asarray(data.cifar100_fine_to_coarse())
    coarse = data.load_split("cifar100-coarse", "test", data_root=root, download=False)
    expected = confusion_matrix(coarse.labels.numpy(), mapping[fine.predicted], labels=range(20))
    chart = heatmaps(app)["cm_chart"]
    np.testing.assert_array_equal(array(chart["data"][0]["z"]), expected)
    assert chart["layout"]["yaxis"]["ticktext"] == list(coarse.info.classes)
    accuracy = accuracy_score(coarse.labels.numpy(), mapping[fine.predicted])
    assert metric(app, "Accuracy") == f"{accuracy:.2%}"


def test_a_model_whose_outputs_do_not_fit_shows_one_line(cifar100_case: tuple[Path, str]) -> None:
    root, _ = cifar100_case
    app = open_page(
        lens_model="arch:alexnet-small", lens_dataset="cifar100", lens_data_root=str(root)
    )
    assert [e.value for e in app.error] == [
        "the model has 10 outputs but the dataset has 100 classes: pick a dataset with 10 "
        "classes or a model trained on this one"
    ]


def test_a_model_with_other_outputs_is_refused_before_classifying(shared_datasets) -> None:
    """alexnet's 1,000 ImageNet outputs cannot be read as CIFAR-10's 10 classes: the page says
    so from the shape flow, before classifying 10,000 images at 224 px (minutes on a CPU)."""
    app = open_page(lens_model="arch:alexnet", lens_dataset="cifar10")
    errors = [e.value for e in app.error]
    assert any("1000 outputs but the dataset has 10 classes" in e for e in errors), errors
    assert not app.get("plotly_chart")
    flow = probe.shape_flow(models.build_model("alexnet"), (3, 224, 224))
    assert flow.output_shape[-1] == 1000  # the independent count the message rests on
