"""dashboard.figures.atlas: the pixels and numbers inside the atlas figures, read back and
checked against the arrays they were built from (a real atlas of lenet5-mnist on real MNIST)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from dashboard import data
from dashboard.analysis import atlas, metrics
from dashboard.base.errors import ShapeError
from dashboard.figures import DEAD, LENS_TEMPLATE, MUTED, PREDICTED, WRONG
from dashboard.figures import atlas as atlas_figures
from dashboard.models import checkpoints

TRAINED = Path(__file__).resolve().parent.parent / "trained"


@pytest.fixture(scope="module")
def split(shared_datasets: Path) -> data.Split:
    return data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), 1000)


@pytest.fixture(scope="module")
def lenet_atlas(split: data.Split) -> tuple[atlas.ChannelAtlas, metrics.Predictions]:
    model = checkpoints.load_checkpoint(TRAINED / "lenet5-mnist.safetensors").model
    return atlas.compute_atlas(model, split, "features.conv2"), metrics.predict(model, split)


def picture(fig: go.Figure) -> np.ndarray:
    """The RGB pixels of the figure's image trace."""
    (image,) = [t for t in fig.data if t.type == "image"]
    header, encoded = image.source.split(",", 1)
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))


def hover_cells(fig: go.Figure) -> go.Scatter:
    """The invisible markers, one per tile, that carry its hover and take its click."""
    (cells,) = [t for t in fig.data if t.name == "tiles"]
    return cells


def test_top_examples_grid_shows_each_crop_and_its_numbers(
    lenet_atlas: tuple[atlas.ChannelAtlas, metrics.Predictions], split: data.Split
) -> None:
    result, pred = lenet_atlas
    channel = 5
    examples = result.top(channel)
    crops = atlas.example_crops(result, split.images, examples)  # (9, 14, 14, 3)
    fig = atlas_figures.top_examples_grid(
        crops, examples, result.labels, split.info.classes, predicted=pred.predicted,
        channel=channel,
    )  # fmt: skip
    assert fig.layout.template.layout.font.family == LENS_TEMPLATE.layout.font.family
    pixels = picture(fig)
    big = atlas_figures.resize_nearest(crops, 40)  # 14-px crops drawn 40 px wide
    pad = 40 * 2 // 3
    for k in range(9):
        row, col = divmod(k, 3)
        y, x = row * (40 + pad), col * (40 + pad)
        np.testing.assert_array_equal(pixels[y : y + 40, x : x + 40], big[k])
    cells = hover_cells(fig)
    custom = np.asarray(cells.customdata).reshape(-1, 10)
    for k, e in enumerate(examples):
        assert custom[k, 0] == e.index
        assert custom[k, 1] == pytest.approx(e.activation)
        assert tuple(custom[k, 2:4]) == e.position
        assert tuple(custom[k, 4:8]) == e.box
        assert (custom[k, 8], custom[k, 9]) == (result.labels[e.index], pred.predicted[e.index])
    (labels,) = [t for t in fig.data if t.type == "scatter" and t.name != "tiles"]
    for k, e in enumerate(examples):
        assert labels.text[k].startswith(f"{e.activation:.3g}<br>")
        wrong = pred.predicted[e.index] != result.labels[e.index]
        assert (labels.textfont.color[k] == WRONG) == wrong


def test_selectivity_bars_are_the_class_means(
    lenet_atlas: tuple[atlas.ChannelAtlas, metrics.Predictions], split: data.Split
) -> None:
    result, _ = lenet_atlas
    fig = atlas_figures.selectivity_bars(
        result.class_means[3], split.info.classes, channel=3, selectivity=result.selectivity[3]
    )
    (bars,) = fig.data
    np.testing.assert_allclose(bars.y, result.class_means[3], rtol=1e-6)
    best = int(np.argmax(result.class_means[3]))
    colours = list(bars.marker.color)
    assert colours[best] == PREDICTED
    assert all(c == MUTED for k, c in enumerate(colours) if k != best)
    assert f"selectivity {result.selectivity[3]:.3f}" in fig.layout.title.text
    missing = atlas_figures.selectivity_bars(
        np.array([1.0, np.nan, 3.0]), ["a", "b", "c"], channel=0, selectivity=0.5
    )
    assert list(missing.data[0].y) == [1.0, 0.0, 3.0]
    assert missing.data[0].hovertext[1] == "b: no image in the split"


def test_histogram_counts_every_image_and_marks_the_dead_bins() -> None:
    maxima = np.array([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [1.5], [2.0], [2.0]])
    counts, edges = atlas.histograms(maxima, 4)  # bins of width 1 from −2 to 2
    fig = atlas_figures.maxima_histogram(
        counts[0], edges[0], channel=0, dead_share=float(atlas.dead_share(maxima)[0])
    )
    (bars,) = fig.data
    assert list(bars.y) == [1, 2, 1, 4]
    np.testing.assert_allclose(bars.x, [-1.5, -0.5, 0.5, 1.5])
    assert [c == DEAD for c in bars.marker.color] == [True, True, False, False]
    assert "never fires (max ≤ 0) on 37.5%" in fig.layout.title.subtitle.text
    assert "8 images" in fig.layout.title.subtitle.text


def test_a_512_channel_layer_is_one_image_with_a_hover_cell_per_channel() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(512, 7, 7, 3), dtype=np.uint8)
    vis = rng.integers(0, 256, size=(512, 32, 32, 3), dtype=np.uint8)
    tiles = atlas_figures.channel_tiles(crops, vis, size=16)  # (512, 16, 33, 3)
    assert tiles.shape == (512, 16, 33, 3)
    np.testing.assert_array_equal(tiles[:, :, 17:], atlas_figures.resize_nearest(crops, 16))
    np.testing.assert_array_equal(tiles[:, :, :16], vis[:, ::2, ::2])
    selectivity = rng.random(512)
    dead = rng.random(512)
    order = np.argsort(-selectivity)
    fig = atlas_figures.layer_atlas(
        tiles, {"selectivity": selectivity, "dead share": dead}, order=order
    )
    assert [t.type for t in fig.data] == ["image", "scatter"]  # 2 traces, whatever C is
    cells = hover_cells(fig)
    flat = np.asarray(cells.customdata)
    assert flat.shape == (512, 3)
    np.testing.assert_array_equal(flat[:, 0], order)
    np.testing.assert_allclose(flat[:, 1], selectivity[order])
    np.testing.assert_allclose(flat[:, 2], dead[order])
    cols = int(np.sum(np.asarray(cells.y) == cells.y[0]))  # tiles in the first row
    pixels = picture(fig)
    pad = 16 // 5
    np.testing.assert_array_equal(pixels[:16, :33], tiles[order[0]])
    second_row = 16 + pad
    np.testing.assert_array_equal(pixels[second_row : second_row + 16, :33], tiles[order[cols]])
    # each hover marker is centred on its tile
    assert cells.x[0] == pytest.approx((33 - 1) / 2)
    assert cells.x[1] - cells.x[0] == 33 + pad
    assert cells.y[cols] - cells.y[0] == 16 + pad
    assert "channel %{customdata[0]}" in cells.hovertemplate


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ShapeError, match="order must index"):
        atlas_figures.layer_atlas(
            np.zeros((2, 4, 4, 3), np.uint8), {"x": np.zeros(2)}, order=np.array([2])
        )
    with pytest.raises(ShapeError, match="has 3 values for 2 channels"):
        atlas_figures.layer_atlas(np.zeros((2, 4, 4, 3), np.uint8), {"x": np.zeros(3)})
    with pytest.raises(ShapeError, match="4 edges for 2 bins"):
        atlas_figures.maxima_histogram(np.zeros(2), np.zeros(4), channel=0, dead_share=0.0)
