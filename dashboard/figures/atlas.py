"""Figure builders for the channel atlas: arrays in, `plotly.graph_objects.Figure` out, in the
LENS_TEMPLATE look of `dashboard.figures`.

Pictures (receptive-field crops, feature visualizations, the whole layer's tiles) are tiled into
ONE image sent as a PNG (`go.Image(source=...)`: a 512-channel layer is one compressed picture,
not a million numbers), with one invisible heatmap cell per tile on top carrying the hover text
and the click target (`customdata[0]` is the example's image index or the tile's channel).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from dashboard import figures
from dashboard.analysis.atlas import Example
from dashboard.base.errors import ShapeError
from dashboard.figures.style import CORRECT, DEAD, INK, LENS_TEMPLATE, MUTED, PREDICTED, WRONG
from dashboard.figures.tiles import tile

TILE_BACKGROUND = 255  # white gaps between tiles


def png_source(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 as a PNG data URI for `go.Image(source=...)`."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def resize_nearest(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, 3) → (N, size, size, 3) by nearest neighbour: small receptive fields become
    visible blocks, every source pixel keeps its exact value."""
    a = np.asarray(images)
    if a.ndim != 4:
        raise ShapeError(f"images must be (N, h, w, 3), got {a.shape}")
    rows = (np.arange(size) * a.shape[1]) // size
    cols = (np.arange(size) * a.shape[2]) // size
    return a[:, rows][:, :, cols]


def channel_tiles(
    crops: np.ndarray, visualizations: np.ndarray | None = None, *, size: int = 32
) -> np.ndarray:
    """One tile per channel for `layer_atlas`: its top example's crop (C, h, w, 3), and beside
    it its feature visualization (C, H, W, 3) when given, each at size × size: (C, size, size
    or 2·size + 1, 3) uint8 (the visualization left, a 1-pixel gap, the crop right)."""
    tiles = resize_nearest(crops, size)
    if visualizations is None:
        return tiles
    if len(visualizations) != len(crops):
        raise ShapeError(f"{len(visualizations)} visualizations for {len(crops)} channels")
    gap = np.full((len(crops), size, 1, 3), TILE_BACKGROUND, dtype=np.uint8)
    return np.concatenate([resize_nearest(visualizations, size), gap, tiles], axis=2)


def _mosaic_figure(
    tiles: np.ndarray,
    custom: np.ndarray,
    hovertemplate: str,
    *,
    cols: int | None,
    pad: int,
    title: str,
    subtitle: str,
    max_side: float,
    texts: Sequence[str] | None = None,
) -> tuple[go.Figure, figures.TileLayout]:
    """Tiles (N, h, w, 3) as one PNG image plus one hover marker per tile (customdata (N, k)),
    `pad` pixels apart; the picture ends with a `pad` band too (room for labels under the
    last row)."""
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or len(tiles) == 0:
        raise ShapeError(f"tiles must be (N, h, w, 3) with N ≥ 1, got {tiles.shape}")
    mosaic, layout = tile(tiles, cols=cols, pad=pad, fill=TILE_BACKGROUND)
    band = np.full((pad, layout.width, 3), TILE_BACKGROUND, dtype=np.uint8)
    mosaic = np.concatenate([mosaic.astype(np.uint8), band])
    # One invisible square marker per tile carries its hover and takes its click (plotly
    # selects scatter points, not heatmap cells), sized to the tile as drawn.
    tile_rows, tile_cols = np.divmod(np.arange(len(custom)), layout.cols)
    drawn = min(max_side / max(len(mosaic), layout.width), 40.0)  # as image_layout sizes it
    hover = go.Scatter(
        x=tile_cols * (layout.tile_w + pad) + (layout.tile_w - 1) / 2,
        y=tile_rows * (layout.tile_h + pad) + (layout.tile_h - 1) / 2,
        mode="markers",
        marker={
            "symbol": "square",
            "size": max(layout.tile_w, layout.tile_h) * drawn,
            "opacity": 0.01,
            "color": INK,
        },
        customdata=custom,
        text=list(texts) if texts is not None else None,
        hovertemplate=hovertemplate + "<extra></extra>",
        showlegend=False,
        name="tiles",
    )
    picture = go.Image(source=png_source(mosaic), hoverinfo="skip")
    fig = go.Figure([picture, hover])
    figures.image_layout(fig, len(mosaic), layout.width, title, subtitle, max_side=max_side)
    fig.update_layout(showlegend=False)  # the markers and any labels are not series
    return fig, layout


def top_examples_grid(
    crops: np.ndarray,
    examples: Sequence[Example],
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    predicted: np.ndarray | None = None,
    channel: int,
    title: str = "",
    subtitle: str = "",
    max_side: float = 520,
) -> go.Figure:
    """A channel's top (or most negative) examples: crops (K, h, w, 3) of their receptive fields
    in one row-major grid, under each the activation and true → predicted class (red when
    wrong). `labels`/`predicted` are the split's (N,) arrays, indexed by the examples."""
    if len(crops) != len(examples):
        raise ShapeError(f"{len(crops)} crops for {len(examples)} examples")
    side = max(crops.shape[1:3]) if len(crops) else 1
    scaled = resize_nearest(crops, max(side, 40)) if len(crops) else crops
    k = len(examples)
    cols = max(1, min(k, int(np.ceil(np.sqrt(k)))))
    true = np.array([int(labels[e.index]) for e in examples])
    guess = np.array([int(predicted[e.index]) for e in examples]) if predicted is not None else None
    custom = np.array(
        [
            [e.index, e.activation, e.position[0], e.position[1], *e.box, true[i],
             guess[i] if guess is not None else np.nan]
            for i, e in enumerate(examples)
        ],
        dtype=np.float64,
    )  # fmt: skip
    template = (
        "image %{customdata[0]}: %{text}<br>activation %{customdata[1]:.4~g} at y "
        "%{customdata[2]}, x %{customdata[3]}<br>receptive field rows %{customdata[4]} to "
        "%{customdata[6]}, columns %{customdata[5]} to %{customdata[7]} (exclusive)"
    )
    names = [str(c) for c in classes]
    said = [
        f"true {names[t]}" + (f", predicted {names[guess[i]]}" if guess is not None else "")
        for i, t in enumerate(true)
    ]
    fig, layout = _mosaic_figure(
        scaled,
        custom,
        template,
        cols=cols,
        pad=scaled.shape[1] * 2 // 3,  # a band under each row for its two label lines
        title=title or f"Channel {channel}: top {k} images",
        subtitle=subtitle or "cropped to the receptive field; grey checks: outside the image",
        max_side=max_side,
        texts=said,
    )
    texts, colours = [], []
    for i, e in enumerate(examples):
        classes_line, colour = names[true[i]], INK
        if guess is not None and guess[i] != true[i]:
            classes_line, colour = f"{names[true[i]]} → {names[guess[i]]}", WRONG
        elif guess is not None:
            colour = CORRECT
        texts.append(f"{e.activation:.3g}<br>{classes_line}")
        colours.append(colour)
    origins = np.array([layout.origin(i) for i in range(k)], dtype=np.float64)
    fig.add_trace(
        go.Scatter(
            x=origins[:, 1] + (layout.tile_w - 1) / 2,
            y=origins[:, 0] + layout.tile_h,
            mode="text",
            text=texts,
            textposition="bottom center",
            textfont={"size": 11, "color": colours},
            cliponaxis=False,
            hoverinfo="skip",
            name="labels",
        )
    )
    return fig


def selectivity_bars(
    class_means: np.ndarray,
    classes: Sequence[str],
    *,
    channel: int,
    selectivity: float,
    title: str = "",
) -> go.Figure:
    """The mean of one channel's maximum activation per class (a bar per class, the preferred
    class highlighted), titled with its class-selectivity index (Morcos et al. 2018)."""
    means = np.asarray(class_means, dtype=np.float64)
    if means.ndim != 1 or len(means) != len(classes):
        raise ShapeError(f"{means.shape} class means for {len(classes)} classes")
    shown = np.nan_to_num(means, nan=0.0)
    best = int(np.argmax(np.where(np.isfinite(means), means, -np.inf)))
    colours = [PREDICTED if k == best else MUTED for k in range(len(means))]
    hover = [
        f"{c}: mean max activation {m:.4g}" if np.isfinite(m) else f"{c}: no image in the split"
        for c, m in zip(classes, means, strict=True)
    ]
    fig = go.Figure(
        go.Bar(
            x=[str(c) for c in classes],
            y=shown,
            marker_color=colours,
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
        )
    )
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=figures.title_layout(
            title or f"Channel {channel}: selectivity {selectivity:.3f}",
            f"mean of the channel's maximum (negatives as 0) per class; most for {classes[best]}",
        ),
        xaxis={"title": {"text": "class"}, "type": "category"},
        yaxis={"title": {"text": "mean max activation"}, "rangemode": "tozero"},
        showlegend=False,
        height=360,
        bargap=0.25,
    )
    return fig


def maxima_histogram(
    counts: np.ndarray,
    edges: np.ndarray,
    *,
    channel: int,
    dead_share: float,
    title: str = "",
) -> go.Figure:
    """A channel's maxima over the split as bars on their bins; bins at or below 0 — images on
    which the channel never fires — in red."""
    counts = np.asarray(counts)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.ndim != 1 or len(edges) != len(counts) + 1:
        raise ShapeError(f"{len(edges)} edges for {len(counts)} bins")
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    colours = [DEAD if hi <= 0 else PREDICTED for hi in edges[1:]]
    fig = go.Figure(
        go.Bar(
            x=centres,
            y=counts,
            width=widths,
            marker_color=colours,
            customdata=np.stack([edges[:-1], edges[1:]], axis=1),
            hovertemplate="maximum %{customdata[0]:.4~g} to %{customdata[1]:.4~g}: "
            "%{y:,} images<extra></extra>",
        )
    )
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=figures.title_layout(
            title or f"Channel {channel}: maximum activation per image",
            f"{int(counts.sum()):,} images · never fires (max ≤ 0) on {dead_share:.1%}",
        ),
        xaxis={"title": {"text": "the channel's maximum over the image"}},
        yaxis={"title": {"text": "images"}, "rangemode": "tozero"},
        bargap=0,
        showlegend=False,
        height=340,
    )
    return fig


def layer_atlas(
    tiles: np.ndarray,
    numbers: Mapping[str, np.ndarray],
    *,
    order: np.ndarray | None = None,
    title: str = "",
    subtitle: str = "",
    max_side: float = 900,
) -> go.Figure:
    """The whole layer as ONE image: a tile per channel (C, h, w, 3) (see `channel_tiles`) in
    `order` (default channel order), hovering shows the channel and its `numbers` (name → (C,)
    array, e.g. selectivity, dead share, mean activation); customdata[0] is the channel."""
    tiles = np.asarray(tiles)
    C = len(tiles)
    shown = np.arange(C) if order is None else np.asarray(order, dtype=np.int64)
    if shown.size == 0 or shown.min() < 0 or shown.max() >= C:
        raise ShapeError(f"order must index the {C} channels")
    names = list(numbers)
    for name in names:
        if len(numbers[name]) != C:
            raise ShapeError(f"{name} has {len(numbers[name])} values for {C} channels")
    custom = np.column_stack(
        [
            shown.astype(np.float64),
            *(np.asarray(numbers[n], dtype=np.float64)[shown] for n in names),
        ]
    )
    lines = [f"{name} %{{customdata[{k + 1}]:.4~g}}" for k, name in enumerate(names)]
    template = "<br>".join(["channel %{customdata[0]}", *lines])
    fig, _ = _mosaic_figure(
        tiles[shown],
        custom,
        template,
        cols=None,
        pad=max(2, tiles.shape[1] // 5),  # wider than the gap inside a tile
        title=title or f"All {C} channels",
        subtitle=subtitle,
        max_side=max_side,
    )
    return fig
