"""The Representations page on the shipped LeNet-5 and real MNIST: its PCA map, probe chart and
CKA heatmap checked against computations made here the plain way (a forward hook on the
model, scikit-learn, the CKA formula), its choices kept across pages, and a dataset that does
not fit the model refused in one message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from dashboard import data
from dashboard.analysis import representations as rep
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import open_tab, plotly_specs, run_page
from tests.test_page_confusion import array
from tests.test_page_state import SHAPE, holds, opened

PAGE = "pages/10_Representations.py"
SHIPPED = "ckpt:trained/lenet5-mnist.safetensors"
SHOWN, TRAINED_ON = 1_000, 2_000  # the page's default test and training images
CHARTS = ("repr_chart", "repr_variance", "repr_probes", "repr_cka")


@pytest.fixture(scope="module")
def lenet5() -> nn.Module:
    return checkpoints.load_checkpoint(REPO_ROOT / "trained" / "lenet5-mnist.safetensors").model


@pytest.fixture(scope="module")
def mnist(shared_datasets: Path) -> dict[str, data.Split]:
    return {s: data.load_split("mnist", s, data_root=shared_datasets) for s in ("train", "test")}


@pytest.fixture(scope="module")
def page() -> AppTest:
    """The page as it opens: on its projector."""
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="mnist")
    assert not app.error, [e.value for e in app.error]
    return app


def charts(app: AppTest) -> dict[str, dict]:
    return plotly_specs(app, CHARTS)


def hooked(
    model: nn.Module, split: data.Split, indices: np.ndarray, layer: nn.Module
) -> np.ndarray:
    """What `layer` receives for the images at `indices`: a pre-hook on the model itself."""
    got: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda m, i: got.append(i[0].flatten(1)))
    try:
        with torch.no_grad():
            chosen = data.subset(split, torch.as_tensor(indices))
            for x, _ in data.iterate_batches(chosen, 250, shuffle=False):
                model(x)
    finally:
        handle.remove()
    return torch.cat(got).numpy().astype(np.float64)


def test_the_pca_map_is_scikit_learns_pca_of_the_layer(
    page: AppTest, lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    from sklearn.decomposition import PCA

    open_tab(page, "repr_tab", "Projector")
    assert page.selectbox(key="_repr_layer").value == "classifier.fc2"  # what fc3 reads
    spec = charts(page)["repr_chart"]
    rows, split_index, coords = [], [], []
    for trace in spec["data"]:
        custom = array(trace["customdata"])
        split_index += [int(i) for i in custom[:, 0]]
        rows += [int(r) for r in custom[:, 1]]
        coords.append(np.stack([array(trace["x"]), array(trace["y"])], axis=1))
    assert sorted(rows) == list(range(SHOWN))  # every shown image once, in one class trace
    order = np.argsort(rows)
    shown = np.concatenate(coords)[order]
    indices = np.array(split_index)[order]
    assert np.array_equal(indices, rep.sample_indices(len(mnist["test"]), SHOWN))
    features = hooked(lenet5, mnist["test"], indices, lenet5.classifier.fc3)
    expected = PCA(n_components=2, svd_solver="full").fit_transform(features)
    for axis in range(2):
        sign = np.sign(np.dot(shown[:, axis], expected[:, axis]))
        scale = np.abs(expected[:, axis]).max()
        assert np.allclose(sign * shown[:, axis], expected[:, axis], atol=1e-4 * scale)


def test_the_probe_chart_is_what_the_probes_give(
    page: AppTest, lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    open_tab(page, "repr_tab", "Probes")
    assert "repr_probes" not in charts(page)  # run only when asked
    offered = page.select_slider(key="_repr_train").options  # the last: the whole split
    total = len(mnist["train"])  # 60,000, or the shipped sample's 10,000 in a fresh clone
    steps = [c for c in (1_000, 2_000, 5_000, 10_000) if c < total] + [total]
    assert offered == [f"{c:,}" for c in steps]
    next(b for b in page.button if b.label == "Run the probes").click().run()
    assert not page.exception, page.exception
    spec = charts(page)["repr_probes"]
    probe_line, knn_line = array(spec["data"][0]["y"]), array(spec["data"][1]["y"])
    blocks = rep.model_blocks(lenet5, (1, 28, 28))
    picked = {
        name: rep.sample_indices(len(mnist[name]), count)
        for name, count in (("train", TRAINED_ON), ("test", SHOWN))
    }
    train, test = (
        rep.extract_features(lenet5, mnist[name], blocks, indices=picked[name])
        for name in ("train", "test")
    )
    report = rep.probe_layers(train, test)
    assert probe_line.tolist() == pytest.approx([100 * p.probe_accuracy for p in report.layers])
    assert knn_line.tolist() == pytest.approx([100 * p.knn_accuracy for p in report.layers])
    # fc2's block, by scikit-learn on what fc3 receives (a plain hook)
    x_train, x_test = (
        hooked(lenet5, mnist[name], picked[name], lenet5.classifier.fc3)
        for name in ("train", "test")
    )
    y_train, y_test = (mnist[name].labels.numpy()[picked[name]] for name in ("train", "test"))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    expected = probe.fit(x_train, y_train).score(x_test, y_test)
    fc2 = [b.name for b in blocks].index("classifier.fc2")
    assert abs(probe_line[fc2] / 100 - expected) <= 1 / SHOWN + 1e-12


def test_the_cka_heatmap_has_ones_on_its_diagonal_and_the_formulas_values(
    page: AppTest, lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    heat = charts(open_tab(page, "repr_tab", "Layer similarity"))["repr_cka"]["data"][0]
    matrix = array(heat["z"])
    assert matrix.shape == (7, 7)  # LeNet-5's blocks: conv1, pool1, conv2, pool2, fc1..fc3
    assert np.allclose(np.diag(matrix), 1.0)
    assert np.allclose(matrix, matrix.T)
    indices = rep.sample_indices(len(mnist["test"]), SHOWN)
    # fc1's and fc2's blocks: what fc2 and fc3 receive; CKA by its formula, centered columns
    x = hooked(lenet5, mnist["test"], indices, lenet5.classifier.fc2)
    y = hooked(lenet5, mnist["test"], indices, lenet5.classifier.fc3)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    expected = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert matrix[4, 5] == pytest.approx(expected, abs=1e-5)


def test_the_projector_keeps_its_choices_across_pages(shared_datasets: Path) -> None:
    app = opened(PAGE, lens_model=SHIPPED, lens_dataset="mnist")
    changes = [
        ("selectbox", "_repr_layer", "features.conv2"),
        ("button_group", "_repr_method", "tsne"),
        ("button_group", "_repr_colour", "correct"),
        ("select_slider", "_repr_count", 500),
    ]
    holds(app, PAGE, changes, away=SHAPE)
    app.session_state["repr_tab"] = "Layer similarity"  # the open tab holds too
    app.run()
    app.switch_page(SHAPE).run()
    app.switch_page(PAGE).run()
    assert app.session_state["repr_tab"] == "Layer similarity"
    assert charts(app).keys() == {"repr_cka"}
    app.session_state["repr_tab"] = "Projector"
    app.run()
    spec = charts(app)["repr_chart"]
    assert sum(len(array(t["x"])) for t in spec["data"]) == 500
    assert [t["name"].split(" (")[0] for t in spec["data"]] == ["correct", "wrong"]


def test_a_dataset_that_does_not_fit_the_model_is_one_message(shared_datasets: Path) -> None:
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="cifar10")
    assert [e.value for e in app.error] == [
        next(e.value for e in app.error if "channel" in e.value)
    ]
    assert not app.get("plotly_chart")


def test_a_chosen_image_shows_with_its_nearest_neighbours(
    lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="mnist")
    indices = rep.sample_indices(len(mnist["test"]), SHOWN)
    chosen = int(indices[7])
    app.selectbox(key="_repr_image").set_value(chosen).run()
    assert not app.exception, app.exception
    features = hooked(lenet5, mnist["test"], indices, lenet5.classifier.fc3)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit[7]
    similarity[7] = -np.inf
    rows = np.argsort(-similarity, kind="stable")[:8]
    nearest = indices[rows]
    # the image, then its neighbours, each with a button opening it on Activations
    opened = [b.label for b in app.button if b.label.startswith("#")]
    assert opened == [f"#{chosen}"] + [f"#{i}" for i in nearest]
    assert len(app.get("image")) == 9
    rings = [t for t in charts(app)["repr_chart"]["data"] if t["name"] == "clicked image"]
    assert [int(array(t["customdata"])[0, 0]) for t in rings] == [chosen]
    # a neighbour's button opens it on the Activations page
    app.button(key=f"repr_open_{rows[0]}").click().run()
    assert not app.exception, app.exception
    assert app.session_state["lens_image_index"] == int(nearest[0])
    assert app.title[0].value == "Activations"


def test_cka_against_a_second_checkpoint_of_the_dataset(
    page: AppTest, lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    second = "ckpt:trained/study-lenet5-base.safetensors"
    open_tab(page, "repr_tab", "Layer similarity")
    page.selectbox(key="_repr_other").set_value(second).run()
    assert not page.exception, page.exception
    matrix = array(charts(page)["repr_cka"]["data"][0]["z"])
    assert matrix.shape == (7, 7)
    other = checkpoints.load_checkpoint(REPO_ROOT / "trained" / "study-lenet5-base.safetensors")
    indices = rep.sample_indices(len(mnist["test"]), SHOWN)
    # fc2's blocks of both (what each fc3 receives), by the formula
    x = hooked(lenet5, mnist["test"], indices, lenet5.classifier.fc3)
    y = hooked(other.model, mnist["test"], indices, other.model.classifier.fc3)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    expected = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert matrix[5, 5] == pytest.approx(expected, abs=1e-5)
    page.selectbox(key="_repr_other").set_value("(none)").run()


def test_a_box_or_lasso_selection_shows_as_a_gallery(
    lenet5: nn.Module, mnist: dict[str, data.Split]
) -> None:
    indices = rep.sample_indices(len(mnist["test"]), SHOWN)
    picked = [int(i) for i in indices[100:160]]  # 60 shown images, as a lasso would name them
    # "for": None = the projection drawn next (the chart's callback fills in its own)
    app = run_page(
        PAGE,
        lens_model=SHIPPED,
        lens_dataset="mnist",
        repr_picked={"for": None, "indices": picked},
    )
    assert not app.exception, app.exception
    with torch.no_grad():
        chosen = data.subset(mnist["test"], torch.as_tensor(picked))
        batches = data.iterate_batches(chosen, 60, shuffle=False)
        guesses = torch.cat([lenet5(x).argmax(1) for x, _ in batches])
    truth = mnist["test"].labels[picked]
    right = int((guesses == truth).sum())
    per_class = np.bincount(truth.numpy(), minlength=10)
    order = sorted(np.flatnonzero(per_class), key=lambda k: (-per_class[k], k))
    expected = f"60 images selected: {right} right, {60 - right} wrong; by true class: " + (
        ", ".join(f"{k}: {per_class[k]}" for k in order) + "."
    )
    assert any(m.value == f"**{expected}**" for m in app.markdown)
    cards = [b.label for b in app.button if b.key and b.key.startswith("repr_pick_")]
    wrong_first = sorted(range(60), key=lambda i: (bool(guesses[i] == truth[i]), i))[:48]
    assert cards == [f"#{picked[i]}" for i in wrong_first]
    assert any(c.value == "… and 12 more." for c in app.caption)
    # kept across a rerun, and when the reader leaves the page and comes back
    app.run()
    app.switch_page(SHAPE).run()
    app.switch_page(PAGE).run()
    assert len([b for b in app.button if b.key and b.key.startswith("repr_pick_")]) == 48
    # another layer's map is another projection: no stale gallery; back on it, it is there
    app.selectbox(key="_repr_layer").set_value("features.conv2").run()
    assert not [b for b in app.button if b.key and b.key.startswith("repr_pick_")]
    app.selectbox(key="_repr_layer").set_value("classifier.fc2").run()
    assert len([b for b in app.button if b.key and b.key.startswith("repr_pick_")]) == 48
    app.button(key="repr_picked_clear").click().run()
    assert not [b for b in app.button if b.key and b.key.startswith("repr_pick_")]
    assert "repr_picked" not in app.session_state
    # a card opens its image on the Activations page
    app.session_state["repr_picked"] = {"for": None, "indices": picked}
    app.run()
    app.button(key=f"repr_pick_{100 + wrong_first[0]}").click().run()
    assert not app.exception, app.exception
    assert app.session_state["lens_image_index"] == picked[wrong_first[0]]
    assert app.title[0].value == "Activations"


def test_in_the_html_report_puts_the_map_and_the_probes_in_the_models_report(
    deferred: dict,
) -> None:
    """The toggle on this page, the probes run here, the report built on the Model page: its
    Representations section holds this page's map (its images) and probe numbers."""
    from tests.test_report import figure_traces, parse

    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="mnist")
    app.toggle(key=f"repr_report_{SHIPPED}").set_value(True).run()
    open_tab(app, "repr_tab", "Probes")
    next(b for b in app.button if b.label == "Run the probes").click().run()
    assert not app.exception, app.exception
    shown = charts(app)["repr_probes"]["data"]
    probe_line, knn_line = array(shown[0]["y"]), array(shown[1]["y"])
    app.switch_page("pages/1_Model.py").run()
    assert not app.exception, app.exception
    build, _ = deferred["lenet5-mnist-report.html"]
    html = build()
    page = parse(html)
    rows = page.tables["probe-table"][1:]
    assert [float(r[2]) for r in rows] == [round(v, 2) for v in probe_line]
    assert [float(r[3]) for r in rows] == [round(v, 2) for v in knn_line]
    traces = figure_traces(html, "fig-projection")
    indices = sorted(int(i) for t in traces for i in array(t["customdata"])[:, 0])
    assert indices == rep.sample_indices(10_000, SHOWN).tolist()
    assert "classifier.fc2" in page.text_of["representations"]
