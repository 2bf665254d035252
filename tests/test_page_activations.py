"""The Activations page under AppTest, with a LeNet-5 trained on real MNIST: every number it
draws is checked against the model run independently (sub-networks, softmax by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import data
from dashboard.analysis import metrics
from dashboard.models import checkpoints
from tests.conftest import LENET5_MAP_LAYERS, REPO_ROOT
from tests.pages import plotly_array

PAGE = str(REPO_ROOT / "pages" / "5_Activations.py")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@pytest.fixture(scope="module")
def model_key(lenet5_mnist_checkpoint: Path) -> str:
    return f"ckpt:{lenet5_mnist_checkpoint}"


@pytest.fixture(scope="module")
def model(lenet5_mnist_checkpoint: Path) -> torch.nn.Module:
    return checkpoints.load_checkpoint(lenet5_mnist_checkpoint).model.eval()


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets)


def open_page(**state) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=120)
    seed(app, **state)
    return app.run()


def seed(app: AppTest, **state) -> None:
    """Session state as another page would leave it; a checkpoint outside trained/ and runs/
    is offered in the sidebar as this session's extra choice (like an upload)."""
    for key, value in state.items():
        app.session_state[key] = value
    if str(state.get("lens_model", "")).startswith("ckpt:"):
        app.session_state["lens_extra_models"] = [state["lens_model"]]


def image_tensor(split: data.Split, index: int) -> torch.Tensor:
    """The test image normalized by hand: (x / 255 − 0.1307) / 0.3081."""
    return ((split.images[index : index + 1].float() / 255) - MNIST_MEAN) / MNIST_STD


def charts(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def title_of(chart: dict) -> str:
    """A chart's title as read, the line breaks of a wrapped title as spaces."""
    return chart["layout"]["title"]["text"].replace("<br>", " ")


def chart_titled(app: AppTest, pattern: str) -> dict:
    found = [c for c in charts(app) if re.search(pattern, title_of(c))]
    titles = [title_of(c) for c in charts(app)]
    assert len(found) == 1, (pattern, titles)
    return found[0]


def array(value) -> np.ndarray:
    """A chart's array as float64 (a null, a gap, becomes NaN)."""
    return plotly_array(value, np.float64)


def tiles(chart: dict, channels: int, size: int) -> np.ndarray:
    """Cut the mosaic back into (channels, size, size) maps, row-major with 1-pixel gaps."""
    z = array(chart["data"][0]["z"])
    step = size + 1
    cols = (z.shape[1] + 1) // step
    return np.stack(
        [
            z[(k // cols) * step : (k // cols) * step + size, (k % cols) * step :][:, :size]
            for k in range(channels)
        ]
    )


def test_probability_bars_are_the_softmax_of_the_logits(
    model_key: str, model: torch.nn.Module, mnist_test: data.Split
) -> None:
    app = open_page(lens_model=model_key)
    assert not app.exception, app.exception
    for index in (0, 123):
        if index:
            app.number_input(key="_lens_image_index").set_value(index).run()
            assert not app.exception, app.exception
        with torch.no_grad():
            expected = torch.softmax(model(image_tensor(mnist_test, index))[0], dim=0).numpy()
        bars = chart_titled(app, r"^Prediction$")["data"][0]
        shown = dict(zip(bars["y"], array(bars["x"]), strict=True))
        assert len(shown) == 10
        for label, percent in shown.items():
            digit = int(label.split()[0])
            assert percent == pytest.approx(100 * expected[digit], abs=1e-4), label
        true = int(mnist_test.labels[index])
        assert f"{true}  ✓ true" in shown
        line = next(m.value for m in app.markdown if m.value.startswith("predicted"))
        assert line.startswith(f"predicted **{int(expected.argmax())}**")
        assert chart_titled(app, rf"^Test image {index}$")


def test_maps_are_the_sub_network_outputs(
    model_key: str, model: torch.nn.Module, mnist_test: data.Split
) -> None:
    app = open_page(lens_model=model_key, lens_image_index=9)
    assert not app.exception, app.exception
    x = image_tensor(mnist_test, 9)
    features = model.features  # conv1, relu1, pool1, conv2, relu2, pool2
    with torch.no_grad():
        conv1 = features.conv1(x)[0].numpy()
        relu1 = features.relu1(features.conv1(x))[0].numpy()
        conv2 = features[:4](x)[0].numpy()

    before = chart_titled(app, r"^features\.conv1 — test image 9$")
    np.testing.assert_allclose(tiles(before, 6, 28), conv1, rtol=0, atol=1e-5)

    app.radio(key="_act_after").set_value("after").run()
    assert not app.exception, app.exception
    after = chart_titled(app, r"^features\.conv1 after ReLU — test image 9$")
    np.testing.assert_allclose(tiles(after, 6, 28), relu1, rtol=0, atol=1e-5)
    assert (tiles(after, 6, 28) >= 0).all()

    app.radio(key="_act_after").set_value("before").run()
    app.selectbox(key="_lens_layer").set_value("features.conv2").run()
    assert not app.exception, app.exception
    assert app.session_state["lens_layer"] == "features.conv2"
    deeper = chart_titled(app, r"^features\.conv2 — test image 9$")
    np.testing.assert_allclose(tiles(deeper, 16, 10), conv2, rtol=0, atol=1e-5)
    assert deeper["data"][0]["zmin"] == pytest.approx(conv2.min(), abs=1e-5)  # per layer
    assert deeper["data"][0]["zmax"] == pytest.approx(conv2.max(), abs=1e-5)

    app.radio(key="_act_scale").set_value("global").run()
    assert not app.exception, app.exception
    with torch.no_grad():
        every = [features[: k + 1](x) for k in range(len(features))]
    glob = chart_titled(app, r"^features\.conv2 — test image 9$")["data"][0]
    assert glob["zmin"] == pytest.approx(min(float(t.min()) for t in every), abs=1e-5)
    assert glob["zmax"] == pytest.approx(max(float(t.max()) for t in every), abs=1e-5)


def test_channel_table_and_dead_channels(
    model_key: str, model: torch.nn.Module, mnist_test: data.Split
) -> None:
    app = open_page(lens_model=model_key, lens_image_index=4)
    app.toggle(key="_act_sort").set_value(True).run()
    assert not app.exception, app.exception
    table = app.dataframe[0].value
    x = image_tensor(mnist_test, 4)
    batch = ((mnist_test.images[:256].float() / 255) - MNIST_MEAN) / MNIST_STD
    with torch.no_grad():
        conv1 = model.features.conv1(x)[0]
        fired = torch.relu(model.features.conv1(batch)).amax(dim=(0, 2, 3))
    means = conv1.mean(dim=(1, 2)).double()
    order = torch.argsort(-means, stable=True).tolist()
    assert table["Channel"].tolist() == order  # sorted by mean activation
    np.testing.assert_allclose(table["Mean"], means[order], rtol=1e-5)
    np.testing.assert_allclose(table["Max"], conv1.amax(dim=(1, 2))[order], rtol=1e-6)
    zero = (conv1 <= 0).double().mean(dim=(1, 2)) * 100
    np.testing.assert_allclose(table["Zero or below (%)"], zero[order], rtol=1e-9)
    assert table["Dead over 256 test images"].tolist() == (fired[order] <= 0).tolist()
    sorted_chart = chart_titled(app, r"^features\.conv1 — test image 4$")
    np.testing.assert_allclose(tiles(sorted_chart, 6, 28), conv1[order].numpy(), atol=1e-5)


def test_misclassified_list_equals_metrics(
    model_key: str, model: torch.nn.Module, mnist_test: data.Split
) -> None:
    app = open_page(lens_model=model_key)
    app.radio(key="_lens_image_mode").set_value("misclassified").run()
    assert not app.exception, app.exception
    pred = metrics.predict(model, mnist_test)
    wrong = metrics.misclassified(pred)
    assert 0 < len(wrong) < 2000
    choice = app.selectbox(key="_act_mistake")
    listed = [int(re.match(r"#(\d+):", label).group(1)) for label in choice.options]
    assert listed == wrong.tolist()
    first = wrong[0]
    assert choice.options[0] == (
        f"#{first}: {pred.labels[first]} → {pred.predicted[first]} "
        f"({pred.probabilities[first, pred.predicted[first]]:.0%})"
    )
    assert app.session_state["lens_image_index"] == first  # the list opens on its first image
    choice.set_value(int(wrong[3])).run()
    assert app.session_state["lens_image_index"] == wrong[3]
    line = next(m.value for m in app.markdown if m.value.startswith("predicted"))
    assert line.endswith("✗")
    app.selectbox(key="_act_mistake_class").set_value(4).run()
    fours = [
        int(re.match(r"#(\d+):", o).group(1)) for o in app.selectbox(key="_act_mistake").options
    ]
    assert fours == [i for i in wrong.tolist() if pred.labels[i] == 4]


def test_class_pick_walks_the_images_of_one_class(model_key: str, mnist_test: data.Split) -> None:
    app = open_page(lens_model=model_key)
    app.radio(key="_lens_image_mode").set_value("by class").run()
    app.selectbox(key="_act_class").set_value(3).run()
    threes = np.flatnonzero(mnist_test.labels.numpy() == 3)
    assert app.session_state["lens_image_index"] == threes[0]
    app.number_input(key="_act_which").set_value(5).run()
    assert not app.exception, app.exception
    assert app.session_state["lens_image_index"] == threes[5]
    assert chart_titled(app, rf"^Test image {threes[5]:,}$")


def test_an_image_opened_by_link_or_by_another_page(model_key: str) -> None:
    app = AppTest.from_file(PAGE, default_timeout=120)
    seed(app, lens_model=model_key)
    app.query_params["image"] = "42"
    app.run()
    assert not app.exception, app.exception
    assert app.session_state["lens_image_index"] == 42
    assert chart_titled(app, r"^Test image 42$")
    other = open_page(lens_model=model_key, lens_image_index=77, lens_input_source="test image")
    assert chart_titled(other, r"^Test image 77$")
    assert chart_titled(other, r"^features\.conv1 — test image 77$")


def test_compare_all_layers_and_grad_cam(
    model_key: str, model: torch.nn.Module, mnist_test: data.Split
) -> None:
    app = open_page(lens_model=model_key, lens_image_index=2)
    app.toggle(key="_act_two").set_value(True).run()
    app.number_input(key="_lens_compare_index").set_value(11).run()
    assert not app.exception, app.exception
    # Both images, both predictions, both sets of maps on one colour scale.
    assert chart_titled(app, r"^Test image 2$")
    assert chart_titled(app, r"^Test image 11$")
    assert chart_titled(app, r"^Prediction — test image 11$")
    first = chart_titled(app, r"^features\.conv1 — test image 2$")
    second = chart_titled(app, r"^features\.conv1 — test image 11$")
    with torch.no_grad():
        maps = [model.features.conv1(image_tensor(mnist_test, i))[0].numpy() for i in (2, 11)]
    np.testing.assert_allclose(tiles(first, 6, 28), maps[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(tiles(second, 6, 28), maps[1], rtol=0, atol=1e-5)
    low, high = min(m.min() for m in maps), max(m.max() for m in maps)
    for chart in (first, second):  # "per layer" over both inputs: one scale for the pair
        assert chart["data"][0]["zmin"] == pytest.approx(low, abs=1e-5)
        assert chart["data"][0]["zmax"] == pytest.approx(high, abs=1e-5)

    app.toggle(key="_act_all").set_value(True).run()
    assert not app.exception, app.exception
    names = LENET5_MAP_LAYERS
    with torch.no_grad():
        x = image_tensor(mnist_test, 2)
        expected = [model.features[: k + 1](x)[0].numpy() for k in range(len(names))]
    stack = chart_titled(app, r"^Every layer — test image 2$")  # one chart, a block a layer
    assert [trace["name"] for trace in stack["data"]] == names
    layout = stack["layout"]
    height = layout["yaxis"]["range"][0]
    for k, (trace, maps) in enumerate(zip(stack["data"], expected, strict=True)):
        custom = array(trace["customdata"])
        inside = ~np.isnan(array(trace["z"]))
        channel, y, x_ = (custom[inside][:, i].astype(int) for i in range(3))
        np.testing.assert_allclose(custom[inside][:, 3], maps[channel, y, x_], atol=1e-5)
        assert inside.sum() == maps.size  # every value of the layer, once
        bar = layout["coloraxis" if k == 0 else f"coloraxis{k + 1}"]["colorbar"]
        top = trace["y0"] - trace["dy"] / 2
        assert bar["y"] == pytest.approx(1 - top / height)  # its own bar, beside its maps
        assert bar["len"] == pytest.approx(array(trace["z"]).shape[0] * trace["dy"] / height)
    predicted = int(
        next(m.value for m in app.markdown if m.value.startswith("predicted")).split("**")[1]
    )
    assert app.selectbox(key="_act_cam_layer").value == "features.relu2"  # last conv block
    assert app.selectbox(key="_act_cam").value == predicted
    assert chart_titled(app, rf"^Grad-CAM for '{predicted}' at features\.relu2$")


def test_untrained_model_is_labelled(shared_datasets: Path) -> None:
    app = open_page(lens_model="arch:lenet5")
    assert not app.exception, app.exception
    assert any("Untrained — random weights" in w.value for w in app.warning)
    assert chart_titled(app, r"^features\.conv1 — test image 0$")


def test_blank_canvas_asks_for_a_drawing(model_key: str) -> None:
    app = open_page(lens_model=model_key, lens_input_source="draw")
    assert not app.exception, app.exception
    assert any("canvas is empty" in i.value for i in app.info)
