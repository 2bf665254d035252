"""The Channels page under AppTest with the shipped LeNet-5 on real MNIST: the layer's tiles are
one per channel, a channel's top images and their activations are those a plain forward pass
with a hook finds, the widgets outlive a page switch, and a dataset the model cannot read is
one message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import data
from dashboard.analysis import channels, probe
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import run_page
from tests.test_page_activations import array
from tests.test_page_state import holds, opened
from tests.test_report import parse

PAGE = "pages/9_Channels.py"
SHIPPED = REPO_ROOT / "trained" / "lenet5-mnist.safetensors"
MODEL_KEY = "ckpt:trained/lenet5-mnist.safetensors"
IMAGES = 2000  # the page's default count of test images


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return checkpoints.load_checkpoint(SHIPPED).model.eval()


@pytest.fixture(scope="module")
def first_images(shared_datasets: Path) -> data.Split:
    return data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), IMAGES)


def charts(app: AppTest) -> dict[str, dict]:
    """Every plotly chart by its title, a wrapped title's lines joined by spaces."""
    found = {}
    for chart in app.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        found[spec["layout"]["title"]["text"].replace("<br>", " ")] = spec
    return found


def hover_cells(chart: dict) -> np.ndarray:
    """The customdata of the invisible hover grid over the tiles, one row per tile."""
    cells = next(t for t in chart["data"] if t.get("name") == "tiles")
    custom = array(cells["customdata"])
    custom = custom.reshape(-1, custom.shape[-1])
    return custom[~np.isnan(custom[:, 0])]


def maxima_by_hook(model: torch.nn.Module, split: data.Split, module: torch.nn.Module):
    """(N, C) spatial maximum of `module`'s output per image, by a forward hook on the model,
    the images normalized by hand."""
    kept: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, out: kept.append(out.amax(dim=(2, 3))))
    try:
        x = (split.images.float() / 255 - 0.1307) / 0.3081
        with torch.no_grad():
            predicted = torch.cat([model(b).argmax(1) for b in x.split(500)])
    finally:
        handle.remove()
    return torch.cat(kept).numpy(), predicted.numpy()


def test_tiles_are_the_channels_and_top_images_are_the_hooks_maxima(
    model: torch.nn.Module, first_images: data.Split
) -> None:
    app = opened(PAGE, lens_model=MODEL_KEY)
    assert not app.error, [e.value for e in app.error]
    assert app.selectbox(key="_ch_layer").value == "features.conv2"  # the last conv
    maxima, predicted = maxima_by_hook(model, first_images, model.features.conv2)
    found = charts(app)
    tiles = hover_cells(found["features.conv2: 16 channels by channel"])
    assert sorted(tiles[:, 0].astype(int)) == list(range(model.features.conv2.out_channels))

    selectivity: dict[int, float] = {}
    for channel in (0, 11):
        if channel:
            app.number_input(key="_ch_channel").set_value(channel).run()
            assert not app.exception, app.exception
        top = hover_cells(charts(app)[f"Channel {channel}: top 9 images"])
        index, activation = top[:, 0].astype(int), top[:, 1]
        np.testing.assert_allclose(activation, maxima[index, channel], rtol=1e-5, atol=1e-5)
        # the nine largest maxima of the 2,000 images, largest first
        np.testing.assert_allclose(
            activation, np.sort(maxima[:, channel])[::-1][:9], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(top[:, 8], first_images.labels.numpy()[index])  # true
        np.testing.assert_array_equal(top[:, 9], predicted[index])  # predicted

        # per class, the mean of the channel's maximum after a ReLU; Morcos et al.'s index
        labels = first_images.labels.numpy()
        fired = np.maximum(maxima[:, channel].astype(np.float64), 0)
        means = np.array([fired[labels == k].mean() for k in range(10)])
        best = means.max()
        rest = (means.sum() - best) / 9
        wanted = selectivity[channel] = (best - rest) / (best + rest)
        bars = charts(app)[f"Channel {channel}: selectivity {wanted:.3f}"]["data"][0]
        np.testing.assert_allclose(array(bars["y"]), means, rtol=1e-5)
        histogram = charts(app)[f"Channel {channel}: its maximum per image"]["data"][0]
        assert array(histogram["y"]).sum() == IMAGES

    # the tiles by selectivity: decreasing, as computed by hand for the channels checked
    app.selectbox(key="_ch_order").set_value("selectivity").run()
    order = hover_cells(charts(app)["features.conv2: 16 channels by selectivity"])[:, 0]
    assert order.tolist().index(0) < order.tolist().index(11) or selectivity[0] <= selectivity[11]
    assert order.tolist().index(11) < order.tolist().index(0) or selectivity[11] <= selectivity[0]


def test_layer_channel_and_order_hold_after_a_visit_to_another_page(shared_datasets: Path):
    app = opened(PAGE, lens_model=MODEL_KEY)
    changes = [
        ("selectbox", "_ch_layer", "features.conv1"),
        ("number_input", "_ch_channel", 4),
        ("selectbox", "_ch_order", "selectivity"),
        ("number_input", "_ch_images", 1000),
    ]
    holds(app, PAGE, changes)
    assert "features.conv1: 6 channels by selectivity" in charts(app)


def test_a_dataset_the_model_cannot_read_is_one_message(shared_datasets: Path):
    app = opened(PAGE, lens_model=MODEL_KEY, lens_dataset="cifar10")
    notes = [e.value for e in (*app.info, *app.error)]
    assert len(notes) == 1, notes
    assert "takes 1-channel images, CIFAR-10 has 3" in notes[0], notes
    assert not app.get("plotly_chart")


def tile_step(app: AppTest, title: str) -> float:
    """Pixels from one tile's centre to the next one's: the tile's width and the gap."""
    cells = next(t for t in charts(app)[title]["data"] if t.get("name") == "tiles")
    xs = array(cells["x"])
    return float(xs[1] - xs[0])


def test_feature_visualization_runs_on_request_and_joins_the_tiles(shared_datasets: Path):
    app = opened(PAGE, lens_model=MODEL_KEY, lens_dataset="mnist")
    app.selectbox(key="_ch_layer").set_value("features.conv1").run()
    app.number_input(key="_ch_steps").set_value(16).run()
    title = "features.conv1: 6 channels by channel"
    alone = tile_step(app, title)
    assert not app.get("image")
    app.button[0].click().run()
    assert not app.exception, app.exception
    assert any("optimized for 16 steps" in c.value for c in app.caption)
    assert len(app.get("image")) == 1
    # each tile is now the visualization, a 1-pixel gap and the crop side by side
    assert tile_step(app, title) - alone == pytest.approx(48 + 1)
    assert any("left: its feature visualization" in c.value for c in app.caption)


def test_a_link_opens_its_layer_and_channel(shared_datasets: Path):
    query = {"layer": "features.pool1", "channel": "5"}
    app = run_page(PAGE, query=query, lens_model=MODEL_KEY, extra=True)
    assert app.selectbox(key="_ch_layer").value == "features.pool1"
    assert app.number_input(key="_ch_channel").value == 5
    assert "Channel 5: top 9 images" in charts(app)


def test_a_layer_added_to_the_report_is_in_the_model_pages_report(
    model: torch.nn.Module, first_images: data.Split, deferred: dict, one_torch_thread
) -> None:
    """The toggle under the tiles puts the layer's atlas into the report the Model page builds:
    the same layer, images and top activations as the Channels page's atlas."""
    app = opened(PAGE, lens_model=MODEL_KEY, lens_dataset="mnist")
    app.selectbox(key="_ch_layer").set_value("features.conv1").run()
    app.number_input(key="_ch_images").set_value(500).run()
    (toggle,) = [t for t in app.toggle if t.label == "In the HTML report"]
    toggle.set_value(True).run()
    assert not app.exception, app.exception
    assert app.session_state["lens_report_atlases"][MODEL_KEY] == [["features.conv1", 500, 64]]
    assert any("will hold the atlas of: features.conv1" in c.value for c in app.caption)
    app.switch_page("pages/1_Model.py").run()
    assert not app.exception, app.exception
    build, _ = deferred["lenet5-mnist-report.html"]
    page = parse(build())
    rows = page.tables["atlas-table-features.conv1"][1:]
    assert [int(r[0]) for r in rows] == list(range(6))
    record = next(s for s in page.scripts if "atlas-data" in s.get("class", ""))
    atlas_json = json.loads(record["body"])
    assert atlas_json["images"] == 500
    tops = [c["top"][0]["activation"] for c in atlas_json["channels"]]
    maxima, _ = maxima_by_hook(model, data.take_first(first_images, 500), model.features.conv1)
    np.testing.assert_allclose(tops, maxima.max(axis=0), rtol=1e-5, atol=1e-5)


def test_a_first_layer_channel_shows_its_filter_and_the_classes_can_be_visualized(
    model: torch.nn.Module, shared_datasets: Path
) -> None:
    app = opened(PAGE, lens_model=MODEL_KEY, lens_dataset="mnist")
    app.selectbox(key="_ch_layer").set_value("features.conv1").run()
    app.number_input(key="_ch_channel").set_value(4).run()
    assert not app.exception, app.exception
    (grid,) = [
        c for title, c in charts(app).items() if title.startswith("features.conv1, filter 4")
    ]
    shown = np.concatenate([array(t["z"]).ravel() for t in grid["data"] if "z" in t])
    weights = model.features.conv1.weight[4].detach().numpy().ravel()
    drawn = np.sort(shown[np.isfinite(shown)])  # the 5×5 weights, gaps aside
    np.testing.assert_allclose(drawn, np.sort(weights), atol=1e-6)
    app.number_input(key="_ch_steps").set_value(16).run()
    (button,) = [b for b in app.button if b.label == "Visualize the 10 classes"]
    button.click().run()
    assert not app.exception, app.exception
    # st.image of a list: one element, a picture per class (beside any channel's picture)
    (pictures,) = [i for i in app.get("image") if len(i.proto.imgs) == 10]
    assert [i.caption for i in pictures.proto.imgs] == [str(k) for k in range(10)]


def test_layers_and_defaults_follow_the_model() -> None:
    lenet = checkpoints.load_checkpoint(SHIPPED).model.eval()
    flow = probe.shape_flow(lenet, (1, 28, 28))
    kinds = channels.layer_kinds(lenet, flow)
    assert kinds == {
        "features.conv1": "conv", "features.relu1": "activation", "features.pool1": "pooling",
        "features.conv2": "conv", "features.relu2": "activation", "features.pool2": "pooling",
    }  # fmt: skip
    assert channels.default_layer(kinds) == "features.conv2"
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert channels.layer_kinds(mlp, probe.shape_flow(mlp, (1, 28, 28))) == {}
    # 2,000 images for LeNet-5; a costly model fewer, never below 100 nor above the split
    assert channels.default_images(flow.mult_adds, 10_000) == 2000
    assert channels.default_images(10**9, 10_000) == 100
    assert channels.default_images(10**8, 10_000) == 500
    assert channels.default_images(flow.mult_adds, 150) == 150
