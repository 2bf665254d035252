"""The Filters page under AppTest: the drawn numbers are the model's weights, read back from the
figures and checked against the checkpoint's own tensors, the snapshots saved during training,
and an independent (SciPy) computation of the classic kernels' responses."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import ndimage
from streamlit.testing.v1 import AppTest

from dashboard import data, figures, models
from dashboard.analysis import filters, probe
from dashboard.base import paths
from dashboard.base.errors import ShapeError, UnknownNameError
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import plotly_array, run_page

PAGE = "pages/4_Filters.py"


@pytest.fixture(scope="module")
def trained(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """course-net trained 2 epochs on 2,000 MNIST digits by the CLI: it saves filter snapshots."""
    out = tmp_path_factory.mktemp("filters") / "course-net-2ep"
    command = [sys.executable, "-m", "dashboard", "train", "--model", "course-net"]
    command += ["--dataset", "mnist", "--epochs", "2", "--limit-train", "2000"]
    command += ["--limit-test", "500", "--seed", "0"]
    command += ["--data-root", str(shared_datasets), "--out", str(out)]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    return out.with_suffix(".safetensors")


def open_page(model_key: str, dataset: str = "mnist", **state) -> AppTest:
    return run_page(PAGE, extra=True, lens_model=model_key, lens_dataset=dataset, **state)


def charts(app: AppTest) -> dict[str, dict]:
    """Every plotly figure of the page by its title (a wrapped title's line breaks as spaces)."""
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    return {spec["layout"]["title"]["text"].replace("<br>", " "): spec for spec in specs}


def array(value) -> np.ndarray:
    """A chart's array: typed arrays as sent, lists as float64."""
    return plotly_array(value, None if isinstance(value, dict) else np.float64)


def heatmap_z(spec: dict) -> np.ndarray:
    (heat,) = [t for t in spec["data"] if t["type"] == "heatmap"]
    return array(heat["z"])


def test_default_layer_draws_the_checkpoint_weights(trained: Path) -> None:
    key = f"ckpt:{trained}"
    app = open_page(key)
    assert app.selectbox(key="_filters_layer").value == "features.conv1"
    assert not [w for w in app.warning if "untrained" in w.value]
    # The default epoch is the last one saved: the final weights.
    assert app.select_slider(key="_filters_epoch").value == 2
    spec = charts(app)["features.conv1 · epoch 2"]
    z = heatmap_z(spec)
    loaded = checkpoints.load_checkpoint(trained)
    weights = probe.filter_weights(loaded.model, "features.conv1")  # (10, 1, 5, 5)
    expected, layout = figures.tile(weights.numpy().mean(axis=1), pad=1)
    np.testing.assert_array_equal(z, expected)
    # and straight from the file, for a few filters: tile k sits at layout.origin(k)
    state = load_file(str(trained))
    for k in (0, 4, 9):
        y, x = layout.origin(k)
        np.testing.assert_array_equal(
            z[y : y + 5, x : x + 5], state["features.conv1.weight"][k, 0].double().numpy()
        )
    limit = float(np.abs(weights.numpy()).max())
    heat = spec["data"][0]
    assert heat["zmin"] == pytest.approx(-limit)
    assert heat["zmax"] == pytest.approx(limit)
    stats = {m.label: m.value for m in app.metric}
    assert stats["Mean"] == f"{np.mean(state['features.conv1.weight'].double().numpy()):.3g}"
    assert stats["Max"] == f"{weights.max().item():.3g}"


def test_per_filter_scale_divides_each_filter_by_its_max(trained: Path) -> None:
    app = open_page(f"ckpt:{trained}")
    app.radio(key="_filters_scale").set_value("per filter").run()
    assert not app.exception
    z = heatmap_z(charts(app)["features.conv1 · epoch 2"])
    state = load_file(str(trained))
    w = state["features.conv1.weight"][:, 0].double().numpy()  # (10, 5, 5)
    scaled = w / np.abs(w).reshape(10, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(z, figures.tile(scaled, pad=1)[0], rtol=1e-12)
    # every tile reaches ±1 exactly
    layout = figures.tile(scaled, pad=1)[1]
    for k in range(10):
        y, x = layout.origin(k)
        assert np.abs(z[y : y + 5, x : x + 5]).max() == pytest.approx(1.0)


def test_input_channel_picker_mean_or_one_channel(trained: Path) -> None:
    app = open_page(f"ckpt:{trained}")
    app.selectbox(key="_filters_layer").set_value("features.conv2").run()
    assert not app.exception
    w = load_file(str(trained))["features.conv2.weight"].double().numpy()  # (20, 10, 5, 5)
    z = heatmap_z(charts(app)["features.conv2 · epoch 2"])
    np.testing.assert_allclose(z, figures.tile(w.mean(axis=1), pad=1)[0], rtol=1e-12)
    app.radio(key="_filters_channels").set_value("one input channel").run()
    app.slider(key="_filters_channel").set_value(3).run()
    assert not app.exception
    z = heatmap_z(charts(app)["features.conv2 · epoch 2"])
    np.testing.assert_allclose(z, figures.tile(w[:, 3], pad=1)[0], rtol=1e-12)
    # no classic comparison for a deeper layer, but a pointer to the first layer
    assert any("features.conv1" in c.value for c in app.caption)
    assert "Classic edge detectors" not in charts(app)


def test_epoch_slider_shows_the_snapshots_saved_during_training(trained: Path) -> None:
    app = open_page(f"ckpt:{trained}")
    slider = app.select_slider(key="_filters_epoch")
    assert list(slider.options) == ["0 (before training)", "1", "2"]
    final = heatmap_z(charts(app)["features.conv1 · epoch 2"])
    slider.set_value(0).run()
    assert not app.exception
    before = heatmap_z(charts(app)["features.conv1 · before training"])
    snapshot = load_file(str(trained))["lens_history/epoch0/features.conv1"]
    np.testing.assert_array_equal(before, figures.tile(snapshot[:, 0].double().numpy(), pad=1)[0])
    assert not np.allclose(before, final, equal_nan=True)  # training moved the filters
    moved = {m.label: m.value for m in app.metric}["Change since epoch 0"]
    assert moved == "0.0%"


def test_checkpoint_without_history_says_so(trained: Path, tmp_path: Path) -> None:
    loaded = checkpoints.load_checkpoint(trained)
    card = dataclasses.replace(loaded.card, name="no-history")
    path = checkpoints.save_checkpoint(loaded.model, card, tmp_path / "no-history")
    app = open_page(f"ckpt:{path}")
    assert not app.select_slider
    assert any("No per-epoch history saved with this checkpoint" in c.value for c in app.caption)


def test_classic_kernels_and_their_responses_are_exact(trained: Path) -> None:
    app = open_page(f"ckpt:{trained}", filters_image=7)
    specs = charts(app)
    kernels = filters.edge_kernels()
    classic = specs["Classic edge detectors"]
    z = heatmap_z(classic)
    labels = next(t for t in classic["data"] if t.get("name") == "labels")["text"]
    assert labels == list(kernels)
    pad = int(np.isnan(z[:, 0]).argmin())  # the label band above the first row of tiles
    mosaic = figures.tile(np.stack(list(kernels.values())).astype(float), pad=pad)[0]
    np.testing.assert_array_equal(z[pad:], mosaic)
    # The responses: SciPy's correlate with edge replication is the oracle.
    split = data.load_split("mnist", "test", data_root=paths.data_root(None))
    card = checkpoints.read_card(trained)
    mean, std = card.normalization["mean"], card.normalization["std"]
    gray = data.normalize(split.images[7], mean, std)[0].double().numpy()
    response = filters.classic_responses(data.normalize(split.images[7], mean, std))
    for k, kernel in enumerate(kernels.values()):
        expected = ndimage.correlate(gray, kernel.astype(float), mode="nearest")
        np.testing.assert_allclose(response[k], expected, atol=1e-4)
    shown = specs["Classic kernels"]
    custom = array(next(t for t in shown["data"] if t["type"] == "heatmap")["customdata"])
    for k in (0, 4, 7):  # hover carries the true response of every pixel
        y, x = layout_origin(shown, k)
        np.testing.assert_allclose(custom[y : y + 28, x : x + 28, 3], response[k], rtol=1e-5)
    learned = specs["features.conv1 filters"]
    assert next(t for t in learned["data"] if t.get("name") == "labels")["text"][0] == "filter 0"
    assert app.dataframe[0].value["Nearest classic kernel"].isin(list(kernels)).all()


def layout_origin(spec: dict, k: int) -> tuple[int, int]:
    """Top-left (y, x) of tile k of a labelled grid, read from its outline trace."""
    outline = next(t for t in spec["data"] if t.get("name") == "tiles")
    xs, ys = outline["x"][6 * k], outline["y"][6 * k]
    return int(ys + 0.5), int(xs + 0.5)


def test_untrained_vgg13_512_channel_layer_is_one_image() -> None:
    app = open_page("arch:vgg13")
    assert any("Untrained — random weights" in w.value for w in app.warning)
    assert any("has not been trained" in c.value for c in app.caption)
    last = "features.22"  # the last conv: 512 filters of 512×3×3
    app.selectbox(key="_filters_layer").set_value(last).run()
    assert not app.exception
    spec = charts(app)[last]
    assert sum(t["type"] == "heatmap" for t in spec["data"]) == 1
    layout = figures.tile(np.zeros((512, 3, 3)), pad=1)[1]
    assert heatmap_z(spec).shape == (layout.height, layout.width)
    histogram = charts(app)[f"{last} weights"]
    assert int(array(histogram["data"][0]["y"]).sum()) == 512 * 512 * 9


def test_rgb_first_layer_gets_colour_composites_and_a_mismatched_dataset_a_message() -> None:
    app = open_page("arch:alexnet-small", dataset="cifar10")
    first = models.model_info("alexnet-small").first_conv
    specs = charts(app)
    rgb = specs[f"{first} as colour images"]
    assert rgb["data"][0]["type"] == "image"
    assert "Classic kernels" in specs  # CIFAR-10 images fit: responses drawn
    app.sidebar.selectbox[1].select("mnist").run()  # 1-channel digits for a 3-channel model
    assert not app.exception
    assert any("No test image to apply the filters to" in i.value for i in app.info)
    assert f"{first} as colour images" in charts(app)


# ---------------------------------------------------------------------------------------------
# dashboard/analysis/filters.py on its own


def test_classic_matches_find_scaled_flipped_summed_and_resized_kernels() -> None:
    k = filters.edge_kernels()
    weights = np.zeros((3, 3, 3, 3))
    weights[0, 0] = 3 * k["Sobel x"]  # a scaled classic kernel
    weights[1, 1] = -k["Prewitt y"]  # the same edge with the opposite sign
    weights[2] = k["Sobel y"] / 3  # spread over the three input channels
    matches = filters.classic_matches(weights)
    assert [(m.filter, m.kernel) for m in matches] == [
        (0, "Sobel x"), (1, "Prewitt y"), (2, "Sobel y"),
    ]  # fmt: skip
    assert [m.cosine for m in matches] == pytest.approx([1.0, -1.0, 1.0])
    # a 5×5 filter is compared with the classic kernels resized to 5×5
    five = filters.classic_kernels((5, 5))["Sobel 45°"]
    (match,) = filters.classic_matches(five[None, None] * 0.1)
    assert (match.kernel, match.cosine) == ("Sobel 45°", pytest.approx(1.0))
    # resizing keeps the corners (align_corners) and the antisymmetry of an edge detector
    assert five[0, 0] == k["Sobel 45°"][0, 0]
    assert five[-1, -1] == k["Sobel 45°"][-1, -1]
    np.testing.assert_allclose(five, -np.rot90(five, 2), atol=1e-12)
    assert filters.classic_matches(np.ones((1, 1, 3, 3)))[0].cosine == pytest.approx(0, abs=1e-12)


def test_filter_responses_equal_scipy_on_a_real_colour_image(shared_datasets: Path) -> None:
    split = data.load_split("cifar10", "test", data_root=shared_datasets)
    x = data.normalize(split.images[3], split.info.mean, split.info.std)  # (3, 32, 32)
    w = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    out = filters.filter_responses(w, x)
    assert out.shape == (6, 32, 32)
    image, kernels = x.double().numpy(), w.double().numpy()
    for o in range(6):
        expected = sum(ndimage.correlate(image[c], kernels[o, c], mode="nearest") for c in range(3))
        np.testing.assert_allclose(out[o], expected, atol=1e-4)
    gray = filters.to_gray(x)[0].double().numpy()
    np.testing.assert_allclose(gray, image.mean(axis=0), atol=1e-6)
    with pytest.raises(ShapeError):
        filters.filter_responses(w, x[:1])


def test_weights_history_stats_and_normalization(trained: Path) -> None:
    loaded = checkpoints.load_checkpoint(trained)
    history = loaded.filter_history
    assert filters.history_epochs(history, "features.conv2") == [0, 1, 2]
    assert filters.history_epochs(history, "classifier.fc") == []
    now = filters.layer_weights(loaded.model, "features.conv2")
    assert torch.equal(now, loaded.model.features.conv2.weight.detach())
    start = filters.layer_weights(loaded.model, "features.conv2", history, 0)
    assert torch.equal(start, load_file(str(trained))["lens_history/epoch0/features.conv2"])
    with pytest.raises(UnknownNameError, match="epochs saved: 0, 1, 2"):
        filters.layer_weights(loaded.model, "features.conv2", history, 7)
    moved = filters.drift(history, "features.conv2")
    w0, w2 = start.double(), history[2]["features.conv2"].double()
    assert moved[0] == 0.0
    assert moved[2] == pytest.approx(((w2 - w0).norm() / w0.norm()).item())
    stats = filters.weight_stats(now)
    values = now.double().numpy()
    assert stats.count == values.size == 20 * 10 * 5 * 5
    assert (stats.mean, stats.std) == pytest.approx((values.mean(), values.std()))
    assert (stats.min, stats.max) == (values.min(), values.max())
    info = data.dataset_info("mnist")
    assert filters.normalization(loaded.card, info) == (
        tuple(loaded.card.normalization["mean"]),
        tuple(loaded.card.normalization["std"]),
    )
    assert filters.normalization(None, info) == (info.mean, info.std)
    names = [layer.label for layer in filters.conv_layer_list(loaded.model)]
    assert names == [
        "features.conv1 — 10 filters of 1×5×5",
        "features.conv2 — 20 filters of 10×5×5",
    ]
