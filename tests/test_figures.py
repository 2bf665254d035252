"""Figure builders: the numbers inside the figures, checked against the arrays they came from.

Real MNIST digits feed the image, activation and confusion cases; activations are the output of
real convolutions (the classic Sobel/Prewitt kernels and seeded random filters) on them.
"""

from __future__ import annotations

import collections
import itertools
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F
from plotly.offline import get_plotlyjs_version
from sklearn.metrics import confusion_matrix
from torchvision.datasets import MNIST

from dashboard import figures
from dashboard.analysis import filters
from dashboard.base.errors import ShapeError
from dashboard.figures import TileLayout
from dashboard.training.curves import Run


@pytest.fixture(scope="module")
def mnist(shared_datasets: Path) -> MNIST:
    return MNIST(str(shared_datasets), train=False, download=False)


@pytest.fixture(scope="module")
def digits(mnist: MNIST) -> torch.Tensor:
    """The first 64 test digits, normalized like the models see them: (64, 1, 28, 28)."""
    return ((mnist.data[:64].float() / 255 - 0.1307) / 0.3081)[:, None]


def heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if t.type == "heatmap"]


def trace(fig: go.Figure, name: str) -> go.BaseTraceType:
    (found,) = [t for t in fig.data if t.name == name]
    return found


# ---------------------------------------------------------------------------------------------
# tile / scale_maps


def test_tile_places_each_map_and_inverts_every_pixel() -> None:
    maps = np.arange(5 * 2 * 3, dtype=np.float64).reshape(5, 2, 3) + 1  # (N=5, H=2, W=3)
    mosaic, layout = figures.tile(maps, cols=3, pad=1)
    assert layout == TileLayout(rows=2, cols=3, tile_h=2, tile_w=3, pad=1, count=5)
    assert mosaic.shape == (2 * 3 - 1, 3 * 4 - 1) == (layout.height, layout.width)
    for k in range(5):
        y0, x0 = layout.origin(k)
        assert (y0, x0) == (3 * (k // 3), 4 * (k % 3))
        np.testing.assert_array_equal(mosaic[y0 : y0 + 2, x0 : x0 + 3], maps[k])
    assert np.isnan(mosaic[2]).all()  # gap row
    assert np.isnan(mosaic[:, [3, 7]]).all()  # gap columns
    assert np.isnan(mosaic[3:, 8:]).all()  # the sixth tile is empty
    assert np.isnan(mosaic).sum() == mosaic.size - maps.size
    for y in range(layout.height):
        for x in range(layout.width):
            where = layout.locate(y, x)
            if np.isnan(mosaic[y, x]):
                assert where is None
            else:
                k, ty, tx = where
                assert mosaic[y, x] == maps[k, ty, tx]
                assert layout.origin(k) == (y - ty, x - tx)


def test_tile_default_is_near_square_and_carries_trailing_axes() -> None:
    _, layout = figures.tile(np.zeros((512, 8, 8)))
    assert (layout.rows, layout.cols) == (23, 23)
    _, wide = figures.tile(np.zeros((8, 2, 10)), pad=0)  # wide maps: fewer columns
    assert (wide.rows, wide.cols) == (4, 2)
    rgb = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    mosaic, layout = figures.tile(rgb, cols=3, pad=1, fill=255)
    assert mosaic.dtype == np.uint8
    assert mosaic.shape == (2, 8, 3)
    np.testing.assert_array_equal(mosaic[:, [2, 5]], 255)
    np.testing.assert_array_equal(mosaic[:, 6:8], rgb[2])
    with pytest.raises(ShapeError):
        figures.tile(np.zeros((4, 4)))


def test_scale_maps_modes_are_exact() -> None:
    maps = np.array([[[0.0, 2.0], [4.0, 8.0]], [[-1.0, -1.0], [-1.0, -1.0]]])  # (2, 2, 2)
    np.testing.assert_array_equal(
        figures.scale_maps(maps, "per map"),
        [[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]],  # a constant map scales to 0
    )
    np.testing.assert_array_equal(
        figures.scale_maps(maps, "per layer"),
        [[[1 / 9, 3 / 9], [5 / 9, 1.0]], [[0.0, 0.0], [0.0, 0.0]]],
    )
    np.testing.assert_array_equal(
        figures.scale_maps(maps, "global", global_range=(0.0, 4.0)),
        [[[0.0, 0.5], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]],  # clipped to 0..1
    )
    with pytest.raises(ValueError, match="global_range"):
        figures.scale_maps(maps, "global")
    with pytest.raises(ValueError, match="per map"):
        figures.scale_maps(maps, "per pixel")


# ---------------------------------------------------------------------------------------------
# Weights


def test_filter_grid_shared_scale_is_symmetric_and_hover_has_the_weights() -> None:
    w = torch.randn(16, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    fig = figures.filter_grid(w, title="conv1")
    (heat,) = heatmaps(fig)
    limit = float(w.abs().max())
    assert heat.zmin == pytest.approx(-limit)
    assert heat.zmax == pytest.approx(limit)
    assert heat.colorscale == go.Heatmap(colorscale=figures.DIVERGING).colorscale
    custom = np.asarray(heat.customdata)  # filter, row, col, weight per mosaic pixel
    z = np.asarray(heat.z)
    inside = ~np.isnan(z)
    assert inside.sum() == w.numel()
    k, r, c = (custom[inside][:, i].astype(int) for i in range(3))
    np.testing.assert_allclose(custom[inside][:, 3], w.numpy()[k, 0, r, c], rtol=1e-6)
    np.testing.assert_allclose(z[inside], w.numpy()[k, 0, r, c], rtol=1e-6)
    assert fig.layout.plot_bgcolor == figures.GAP  # gaps show background, not zero's white


def test_filter_grid_per_filter_scales_each_max_to_one() -> None:
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(1)).numpy()
    w[3] *= 100  # one loud filter must not wash out the others
    fig = figures.filter_grid(w, scale="per filter")
    (heat,) = heatmaps(fig)
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0)
    z, custom = np.asarray(heat.z), np.asarray(heat.customdata)
    mean = w.mean(axis=1)  # channel None: mean over the input channels
    for k in range(8):
        here = custom[..., 0] == k
        assert np.abs(z[here]).max() == pytest.approx(1.0)
        np.testing.assert_allclose(z[here] * np.abs(mean[k]).max(), custom[here][:, 3], rtol=1e-5)
    ch2 = heatmaps(figures.filter_grid(w, channel=2))[0]
    values = np.asarray(ch2.customdata)[..., 3]
    np.testing.assert_allclose(np.sort(values[~np.isnan(values)]), np.sort(w[:, 2].ravel()))
    with pytest.raises(ShapeError):
        figures.filter_grid(w, channel=4)


def test_rgb_filters_map_zero_to_mid_grey_and_max_to_full() -> None:
    w = np.zeros((2, 3, 2, 2))
    w[0, 0, 0, 0], w[0, 2, 1, 1] = 0.5, -0.5  # red up, blue down
    w[1, 1, 0, 1] = 2.0
    fig = figures.rgb_filters(w)
    image = next(t for t in fig.data if t.type == "image")
    z = np.asarray(image.z)
    assert z.shape == (2, 5, 3)  # two 2×2 tiles side by side, one gap column
    np.testing.assert_array_equal(z[0, 0], [255, 128, 128])
    np.testing.assert_array_equal(z[1, 1], [128, 128, 0])
    np.testing.assert_array_equal(z[0, 4], [128, 255, 128])
    np.testing.assert_array_equal(z[:, 2], 255)  # gap drawn as white background
    with pytest.raises(ShapeError):
        figures.rgb_filters(np.zeros((4, 1, 3, 3)))


def test_weight_histogram_counts_every_weight() -> None:
    w = torch.randn(20, 10, 5, 5, generator=torch.Generator().manual_seed(2)).numpy()
    (bars,) = figures.weight_histogram(w, bins=40).data
    assert int(np.sum(bars.y)) == w.size
    assert len(bars.x) == 40
    edges = np.asarray(bars.customdata)
    assert edges[0, 0] == w.min()
    assert edges[-1, 1] == w.max()


def test_classic_kernels_are_the_textbook_matrices() -> None:
    k = filters.edge_kernels()
    assert set(k) == {
        f"{name} {d}" for name in ("Prewitt", "Sobel") for d in ("x", "y", "45°", "135°")
    }
    np.testing.assert_array_equal(k["Sobel x"], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(k["Sobel y"], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    np.testing.assert_array_equal(k["Sobel 45°"], [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]])
    np.testing.assert_array_equal(k["Prewitt x"], [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
    np.testing.assert_array_equal(k["Prewitt 45°"], [[0, 1, 1], [-1, 0, 1], [-1, -1, 0]])
    # Second derivation: smoothing ⊗ difference, transposes and flips
    diff = np.array([-1, 0, 1])
    for name, smooth in (("Sobel", [1, 2, 1]), ("Prewitt", [1, 1, 1])):
        np.testing.assert_array_equal(k[f"{name} x"], np.outer(smooth, diff))
        np.testing.assert_array_equal(k[f"{name} y"], k[f"{name} x"].T)
        np.testing.assert_array_equal(k[f"{name} 135°"], np.flipud(k[f"{name} 45°"]))
        assert k[f"{name} 45°"].dtype.kind == "i"
        assert all(int(m.sum()) == 0 for m in k.values())


def test_labelled_grid_names_each_map_and_keeps_zero_white() -> None:
    kernels = filters.edge_kernels()
    maps = np.stack(list(kernels.values())).astype(np.float64)  # (8, 3, 3)
    fig = figures.labelled_grid(maps, list(kernels), scale="shared", values=True, title="K")
    (heat,) = heatmaps(fig)
    z = np.asarray(heat.z, dtype=np.float64)
    pad = int(np.isnan(z[:, 0]).argmin())  # the label band above the first row
    assert pad >= 1
    mosaic, layout = figures.tile(maps, pad=pad)
    np.testing.assert_array_equal(z[pad:], mosaic)
    assert (heat.zmin, heat.zmax) == (-2.0, 2.0)  # symmetric: 0 is the scale's white middle
    labels = trace(fig, "labels")
    assert list(labels.text) == list(kernels)
    for k in range(8):  # each name is centred over its own tile, just above it
        y0, x0 = layout.origin(k)
        assert labels.x[k] == x0 + 1.0
        assert y0 + pad - 1 < labels.y[k] < y0 + pad
    text = np.asarray(heat.text)
    y0, x0 = layout.origin(4)  # Sobel x, written into its cells
    assert text[pad + y0 : pad + y0 + 3, x0 : x0 + 3].tolist() == [
        ["-1", "0", "1"], ["-2", "0", "2"], ["-1", "0", "1"],
    ]  # fmt: skip


def test_labelled_grid_per_map_scale_thinning_and_hover(digits: torch.Tensor) -> None:
    sobel = torch.tensor(filters.edge_kernels()["Sobel x"], dtype=torch.float32)
    responses = F.conv2d(digits[:40], sobel[None, None], padding=1)[:, 0].numpy()  # (40, 28, 28)
    names = [f"digit {i}" for i in range(40)]
    fig = figures.labelled_grid(responses, names, max_pixels=10_000, colorbar=False)
    (heat,) = heatmaps(fig)
    assert heat.showscale is False
    stride = math.ceil(math.sqrt(40 * 28 * 28 / 10_000))  # 2: every other pixel
    z = np.asarray(heat.z, dtype=np.float64)
    custom = np.asarray(heat.customdata, dtype=np.float64)
    pad = int(np.isnan(z[:, 0]).argmin())
    layout = figures.tile(responses[:, ::stride, ::stride], pad=pad)[1]
    for k in (0, 17, 39):
        y0, x0 = layout.origin(k)
        tile_z = z[pad + y0 : pad + y0 + layout.tile_h, x0 : x0 + layout.tile_w]
        shown = responses[k, ::stride, ::stride].astype(np.float64)
        np.testing.assert_allclose(tile_z, shown / np.abs(shown).max(), rtol=1e-6)
        record = custom[pad + y0 + 3, x0 + 5]  # map, true y, true x, true value
        assert record[:3].tolist() == [k, 3 * stride, 5 * stride]
        assert record[3] == pytest.approx(responses[k, 3 * stride, 5 * stride], rel=1e-6)
    assert fig.layout.title.subtitle.text == "shown at 1/2 resolution"
    with pytest.raises(ShapeError, match="labels"):
        figures.labelled_grid(responses, names[:3])


# ---------------------------------------------------------------------------------------------
# Activations and images


def test_activation_grid_512_channels_is_one_heatmap_with_true_hover(digits: torch.Tensor) -> None:
    conv = torch.randn(512, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    bias = torch.zeros(512)
    bias[[7, 100, 300]] = -1e3  # three channels that never fire
    acts = F.max_pool2d(F.relu(F.conv2d(digits[:1], conv, bias)), 3)[0].numpy()  # (512, 8, 8)
    order = np.argsort(-acts.mean(axis=(1, 2)), kind="stable")
    dead = acts.reshape(512, -1).max(axis=1) == 0
    fig = figures.activation_grid(acts, order=order, dead=dead, title="conv")
    (heat,) = heatmaps(fig)
    z, custom = np.asarray(heat.z), np.asarray(heat.customdata)
    assert z.shape == (23 * 9 - 1, 23 * 9 - 1)
    assert (heat.zmin, heat.zmax) == (float(acts.min()), float(acts.max()))
    inside = ~np.isnan(z)
    assert inside.sum() == acts.size
    channel, y, x = (custom[inside][:, i].astype(int) for i in range(3))
    np.testing.assert_array_equal(custom[inside][:, 3], acts[channel, y, x])
    np.testing.assert_array_equal(z[inside], acts[channel, y, x])
    np.testing.assert_array_equal(custom[:8, :8, 0], order[0])  # first tile = highest mean
    outlines = trace(fig, "dead channel")
    assert list(outlines.x).count(None) == dead.sum() >= 3


def test_activation_grid_per_map_and_global_scales(digits: torch.Tensor) -> None:
    sobel = np.stack(list(filters.edge_kernels().values()))[:, None]  # (8, 1, 3, 3)
    acts = F.conv2d(digits[:1], torch.tensor(sobel, dtype=torch.float32))[0].numpy()
    per_map = heatmaps(figures.activation_grid(acts, scale="per map"))[0]
    z, custom = np.asarray(per_map.z), np.asarray(per_map.customdata)
    for k in range(8):
        here = custom[..., 0] == k
        assert (z[here].min(), z[here].max()) == (0.0, 1.0)
        np.testing.assert_array_equal(np.sort(custom[here][:, 3]), np.sort(acts[k].ravel()))
    glob = heatmaps(figures.activation_grid(acts, scale="global", global_range=(-20, 20)))[0]
    assert (glob.zmin, glob.zmax) == (-20, 20)
    with pytest.raises(ValueError, match="global_range"):
        figures.activation_grid(acts, scale="global")


def test_activation_grid_thins_huge_layers_but_keeps_true_positions() -> None:
    acts = np.random.default_rng(4).random((64, 112, 112), dtype=np.float32)
    (heat,) = heatmaps(figures.activation_grid(acts))
    custom = np.asarray(heat.customdata)
    inside = ~np.isnan(np.asarray(heat.z))
    assert inside.sum() <= figures.MAX_MOSAIC_PIXELS
    channel, y, x = (custom[inside][:, i].astype(int) for i in range(3))
    np.testing.assert_array_equal(custom[inside][:, 3], acts[channel, y, x])
    assert set(np.unique(y)) == set(range(0, 112, 2))


def test_activation_grid_takes_a_smaller_pixel_budget() -> None:
    acts = np.random.default_rng(5).random((16, 32, 32), dtype=np.float32)
    (full,) = heatmaps(figures.activation_grid(acts))
    assert int((~np.isnan(np.asarray(full.z))).sum()) == 16 * 32 * 32  # under the default
    fig = figures.activation_grid(acts, max_pixels=4_096)
    (heat,) = heatmaps(fig)
    inside = ~np.isnan(np.asarray(heat.z))
    assert int(inside.sum()) == 16 * 16 * 16  # every 2nd row and column of each map
    np.testing.assert_array_equal(np.asarray(heat.z)[:16, :16], acts[0, ::2, ::2])
    assert "shown at 1/2 resolution" in fig.layout.title.subtitle.text


def test_activation_stack_is_one_figure_a_block_per_layer(digits: torch.Tensor) -> None:
    torch.manual_seed(0)
    conv1, conv2 = torch.nn.Conv2d(1, 6, 5), torch.nn.Conv2d(6, 16, 5)
    with torch.no_grad():
        a1 = F.relu(conv1(digits[:1]))  # (1, 6, 24, 24)
        a2 = F.relu(conv2(F.max_pool2d(a1, 2)))  # (1, 16, 8, 8)
        a3 = F.max_pool2d(a2, 2)  # (1, 16, 4, 4)
    layers = [("conv1", a1[0].numpy()), ("conv2", a2[0].numpy()), ("pool2", a3[0].numpy())]
    fig = figures.activation_stack(layers, scale="per layer", width=300, columns=2, title="All")
    blocks = heatmaps(fig)
    assert [b.name for b in blocks] == ["conv1", "conv2", "pool2"]
    layout = fig.layout
    width, height = layout.width - 20, layout.height - 100  # the plot area, margins off
    assert (layout.xaxis.range, layout.yaxis.range) == ((0, width), (height, 0))  # 1 unit = 1 px
    bottoms = []
    for k, (heat, (_, maps)) in enumerate(zip(blocks, layers, strict=True)):
        z, custom = np.asarray(heat.z), np.asarray(heat.customdata)
        inside = ~np.isnan(z)
        assert inside.sum() == maps.size  # small layers are not thinned
        channel, y, x = (custom[inside][:, i].astype(int) for i in range(3))
        np.testing.assert_array_equal(custom[inside][:, 3], maps[channel, y, x])
        np.testing.assert_array_equal(z[inside], maps[channel, y, x])  # values, on their range
        assert z.shape[1] * heat.dx == pytest.approx(300)  # every block 300 px wide
        axis = layout["coloraxis" if k == 0 else f"coloraxis{k + 1}"]
        assert heat.coloraxis == ("coloraxis" if k == 0 else f"coloraxis{k + 1}")
        assert (axis.cmin, axis.cmax) == pytest.approx((maps.min(), maps.max()))
        # its own colour bar spans exactly its maps: from the mosaic's top, its height
        top, tall = heat.y0 - heat.dy / 2, z.shape[0] * heat.dy
        assert axis.colorbar.y == pytest.approx(1 - top / height)
        assert axis.colorbar.len == pytest.approx(tall / height)
        bottoms.append(top + tall)
    first, second, _ = blocks
    tops = [heat.y0 - heat.dy / 2 for heat in blocks]
    assert tops[0] == pytest.approx(tops[1])  # two a row, side by side
    assert second.x0 > first.x0 + 300
    assert tops[2] > max(bottoms[:2])  # the next row under the taller of the two
    assert bottoms[2] == pytest.approx(height)  # no band left below the last block
    assert [a.text.split("</b>")[0] for a in layout.annotations] == [
        "<b>conv1",
        "<b>conv2",
        "<b>pool2",
    ]

    glob = figures.activation_stack(layers, scale="global", global_range=(-1.0, 9.0))
    assert (glob.layout.coloraxis2.cmin, glob.layout.coloraxis2.cmax) == (-1.0, 9.0)
    raw = np.asarray(heatmaps(glob)[1].z)
    np.testing.assert_array_equal(raw[:8, :8], layers[1][1][0])  # raw values, first tile
    per_map = figures.activation_stack(layers, scale="per map")
    assert list(per_map.layout.coloraxis.colorbar.ticktext) == ["map min", "map max"]
    thin = figures.activation_stack(layers, max_pixels=3_000)
    for heat in heatmaps(thin):
        assert (~np.isnan(np.asarray(heat.z))).sum() <= 1_000  # the layers share the budget
    with pytest.raises(ValueError, match="global_range"):
        figures.activation_stack(layers, scale="global")
    with pytest.raises(ShapeError):
        figures.activation_stack([("fc", np.zeros(10))])


def test_activation_vectors_are_bars_in_display_order() -> None:
    values = np.array([0.5, 0.0, 2.0, 1.0], dtype=np.float32)
    order = np.array([2, 3, 0, 1])
    fig = figures.activation_grid(values, order=order, dead=np.array([1]))
    bars = next(t for t in fig.data if t.type == "bar")
    np.testing.assert_array_equal(bars.y, [2.0, 1.0, 0.5, 0.0])
    np.testing.assert_array_equal(bars.customdata, order)
    np.testing.assert_array_equal(trace(fig, "dead unit").x, [3])
    pooled = figures.activation_grid(values[:, None, None])  # (C, 1, 1) after global pooling
    assert [t.type for t in pooled.data] == ["bar"]
    np.testing.assert_array_equal(pooled.data[0].y, values)


def test_image_figure_keeps_pixels_exact(mnist: MNIST, digits: torch.Tensor) -> None:
    raw = mnist.data[0].numpy()  # (28, 28) uint8
    image = figures.image_figure(raw, title="7", caption="label 7").data[0]
    z = np.asarray(image.z)
    assert z.shape == (28, 28, 3)
    for c in range(3):
        np.testing.assert_array_equal(z[..., c], raw)
    np.testing.assert_array_equal(image.customdata, raw)
    normalized = np.asarray(figures.image_figure(digits[0]).data[0].z)  # (1, 28, 28) float
    np.testing.assert_array_equal(normalized[..., 0], raw)  # min-max back to 0..255
    rgb = np.random.default_rng(5).random((3, 32, 32))
    np.testing.assert_array_equal(
        figures.image_figure(rgb).data[0].z, np.rint(rgb.transpose(1, 2, 0) * 255)
    )


def bilinear_oracle(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Separable half-pixel-centre bilinear resize written from the definition."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
            lo = int(np.floor(src))
            hi = min(lo + 1, n_in - 1)
            m[i, lo] += 1 - (src - lo)
            m[i, hi] += src - lo
        return m

    return weights(a.shape[0], size[0]) @ a @ weights(a.shape[1], size[1]).T


def test_gradcam_overlay_upsamples_bilinearly_over_the_image(mnist: MNIST) -> None:
    cam = np.random.default_rng(6).random((7, 7))
    np.testing.assert_allclose(
        figures.upsample(cam, (28, 28)), bilinear_oracle(cam, (28, 28)), atol=1e-6
    )
    fig = figures.gradcam_overlay(mnist.data[0].numpy(), cam, alpha=0.4)
    image, (heat,) = fig.data[0], heatmaps(fig)
    assert np.asarray(image.z).shape == (28, 28, 3)
    z = np.asarray(heat.z)
    up = bilinear_oracle(cam, (28, 28))
    np.testing.assert_allclose(z, (up - up.min()) / (up.max() - up.min()), atol=1e-5)
    assert heat.opacity == 0.4
    assert heat.colorbar.title.text == "relative<br>importance"


def test_probability_bars_sorted_with_prediction_highlighted() -> None:
    p = np.array([0.05, 0.6, 0.1, 0.25])
    classes = ["cat", "dog", "bird", "fish"]
    (bars,) = figures.probability_bars(p, classes, true_class=3).data
    np.testing.assert_allclose(bars.x, [60.0, 25.0, 10.0, 5.0])
    assert list(bars.y) == ["dog", "fish  ✓ true", "bird", "cat"]
    assert list(bars.text) == ["60.0 %", "25.0 %", "10.0 %", "5.0 %"]
    colours = list(bars.marker.color)
    assert colours[0] == figures.WRONG  # predicted dog, truly fish
    assert len(set(colours[1:])) == 1
    assert colours[0] not in colours[1:]
    (top2,) = figures.probability_bars(p, classes, true_class=0, top=2).data
    assert list(top2.y) == ["dog", "fish", "cat  ✓ true"]  # true class always shown
    (right,) = figures.probability_bars(p, classes, true_class=1, top=None).data
    assert right.marker.color[0] == figures.CORRECT


def test_probability_bars_keep_digit_class_names_as_categories() -> None:
    """MNIST's classes are "0"…"9": plotly would read them as numbers and drop "7  ✓ true"."""
    digits = [str(d) for d in range(10)]
    fig = figures.probability_bars(np.eye(10)[7] * 0.9 + 0.01, digits, true_class=7)
    assert fig.layout.yaxis.type == "category"
    assert fig.data[0].y[0] == "7  ✓ true"


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def test_training_curves_one_trace_per_run_and_split() -> None:
    runs = [
        Run("lenet5", [0.5, 1.0, 1.5, 2.0], [0.8, 0.9, None, 0.95], [None, 0.91, None, 0.96]),
        Run("bn-cnn", [1], [0.97], [0.98]),
    ]
    fig = figures.training_curves(runs)
    assert [(t.legendgroup, t.name) for t in fig.data] == [
        ("lenet5", "train"),
        ("lenet5", "test"),
        ("bn-cnn", "train"),
        ("bn-cnn", "test"),
    ]
    assert list(fig.data[0].x) == [0.5, 1.0, 2.0]
    np.testing.assert_allclose(fig.data[0].y, [80.0, 90.0, 95.0])
    np.testing.assert_allclose(fig.data[1].y, [91.0, 96.0])
    assert [t.line.dash for t in fig.data] == ["solid", "dash"] * 2
    assert fig.data[0].line.color != fig.data[2].line.color
    assert fig.data[0].line.color == fig.data[1].line.color
    live = figures.training_curves([Run("live", [0.1], [2.3], [None])], metric="loss")
    assert len(live.data) == 1
    assert list(live.data[0].y) == [2.3]
    assert "markers" in live.data[0].mode  # one point must still show
    with pytest.raises(ShapeError):
        figures.training_curves([Run("bad", [1, 2], [0.5])])


def test_training_curves_smooth_the_train_line_like_tensorboard_and_keep_it_raw_behind() -> None:
    losses = [2.0, 1.0, 1.5, 0.5]
    fig = figures.training_curves(
        [Run("r", [20, 40, 60, 80], losses, [None, 1.2, None, 0.6])],
        metric="loss",
        x_title="step",
        smoothing=0.5,
        log_y=True,
    )
    assert [t.name for t in fig.data] == ["train (raw)", "train (smoothed)", "test"]
    assert list(fig.data[0].y) == losses
    # By hand: the EMA with weight 0.5, each point divided by 1 − 0.5^n (debiased).
    last, expected = 0.0, []
    for n, value in enumerate(losses, start=1):
        last = 0.5 * last + 0.5 * value
        expected.append(last / (1 - 0.5**n))
    np.testing.assert_allclose(fig.data[1].y, expected)
    assert expected[0] == 2.0  # the first point is not pulled towards 0
    assert list(fig.data[2].y) == [1.2, 0.6]  # the test line is never smoothed
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.type) == ("step", "log")


@pytest.fixture(scope="module")
def mnist_confusion(mnist: MNIST) -> np.ndarray:
    """A real confusion matrix: nearest class mean on 2000 MNIST test digits."""
    x = mnist.data[:2000].reshape(2000, -1).float()
    y = mnist.targets[:2000]
    means = torch.stack([x[y == k].mean(0) for k in range(10)])
    predicted = torch.cdist(x, means).argmin(1)
    return confusion_matrix(y.numpy(), predicted.numpy(), labels=range(10))


def test_confusion_heatmap_counts_and_percentages(
    mnist: MNIST, mnist_confusion: np.ndarray
) -> None:
    cm = mnist_confusion
    classes = mnist.classes
    heat, cells = figures.confusion_heatmap(cm, classes).data
    np.testing.assert_array_equal(heat.z, cm)
    np.testing.assert_array_equal(heat.text, cm.astype(str))
    assert heat.texttemplate == "%{text}"
    row = heatmaps(figures.confusion_heatmap(cm, classes, normalize="row"))[0]
    np.testing.assert_allclose(np.asarray(row.z).sum(axis=1), 100.0)
    np.testing.assert_allclose(row.z, cm / cm.sum(axis=1, keepdims=True) * 100)
    assert row.text[4][9] == f"{cm[4, 9] / cm[4].sum() * 100:.1f}"
    col = heatmaps(figures.confusion_heatmap(cm, classes, normalize="column"))[0]
    np.testing.assert_allclose(np.asarray(col.z).sum(axis=0), 100.0)
    every = heatmaps(figures.confusion_heatmap(cm, classes, normalize="all"))[0]
    assert np.asarray(every.z).sum() == pytest.approx(100.0)
    # The click overlay: one point per cell, at the cell centre, customdata [true, predicted]
    assert cells.type == "scatter"
    assert len(cells.x) == 100
    custom = np.asarray(cells.customdata)
    np.testing.assert_array_equal(custom, [[i, j] for i in range(10) for j in range(10)])
    np.testing.assert_array_equal(cells.x, custom[:, 1])
    np.testing.assert_array_equal(cells.y, custom[:, 0])
    assert 0 < cells.marker.opacity < 0.05
    n = cm[4, 9]
    assert cells.hovertext[4 * 10 + 9] == (
        f"true 4 - four → predicted 9 - nine: {n:,} image{'s' if n != 1 else ''} "
        f"({n / cm[4].sum() * 100:.1f} % of row)"
    )
    fig = figures.confusion_heatmap(cm, classes)
    assert fig.layout.clickmode == "event+select"
    assert tuple(fig.layout.yaxis.range) == (9.5, -0.5)  # class 0 on top
    assert tuple(fig.layout.xaxis.range) == (-0.5, 9.5)


def test_confusion_heatmap_100_classes_drops_cell_text() -> None:
    cm = np.random.default_rng(7).integers(0, 5, (100, 100)) + np.eye(100, dtype=int) * 90
    names = [f"class {i}" for i in range(100)]
    heat, cells = figures.confusion_heatmap(cm, names, normalize="row").data
    assert heat.text is None
    assert len(cells.x) == 100 * 100
    assert cells.hovertext[101].startswith("true class 1 → predicted class 1: ")
    with pytest.raises(ShapeError):
        figures.confusion_heatmap(cm, names[:10])


# ---------------------------------------------------------------------------------------------
# Architecture and export

ALEXNET = [
    ("input", (3, 224, 224)),
    ("features.0", (64, 55, 55)),
    ("features.2", (64, 27, 27)),
    ("features.3", (192, 27, 27)),
    ("features.5", (192, 13, 13)),
    ("features.6", (384, 13, 13)),
    ("features.8", (256, 13, 13)),
    ("features.10", (256, 13, 13)),
    ("features.12", (256, 6, 6)),
    ("classifier.1", (4096,)),
    ("classifier.4", (4096,)),
    ("classifier.6", (1000,)),
]


def test_shape_flow_diagram_one_block_per_layer() -> None:
    fig = figures.shape_flow_diagram(ALEXNET, title="AlexNet")
    assert list(trace(fig, "shapes").text) == [
        "3×224×224",
        "64×55×55",
        "64×27×27",
        "192×27×27",
        "192×13×13",
        "384×13×13",
        "256×13×13",
        "256×13×13",
        "256×6×6",
        "4096",
        "4096",
        "1000",
    ]
    assert [t.replace("<br>", "") for t in trace(fig, "names").text] == [n for n, _ in ALEXNET]
    hover = trace(fig, "blocks")
    assert len(hover.x) == 12
    assert "64×27×27: 64 channels of 27×27<br>46,656 values" in hover.hovertext[2]
    fronts = [t for t in fig.data if t.fill == "toself" and t.showlegend]
    assert [list(t.x).count(None) for t in fronts] == [9, 3]  # maps and vectors
    assert fig.layout.width <= 1100
    assert sorted(collections.Counter(hover.y).values()) == [6, 6]  # two even rows
    wide = trace(figures.shape_flow_diagram(ALEXNET, max_width=1400), "blocks")
    assert len(set(wide.y)) == 1
    assert (np.diff(wide.x) > 0).all()  # left to right


def test_shape_flow_diagram_wraps_resnet_blocks_without_label_overlap() -> None:
    layers = [("input", (3, 224, 224)), ("conv1", (64, 112, 112)), ("maxpool", (64, 56, 56))]
    for stage, (c, s) in enumerate([(64, 56), (128, 28), (256, 14), (512, 7)], 1):
        for b in range(2):
            layers += [(f"layer{stage}.{b}.conv1", (c, s, s)), (f"layer{stage}.{b}", (c, s, s))]
    layers += [("avgpool", (512, 1, 1)), ("fc", (1000,))]
    fig = figures.shape_flow_diagram(layers)
    shapes = trace(fig, "shapes")
    assert len(shapes.text) == len(layers) == 21
    rows = sorted(set(shapes.y), reverse=True)
    assert len(rows) >= 2
    for y in rows:  # within a row, neighbouring labels (≈ 6 px a character) do not touch
        at = [(x, t) for x, yy, t in zip(shapes.x, shapes.y, shapes.text, strict=True) if yy == y]
        for (xa, ta), (xb, tb) in itertools.pairwise(at):
            assert xb - xa >= (len(ta) + len(tb)) / 2 * 6 + 8
    with pytest.raises(ShapeError):
        figures.shape_flow_diagram([("bad", (1, 3, 32, 32))])


def test_figure_html_is_self_contained() -> None:
    html = figures.figure_html(figures.probability_bars(np.array([0.3, 0.7]), ["a", "b"]))
    assert "<html" in html
    assert f"plotly.js v{get_plotlyjs_version()}" in html
    assert '<script src="https://cdn.plot.ly' not in html


def test_every_builder_uses_the_lens_template(digits: torch.Tensor) -> None:
    built = [
        figures.filter_grid(np.ones((2, 1, 3, 3))),
        figures.rgb_filters(np.ones((2, 3, 3, 3))),
        figures.weight_histogram(np.arange(10.0)),
        figures.activation_grid(digits[0]),
        figures.image_figure(digits[0]),
        figures.gradcam_overlay(digits[0], np.eye(4)),
        figures.probability_bars(np.array([1.0]), ["one"]),
        figures.training_curves([Run("r", [1], [0.5], [0.4])]),
        figures.confusion_heatmap(np.eye(2, dtype=int), ["a", "b"]),
        figures.shape_flow_diagram(ALEXNET[:3]),
    ]
    for fig in built:
        assert fig.layout.template.layout.font.family == figures.FONT
        assert fig.layout.title.text
        assert fig.layout.width > 0
        assert fig.layout.height > 0
