"""Figure builders of the Representations page: what each figure holds, read back from it."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from dashboard.base.errors import ShapeError
from dashboard.figures import representations as rf

CLASSES = [str(d) for d in range(10)]


@pytest.fixture
def points() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    predicted = labels.copy()
    predicted[::7] = (predicted[::7] + 1) % 10  # some mistakes
    return {
        "coords": rng.normal(size=(300, 3)),
        "labels": labels,
        "predicted": predicted,
        "indices": np.arange(300) * 3 + 5,  # the images' places in the split
    }


def _by_name(fig: go.Figure) -> dict[str, go.BaseTraceType]:
    return {trace.name: trace for trace in fig.data}


def test_scatter_by_true_class_carries_each_image_index(points: dict[str, np.ndarray]) -> None:
    fig = rf.embedding_scatter(
        points["coords"][:, :2],
        points["labels"],
        points["predicted"],
        CLASSES,
        indices=points["indices"],
        axis_titles=rf.pca_axis_titles(np.array([0.4, 0.2, 0.1]), 2),
    )
    traces = _by_name(fig)
    assert list(traces) == CLASSES  # one trace per class: the legend hides a class
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    three = traces["3"]
    rows = np.flatnonzero(points["labels"] == 3)
    np.testing.assert_array_equal(three.x, points["coords"][rows, 0])
    custom = np.array(three.customdata)
    np.testing.assert_array_equal(custom[:, 0].astype(int), points["indices"][rows])
    np.testing.assert_array_equal(custom[:, 1].astype(int), rows)
    assert set(custom[:, 2]) == {"3"}
    assert "image %{customdata[0]}" in three.hovertemplate
    assert fig.layout.xaxis.title.text == "PC1 (40.0 % of variance)"
    assert sum(len(t.x) for t in fig.data) == 300


def test_scatter_by_prediction_and_by_correctness(points: dict[str, np.ndarray]) -> None:
    args = (points["coords"][:, :2], points["labels"], points["predicted"], CLASSES)
    by_prediction = _by_name(rf.embedding_scatter(*args, colour_by="predicted"))
    assert len(by_prediction["4"].x) == int((points["predicted"] == 4).sum())
    right = int((points["labels"] == points["predicted"]).sum())
    by_correct = rf.embedding_scatter(*args, colour_by="correct")
    assert [t.name for t in by_correct.data] == [f"correct ({right:,})", f"wrong ({300 - right})"]
    assert by_correct.data[1].marker.color == rf.WRONG
    with pytest.raises(ValueError, match="unknown colouring"):
        rf.embedding_scatter(*args, colour_by="size")


def test_scatter_in_three_dimensions_with_a_clicked_point(points: dict[str, np.ndarray]) -> None:
    fig = rf.embedding_scatter(
        points["coords"],
        points["labels"],
        points["predicted"],
        CLASSES,
        focus=12,
        neighbours=[40, 41, 42],
    )
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    traces = _by_name(fig)
    np.testing.assert_array_equal(traces["clicked image"].z, points["coords"][[12], 2])
    assert len(traces["nearest neighbours"].x) == 3
    assert fig.layout.scene.zaxis.title.text == "dimension 3"
    with pytest.raises(ShapeError):
        rf.embedding_scatter(
            points["coords"][:, :1], points["labels"], points["predicted"], CLASSES
        )


def test_many_classes_get_distinct_colours() -> None:
    for count in (10, 20, 100):
        assert len(set(rf.class_colours(count))) == count


def test_explained_variance_bars_and_running_total() -> None:
    explained = np.array([0.5, 0.25, 0.125, 0.0625])
    fig = rf.explained_variance_bars(explained)
    bars, total = fig.data
    np.testing.assert_allclose(bars.y, [50, 25, 12.5, 6.25])
    np.testing.assert_allclose(total.y, [50, 75, 87.5, 93.75])
    assert "93.8 %" in fig.layout.title.subtitle.text


def test_probe_chart_draws_each_measure_per_layer_and_the_model() -> None:
    layers = ["conv1", "pool1", "fc1"]
    fig = rf.probe_chart(
        layers, [0.5, 0.7, 0.99], [0.4, 0.6, 0.98], [-0.1, None, 0.4], 0.992, features=[6, 6, 120]
    )
    probe, knn, silhouette = fig.data
    np.testing.assert_allclose(probe.y, [50, 70, 99])
    np.testing.assert_allclose(knn.y, [40, 60, 98])
    assert silhouette.yaxis == "y2"
    assert np.isnan(silhouette.y[1])  # undefined: a gap, not a zero
    assert list(fig.layout.xaxis.ticktext) == layers
    (line,) = fig.layout.shapes
    assert line.y0 == pytest.approx(99.2)
    assert "99.20 %" in fig.layout.annotations[0].text
    assert "120 features" in str(probe.customdata[2])
    with pytest.raises(ShapeError):
        rf.probe_chart(layers, [0.5], [0.4], [0.1], 0.9)


def test_cka_heatmaps_of_one_model_and_of_two() -> None:
    one = np.array([[1.0, 0.6], [0.6, 1.0]])
    fig = rf.cka_heatmap(one, ["conv1", "fc1"])
    (heat,) = fig.data
    np.testing.assert_array_equal(heat.z, one)
    assert (heat.zmin, heat.zmax) == (0, 1)
    assert list(fig.layout.xaxis.ticktext) == list(fig.layout.yaxis.ticktext) == ["conv1", "fc1"]
    two = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.5]])
    fig = rf.cka_heatmap(two, ["a1", "a2"], ["b1", "b2", "b3"], row_title="A", column_title="B")
    assert list(fig.layout.xaxis.ticktext) == ["b1", "b2", "b3"]
    assert list(fig.data[0].customdata[1][2]) == ["a2", "b3"]
    assert fig.layout.yaxis.title.text == "A"
    with pytest.raises(ShapeError):
        rf.cka_heatmap(two, ["a1", "a2"])
