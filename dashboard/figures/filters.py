"""Figures of a layer's weights: filter grids (one channel or RGB), labelled kernel grids and
the weight histogram.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.base.errors import ShapeError
from dashboard.figures.style import (
    DIVERGING,
    GAP,
    INK,
    LENS_TEMPLATE,
    MAX_MOSAIC_PIXELS,
    MIN_WIDTH,
    MUTED,
    PREDICTED,
    as_numpy,
    fit_titles,
    image_layout,
    title_layout,
)
from dashboard.figures.tiles import hover_layer, hover_records, tile


def filter_grid(
    weights: np.ndarray,
    *,
    scale: str = "shared",
    channel: int | None = None,
    title: str = "",
    max_side: float = 640,
    limit: float | None = None,
) -> go.Figure:
    """Conv filters (C_out, C_in, kh, kw) as one diverging mosaic; channel None = input mean.
    `limit` fixes the shared scale at ±limit (two models' grids on one scale); None: the
    layer's own max |w|."""
    w = as_numpy(weights).astype(np.float64)
    if w.ndim != 4:
        raise ShapeError(f"filter weights must be (C_out, C_in, kh, kw), got {w.shape}")
    c_out, c_in, kh, kw = w.shape
    if channel is None:
        maps = w.mean(axis=1)  # (C_out, kh, kw); with one input channel this is that channel
        source = "input channel 0" if c_in == 1 else f"mean over {c_in} input channels"
        hover_channel = "0" if c_in == 1 else f"mean of {c_in}"
    elif 0 <= channel < c_in:
        maps = w[:, channel]
        source, hover_channel = f"input channel {channel}", str(channel)
    else:
        raise ShapeError(f"input channel {channel} out of range: the layer has {c_in}")
    if scale == "shared":
        note = "one symmetric scale for the layer" if limit is None else f"scale ±{limit:.3g}"
        limit = limit or float(np.abs(maps).max()) or 1.0
        shown, bar_title = maps, "weight"
    elif scale == "per filter":
        peak = np.abs(maps).reshape(c_out, -1).max(axis=1)
        shown = maps / np.where(peak > 0, peak, 1.0)[:, None, None]
        limit, bar_title = 1.0, "w / max|w|<br>(per-filter<br>scale)"
        note = "each filter scaled by its own max |w|"
    else:
        raise ValueError(f'unknown scale {scale!r}; choose "shared" or "per filter"')
    mosaic, layout = tile(shown, pad=1)
    rows, cols = np.indices((kh, kw))
    custom = hover_records(np.arange(c_out), rows, cols, maps, layout)  # filter, row, col, w
    fig = go.Figure(
        go.Heatmap(
            z=mosaic,
            zmin=-limit,
            zmax=limit,
            colorscale=DIVERGING,
            customdata=custom,
            hoverongaps=False,
            hovertemplate=(
                "filter %{customdata[0]}<br>input channel "
                + hover_channel
                + "<br>row %{customdata[1]}, col %{customdata[2]}"
                "<br>weight %{customdata[3]:.4~g}<extra></extra>"
            ),
            colorbar={"title": {"text": bar_title}},
        )
    )
    subtitle = f"{c_out} filters of {kh}×{kw}, {source} · red > 0 > blue · {note}"
    image_layout(
        fig,
        layout.height,
        layout.width,
        title or "Filters",
        subtitle,
        background=GAP,
        max_side=max_side,
    )
    return fig


def rgb_filters(weights: np.ndarray, *, title: str = "", max_side: float = 640) -> go.Figure:
    """First-layer filters (C_out, 3, kh, kw) as RGB images, each scaled so 0 is mid grey."""
    w = as_numpy(weights).astype(np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ShapeError(f"RGB filters must be (C_out, 3, kh, kw), got {w.shape}")
    c_out, _, kh, kw = w.shape
    peak = np.abs(w).reshape(c_out, -1).max(axis=1)
    unit = w / (2 * np.where(peak > 0, peak, 1.0))[:, None, None, None] + 0.5  # -max→0, 0→½
    rgb = np.rint(unit * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (C_out, kh, kw, 3)
    mosaic, layout = tile(rgb, pad=1, fill=255)
    rows, cols = np.indices((kh, kw))
    rgb_weights = w.transpose(0, 2, 3, 1)
    custom = hover_records(np.arange(c_out), rows, cols, rgb_weights, layout)  # …, R, G, B
    fig = go.Figure(
        [
            go.Image(z=mosaic, hoverinfo="skip"),
            hover_layer(
                custom[..., 0],
                custom,
                "filter %{customdata[0]}, row %{customdata[1]}, col %{customdata[2]}"
                "<br>R %{customdata[3]:.4~g}<br>G %{customdata[4]:.4~g}"
                "<br>B %{customdata[5]:.4~g}<extra></extra>",
            ),
        ]
    )
    subtitle = f"{c_out} filters of {kh}×{kw} · mid grey = 0 · each filter scaled by its max |w|"
    image_layout(
        fig,
        layout.height,
        layout.width,
        title or "First-layer filters (RGB)",
        subtitle,
        max_side=max_side,
    )
    return fig


def weight_histogram(weights: np.ndarray, *, title: str = "", bins: int = 60) -> go.Figure:
    """Histogram of all weights of a layer, binned here so no raw weights reach the browser."""
    every = as_numpy(weights).astype(np.float64).ravel()
    if every.size == 0:
        raise ShapeError("no weights to draw")
    w = every[np.isfinite(every)]  # NaN and ±inf have no bin: counted in the subtitle instead
    counts, edges = np.histogram(w, bins=bins, range=None if w.size else (-1.0, 1.0))
    fig = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=counts,
            width=np.diff(edges),
            marker={"color": PREDICTED, "line": {"width": 0}},
            customdata=np.stack([edges[:-1], edges[1:]], axis=1),
            hovertemplate="[%{customdata[0]:.4~g}, %{customdata[1]:.4~g}): "
            "%{y:,} weights<extra></extra>",
        )
    )
    fig.add_vline(x=0, line={"color": MUTED, "width": 1, "dash": "dot"})
    subtitle = f"{w.size:,} weights · mean {w.mean():.3g} · std {w.std():.3g}" if w.size else ""
    if w.size < every.size:
        left_out = f"{every.size - w.size:,} NaN or infinite weights left out"
        subtitle = f"{subtitle} · {left_out}" if subtitle else left_out
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title or "Weight distribution", subtitle),
        xaxis_title="weight value",
        yaxis_title="count",
        bargap=0,
        width=640,
        height=380,
    )
    return fig


def labelled_grid(
    maps: np.ndarray,
    labels: Sequence[str],
    *,
    scale: str = "per map",
    values: bool = False,
    title: str = "",
    subtitle: str = "",
    value_name: str = "value",
    max_side: float = 640,
    max_pixels: int = MAX_MOSAIC_PIXELS,
    colorbar: bool = True,
) -> go.Figure:
    """Named maps (N, H, W) as one diverging mosaic centred at zero, each name above its tile.

    For kernels and the responses they give to an image: "per map" divides each map by its own
    max |v| (edges of a faint filter stay visible), "shared" keeps one symmetric range.
    `values` writes every number into its cell (small kernels). Sets larger than `max_pixels`
    are thinned, like `activation_grid`; hover reports true positions and values. `colorbar`
    False drops the scale (a figure beside another with the same one).
    """
    a = as_numpy(maps).astype(np.float64)
    if a.ndim != 3 or 0 in a.shape:
        raise ShapeError(f"maps must be (N, H, W), got {a.shape}")
    if len(labels) != len(a):
        raise ShapeError(f"{len(labels)} labels for {len(a)} maps")
    N, H, W = a.shape
    stride = max(1, math.ceil(math.sqrt(N * H * W / max_pixels)))
    a = a[:, ::stride, ::stride]
    if scale == "per map":
        peak = np.abs(a).reshape(N, -1).max(axis=1)
        shown, limit = a / np.where(peak > 0, peak, 1.0)[:, None, None], 1.0
        bar = f"{value_name} /<br>max |{value_name}|<br>(per map)"
    elif scale == "shared":
        shown, limit, bar = a, float(np.abs(a).max()) or 1.0, value_name
    else:
        raise ValueError(f'unknown scale {scale!r}; choose "per map" or "shared"')
    pad = 1
    for _ in range(3):  # the label band must be ~18 screen px, and the cell size depends on it
        _, layout = tile(shown, pad=pad)
        cell = min(max_side / max(layout.height + pad, layout.width), 40.0)
        pad = max(1, math.ceil(18 / cell))
    mosaic, layout = tile(shown, pad=pad)
    band = np.full((pad, layout.width), np.nan)
    ys, xs = np.indices(a.shape[1:]) * stride
    custom = hover_records(np.arange(N), ys, xs, a, layout)  # map, y, x, true value
    custom_band = np.full((pad, layout.width, custom.shape[-1]), np.nan, dtype=custom.dtype)
    heat = go.Heatmap(
        z=np.vstack([band, mosaic]).astype(np.float32),  # half the payload of float64
        zmin=-limit,
        zmax=limit,
        colorscale=DIVERGING,
        customdata=np.concatenate([custom_band, custom]),
        hoverongaps=False,
        hovertemplate="map %{customdata[0]}<br>row %{customdata[1]}, col %{customdata[2]}"
        f"<br>{value_name} %{{customdata[3]:.4~g}}<extra></extra>",
        colorbar={"title": {"text": bar}},
        showscale=colorbar,
    )
    if values:
        cells = np.vectorize(lambda v: f"{v:.3g}" if np.isfinite(v) else "")(
            np.vstack([band, tile(a, pad=pad)[0]])
        )
        heat.update(text=cells, texttemplate="%{text}", textfont={"size": 13})
    origins = np.array([layout.origin(k) for k in range(N)], dtype=np.float64)
    origins[:, 0] += pad  # below the top label band
    outline_x: list[float | None] = []
    outline_y: list[float | None] = []
    for y0, x0 in origins:
        top, left = y0 - 0.5, x0 - 0.5
        bottom, right = top + layout.tile_h, left + layout.tile_w
        outline_x += [left, right, right, left, left, None]
        outline_y += [top, top, bottom, bottom, top, None]
    fig = go.Figure(
        [
            heat,
            go.Scatter(
                x=outline_x,
                y=outline_y,
                mode="lines",
                line={"color": GAP, "width": 1},
                hoverinfo="skip",
                name="tiles",
            ),
            go.Scatter(
                x=origins[:, 1] + (layout.tile_w - 1) / 2,
                y=origins[:, 0] - 0.5 - pad * 0.15,
                mode="text",
                text=list(labels),
                textposition="top center",
                textfont={"size": 12, "color": INK},
                hoverinfo="skip",
                name="labels",
            ),
        ]
    )
    if stride > 1:
        subtitle = " · ".join(filter(None, [subtitle, f"shown at 1/{stride} resolution"]))
    title = title or "Maps"
    image_layout(fig, layout.height + pad, layout.width, title, subtitle, max_side=max_side)
    fig.update_layout(showlegend=False)
    if not colorbar:  # no room to keep for a scale: as narrow as the mosaic
        cell = min(max_side / max(layout.height + pad, layout.width), 40.0)
        fig.update_layout(width=int(max(MIN_WIDTH, layout.width * cell + 50)))
        fit_titles(fig)
    return fig
