"""Figure builders: arrays in, `plotly.graph_objects.Figure` out; no Streamlit, no model code.

Every builder is a pure function of its arguments and shares one look (`LENS_TEMPLATE`: white
background, a sans font, margins that grow with labels). Many small maps (filters, activation
channels) are tiled into ONE image by `tile` and drawn as one heatmap trace, so a 512-channel
layer costs one trace instead of 512 subplots; hover text reads the real values back through the
tile layout.

Pages should draw these with `st.plotly_chart(fig, theme=None)`: Streamlit's default theme
replaces the template's fonts and colours.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from dashboard.base import tables
from dashboard.base.errors import ShapeError

if TYPE_CHECKING:  # a plain record: reading its fields needs no import of the training code
    from dashboard.training.curves import Run

FONT = "Inter, 'Segoe UI', 'Helvetica Neue', Arial, sans-serif"
INK = "#1f2937"  # text
MUTED = "#6b7280"  # secondary text, inactive bars
GRID = "#e5e7eb"
GAP = "#c9ced6"  # background between tiles: must differ from a diverging scale's white zero
DEAD = "#dc2626"
PREDICTED = "#2563eb"
CORRECT = "#16a34a"
WRONG = "#dc2626"
RUN_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
DIVERGING = "RdBu_r"  # positive weights red, negative blue, zero white
SCALE_MODES = ("per map", "per layer", "global")
NORMALIZE_MODES = ("counts", "row", "column", "all")
MIN_WIDTH = 300  # pixels: an image figure's narrowest, two fit side by side on a laptop
MAX_MOSAIC_PIXELS = 400_000  # about a screenful; larger activation mosaics are thinned

LENS_TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": FONT, "size": 13, "color": INK},
        "title": {  # just above the plot area; automargin makes room for it and a subtitle
            "font": {"size": 18},
            "x": 0.0,
            "xref": "paper",
            "y": 1.0,
            "yref": "paper",
            "yanchor": "bottom",
            "pad": {"b": 16},
            "automargin": True,
        },
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 60, "r": 30, "t": 80, "b": 55, "autoexpand": True},
        "colorway": list(RUN_COLOURS),
        "hoverlabel": {"font": {"family": FONT, "size": 13}, "bgcolor": "white"},
        "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
        "xaxis": {
            "gridcolor": GRID,
            "zerolinecolor": "#9ca3af",
            "linecolor": "#9ca3af",
            "ticks": "outside",
            "automargin": True,
            "title": {"standoff": 8},
        },
        "yaxis": {
            "gridcolor": GRID,
            "zerolinecolor": "#9ca3af",
            "linecolor": "#9ca3af",
            "ticks": "outside",
            "automargin": True,
            "title": {"standoff": 8},
        },
    },
    data={
        "heatmap": [go.Heatmap(colorbar={"thickness": 14, "outlinewidth": 0, "len": 0.9})],
    },
)


# ---------------------------------------------------------------------------------------------
# Tiling and scaling


@dataclass(frozen=True)
class TileLayout:
    """Where each map of a `tile` mosaic sits: a grid of rows × cols tiles with pad-pixel gaps."""

    rows: int
    cols: int
    tile_h: int
    tile_w: int
    pad: int
    count: int  # maps actually placed; the last row may end in empty tiles

    @property
    def height(self) -> int:
        """Mosaic height in pixels."""
        return self.rows * (self.tile_h + self.pad) - self.pad

    @property
    def width(self) -> int:
        """Mosaic width in pixels."""
        return self.cols * (self.tile_w + self.pad) - self.pad

    def origin(self, k: int) -> tuple[int, int]:
        """Mosaic pixel (y, x) of the top-left corner of map k."""
        row, col = divmod(k, self.cols)
        return row * (self.tile_h + self.pad), col * (self.tile_w + self.pad)

    def locate(self, y: int, x: int) -> tuple[int, int, int] | None:
        """Map a mosaic pixel (y, x) back to (map index, y, x) inside it; None on a gap."""
        row, ty = divmod(int(y), self.tile_h + self.pad)
        col, tx = divmod(int(x), self.tile_w + self.pad)
        k = row * self.cols + col
        inside = 0 <= row < self.rows and 0 <= col < self.cols
        if not inside or ty >= self.tile_h or tx >= self.tile_w or k >= self.count:
            return None
        return k, ty, tx


def tile(
    maps: np.ndarray, *, cols: int | None = None, pad: int = 1, fill: float = np.nan
) -> tuple[np.ndarray, TileLayout]:
    """Tile (N, H, W[, ...]) maps row-major into one mosaic with `fill` in the gaps."""
    a = _numpy(maps)
    if a.ndim < 3 or 0 in a.shape[:3]:
        raise ShapeError(f"tile needs maps shaped (N, H, W), got {a.shape}")
    N, H, W = a.shape[:3]
    rest = a.shape[3:]  # e.g. a trailing RGB or hover-record axis rides along
    if cols is None:  # near-square in pixels, not in tiles
        cols = math.ceil(math.sqrt(N * (H + pad) / (W + pad)))
    cols = max(1, min(int(cols), N))
    rows = math.ceil(N / cols)
    if np.issubdtype(a.dtype, np.integer) and float(fill).is_integer():
        dtype = a.dtype
    else:
        dtype = np.result_type(a.dtype, np.float32)
    canvas = np.full((rows * cols, H + pad, W + pad, *rest), fill, dtype=dtype)
    canvas[:N, :H, :W] = a
    grid = canvas.reshape(rows, cols, H + pad, W + pad, *rest).swapaxes(1, 2)
    mosaic = grid.reshape(rows * (H + pad), cols * (W + pad), *rest)
    layout = TileLayout(rows, cols, H, W, pad, N)
    return np.ascontiguousarray(mosaic[: layout.height, : layout.width]), layout


def scale_maps(
    maps: np.ndarray, mode: str, global_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Scale maps (N, ...) to 0..1: "per map" own min..max, "per layer" all, "global" given."""
    a = _numpy(maps).astype(np.float64)
    if mode == "per map":
        flat = a.reshape(len(a), -1)
        lo = flat.min(axis=1).reshape((-1,) + (1,) * (a.ndim - 1))
        hi = flat.max(axis=1).reshape(lo.shape)
    elif mode == "per layer":
        lo, hi = a.min(), a.max()
    elif mode == "global":
        if global_range is None:
            raise ValueError('scale "global" needs global_range=(low, high)')
        lo, hi = float(global_range[0]), float(global_range[1])
    else:
        raise ValueError(f"unknown scale {mode!r}; choose one of {', '.join(SCALE_MODES)}")
    span = np.asarray(hi - lo, dtype=np.float64)
    safe = np.where(span > 0, span, 1.0)  # a constant map scales to 0, not NaN
    return np.clip((a - lo) / safe, 0.0, 1.0) * (span > 0)


# ---------------------------------------------------------------------------------------------
# Weights


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
    w = _numpy(weights).astype(np.float64)
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
    custom = _hover_records(np.arange(c_out), rows, cols, maps, layout)  # filter, row, col, w
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
    _image_layout(
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
    w = _numpy(weights).astype(np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ShapeError(f"RGB filters must be (C_out, 3, kh, kw), got {w.shape}")
    c_out, _, kh, kw = w.shape
    peak = np.abs(w).reshape(c_out, -1).max(axis=1)
    unit = w / (2 * np.where(peak > 0, peak, 1.0))[:, None, None, None] + 0.5  # -max→0, 0→½
    rgb = np.rint(unit * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (C_out, kh, kw, 3)
    mosaic, layout = tile(rgb, pad=1, fill=255)
    rows, cols = np.indices((kh, kw))
    rgb_weights = w.transpose(0, 2, 3, 1)
    custom = _hover_records(np.arange(c_out), rows, cols, rgb_weights, layout)  # …, R, G, B
    fig = go.Figure(
        [
            go.Image(z=mosaic, hoverinfo="skip"),
            _hover_layer(
                custom[..., 0],
                custom,
                "filter %{customdata[0]}, row %{customdata[1]}, col %{customdata[2]}"
                "<br>R %{customdata[3]:.4~g}<br>G %{customdata[4]:.4~g}"
                "<br>B %{customdata[5]:.4~g}<extra></extra>",
            ),
        ]
    )
    subtitle = f"{c_out} filters of {kh}×{kw} · mid grey = 0 · each filter scaled by its max |w|"
    _image_layout(
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
    every = _numpy(weights).astype(np.float64).ravel()
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
        title=_title(title or "Weight distribution", subtitle),
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
    a = _numpy(maps).astype(np.float64)
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
    custom = _hover_records(np.arange(N), ys, xs, a, layout)  # map, y, x, true value
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
    _image_layout(fig, layout.height + pad, layout.width, title, subtitle, max_side=max_side)
    fig.update_layout(showlegend=False)
    if not colorbar:  # no room to keep for a scale: as narrow as the mosaic
        cell = min(max_side / max(layout.height + pad, layout.width), 40.0)
        fig.update_layout(width=int(max(MIN_WIDTH, layout.width * cell + 50)))
        fit_titles(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# Activations and images


def activation_grid(
    maps: np.ndarray,
    *,
    scale: str = "per layer",
    order: np.ndarray | None = None,
    dead: np.ndarray | None = None,
    title: str = "",
    colorscale: str = "Viridis",
    global_range: tuple[float, float] | None = None,
    max_pixels: int = MAX_MOSAIC_PIXELS,
    max_side: float = 640,
) -> go.Figure:
    """One image's activations (C, H, W) as one tiled heatmap; (C,) or (C, 1, 1) as bars.

    Mosaics over `max_pixels` are thinned (every k-th row and column of each map): a page
    stacking many layers passes a smaller budget to keep what it sends the browser small."""
    a = _numpy(maps).astype(np.float32)
    if a.ndim == 3 and a.shape[1:] == (1, 1):
        a = a[:, 0, 0]  # after global pooling each channel is one number
    if a.ndim not in (1, 3) or a.shape[0] == 0:
        raise ShapeError(f"activations must be (C, H, W) or (C,), got {a.shape}")
    channels = np.arange(len(a)) if order is None else np.asarray(order, dtype=np.int64)
    if channels.size == 0 or channels.min() < 0 or channels.max() >= len(a):
        raise ShapeError(f"order must index the {len(a)} channels")
    dead_mask = np.zeros(len(a), dtype=bool)
    if dead is not None:
        dead_arr = np.asarray(dead)
        dead_mask[dead_arr if dead_arr.dtype != bool else np.flatnonzero(dead_arr)] = True
    if global_range is None and scale == "global":
        raise ValueError('scale "global" needs global_range=(low, high)')
    if a.ndim == 1:
        return _activation_bars(a, channels, dead_mask, title, colorscale, scale, global_range)

    shown = a[channels]  # (n, H, W) in display order
    n, H, W = shown.shape
    if scale == "per map":
        z = scale_maps(shown, "per map").astype(np.float32)
        zmin, zmax = 0.0, 1.0
        colorbar = {
            "title": {"text": "per-channel<br>scale"},
            "tickvals": [0, 1],
            "ticktext": ["channel min", "channel max"],
        }
    elif scale in SCALE_MODES:  # raw values; the colour bar reads in activation units
        lo, hi = global_range if scale == "global" else (float(a.min()), float(a.max()))
        z, zmin, zmax = shown, float(lo), float(hi)
        colorbar = {"title": {"text": "activation"}}
        if zmax <= zmin:
            zmax = zmin + 1.0
    else:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALE_MODES)}")
    # Big layers (64×112×112) are thinned to about the screen's resolution: keeps the payload
    # to the browser bounded; hover still reports each shown pixel's true position and value.
    stride = max(1, math.ceil(math.sqrt(n * H * W / max_pixels)))
    z, values = z[:, ::stride, ::stride], shown[:, ::stride, ::stride]
    ys, xs = np.indices((H, W))[:, ::stride, ::stride]
    pad = max(1, values.shape[1] // 16)  # a 1-pixel gap vanishes between large maps
    mosaic, layout = tile(z, pad=pad)
    custom = _hover_records(channels, ys, xs, values, layout)  # channel, y, x, value
    traces: list[go.BaseTraceType] = [
        go.Heatmap(
            z=mosaic,
            zmin=zmin,
            zmax=zmax,
            colorscale=colorscale,
            customdata=custom,
            hoverongaps=False,
            hovertemplate="channel %{customdata[0]}<br>y %{customdata[1]}, x %{customdata[2]}"
            "<br>activation %{customdata[3]:.4~g}<extra></extra>",
            colorbar=colorbar,
        )
    ]
    dead_shown = np.flatnonzero(dead_mask[channels])
    if dead_shown.size:
        traces.append(_dead_outlines(layout, dead_shown))
    fig = go.Figure(traces)
    parts = [f"{n} of {len(a)} channels" if n < len(a) else f"{n} channels", f"{H}×{W} each"]
    parts.append({"per map": "each channel scaled to its own range"}.get(scale, f"{scale} scale"))
    if stride > 1:
        parts.append(f"shown at 1/{stride} resolution")
    if dead_shown.size:
        parts.append(f"{dead_shown.size} dead (outlined red)")
    subtitle = " · ".join(parts)
    _image_layout(
        fig, layout.height, layout.width, title or "Activations", subtitle, max_side=max_side
    )
    fig.update_layout(showlegend=False)
    return fig


def _activation_bars(
    values: np.ndarray,
    channels: np.ndarray,
    dead: np.ndarray,
    title: str,
    colorscale: str,
    scale: str,
    global_range: tuple[float, float] | None,
) -> go.Figure:
    """Vector activations (after flatten/linear/global pooling) as bars in display order."""
    shown = values[channels]
    lo, hi = global_range if scale == "global" else (float(values.min()), float(values.max()))
    traces: list[go.BaseTraceType] = [
        go.Bar(
            x=np.arange(len(shown)),
            y=shown,
            customdata=channels,
            marker={
                "color": shown,
                "colorscale": colorscale,
                "cmin": lo,
                "cmax": hi if hi > lo else lo + 1.0,
                "line": {"width": 0},
            },
            hovertemplate="unit %{customdata}<br>activation %{y:.4~g}<extra></extra>",
            name="activation",
        )
    ]
    dead_at = np.flatnonzero(dead[channels])
    if dead_at.size:
        traces.append(
            go.Scatter(
                x=dead_at,
                y=np.zeros(dead_at.size),
                mode="markers",
                marker={"symbol": "x-thin", "size": 9, "line": {"color": DEAD, "width": 2}},
                customdata=channels[dead_at],
                hovertemplate="unit %{customdata}: dead<extra></extra>",
                name="dead unit",
            )
        )
    fig = go.Figure(traces)
    ordered = not np.array_equal(channels, np.arange(len(values)))
    parts = [
        f"{len(shown)} of {len(values)} units"
        if len(shown) < len(values)
        else f"{len(values)} units"
    ]
    if dead_at.size:
        parts.append(f"{dead_at.size} dead (red ×)")
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(title or "Activations", " · ".join(parts)),
        xaxis={"title": "unit (display order, hover for index)" if ordered else "unit"},
        yaxis={"title": "activation"},
        bargap=0.1 if len(shown) <= 64 else 0,
        width=min(1000, max(480, 200 + 6 * len(shown))),
        height=360,
        showlegend=False,
    )
    return fig


@dataclass(frozen=True)
class _StackBlock:
    """One layer of `activation_stack`: its mosaic and where it sits, in figure pixels."""

    name: str
    z: np.ndarray  # the mosaic as drawn (scaled per map, or raw values)
    custom: np.ndarray  # hover records: channel, y, x, value
    low: float  # the colour range of this layer
    high: float
    label: str
    x: float  # left edge of the mosaic
    y: float  # top edge of the mosaic
    unit: float  # pixels per mosaic cell
    height: float  # pixels


def activation_stack(
    layers: Sequence[tuple[str, np.ndarray]],
    *,
    scale: str = "per layer",
    global_range: tuple[float, float] | None = None,
    max_pixels: int = MAX_MOSAIC_PIXELS,
    width: int = 300,
    columns: int = 1,
    colorbars: bool = True,
    title: str = "",
    colorscale: str = "Viridis",
) -> go.Figure:
    """Several layers' maps (name, (C, H, W)) as ONE figure: a block per layer, `columns`
    blocks a row in forward order, each mosaic `width` pixels wide with its name above it and
    its own colour bar beside it, exactly as tall as its maps. One chart however deep the
    model: a page showing every layer sends one figure, not dozens.

    The figure is sized to its blocks, one data unit a pixel, with no band left over; it is
    not meant to be stretched (its width, `columns` × (`width` + a colour bar), fits a laptop's
    page at two columns of 300). Colours: "per layer" draws each layer's values on its own
    range, "global" on `global_range`, "per map" each map on its own range (the bar then reads
    "map min … map max"). The layers share `max_pixels`; a layer over its share is thinned.
    Hover gives the true values.
    """
    if not layers:
        raise ShapeError("no layers to draw")
    if scale not in SCALE_MODES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALE_MODES)}")
    if scale == "global" and global_range is None:
        raise ValueError('scale "global" needs global_range=(low, high)')
    share = max_pixels / len(layers)
    label_gap, row_gap = 30.0, 18.0  # pixels: a layer's name above it, space under a row
    bar = 80.0 if colorbars else 12.0  # pixels beside each mosaic: its colour bar and ticks
    blocks: list[_StackBlock] = []
    top, row_height = 0.0, 0.0
    for k, (name, maps) in enumerate(layers):
        a = _numpy(maps).astype(np.float32)
        if a.ndim != 3 or a.shape[0] == 0:
            raise ShapeError(f"layer {name}: maps must be (C, H, W), got {a.shape}")
        C, H, W = a.shape
        stride = max(1, math.ceil(math.sqrt(C * H * W / share)))
        values = a[:, ::stride, ::stride]
        if scale == "per map":
            z, low, high = scale_maps(values, scale).astype(np.float32), 0.0, 1.0
        elif scale == "global":
            z, (low, high) = values, (float(global_range[0]), float(global_range[1]))
        else:
            z, low, high = values, float(a.min()), float(a.max())
        mosaic, layout = tile(z, pad=max(1, values.shape[1] // 16))
        ys, xs = np.indices((H, W))[:, ::stride, ::stride]
        column = k % columns
        if column == 0 and k:
            top += row_height + row_gap
            row_height = 0.0
        unit = width / layout.width
        shown = f" · 1/{stride} resolution" if stride > 1 else ""
        blocks.append(
            _StackBlock(
                name,
                mosaic,
                _hover_records(np.arange(C), ys, xs, values, layout),
                low,
                high if high > low else low + 1.0,
                f"<b>{name}</b> · {C} × {H}×{W}{shown}",
                column * (width + bar),
                top + label_gap,
                unit,
                layout.height * unit,
            )
        )
        row_height = max(row_height, label_gap + layout.height * unit)
    total_w, total_h = columns * (width + bar), top + row_height
    fig = go.Figure()
    axes: dict[str, Any] = {}
    for k, block in enumerate(blocks):
        axis = "coloraxis" if k == 0 else f"coloraxis{k + 1}"
        fig.add_trace(
            go.Heatmap(
                z=block.z,
                x0=block.x + block.unit / 2,
                dx=block.unit,
                y0=block.y + block.unit / 2,
                dy=block.unit,
                customdata=block.custom,
                coloraxis=axis,
                hoverongaps=False,
                hovertemplate=f"<b>{block.name}</b><br>channel %{{customdata[0]}}"
                "<br>y %{customdata[1]}, x %{customdata[2]}"
                "<br>activation %{customdata[3]:.4~g}<extra></extra>",
                name=block.name,
            )
        )
        colorbar: dict[str, Any] = {
            "x": (block.x + width + 8) / total_w,  # paper: 0 … 1 across the blocks
            "xanchor": "left",
            "y": 1 - block.y / total_h,
            "yanchor": "top",
            "len": block.height / total_h,
            "lenmode": "fraction",
            "thickness": 12,
            "outlinewidth": 0,
            "tickfont": {"size": 10},
        }
        if scale == "per map":
            colorbar |= {"tickvals": [0, 1], "ticktext": ["map min", "map max"]}
        axes[axis] = {
            "colorscale": colorscale,
            "cmin": block.low,
            "cmax": block.high,
            "showscale": colorbars,
            "colorbar": colorbar,
        }
    hidden = {"visible": False, "showgrid": False, "zeroline": False, "fixedrange": True}
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(title or "Every layer", f"{len(layers)} layers · {scale} scale"),
        xaxis={**hidden, "range": [0, total_w], "domain": [0, 1]},
        yaxis={**hidden, "range": [total_h, 0], "domain": [0, 1]},
        annotations=[
            {
                "text": block.label,
                "x": block.x,
                "y": block.y - 6,
                "xref": "x",
                "yref": "y",
                "xanchor": "left",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 13, "color": INK},
            }
            for block in blocks
        ],
        width=int(total_w + 20),
        height=int(total_h + 100),
        margin={"l": 10, "r": 10, "t": 90, "b": 10, "autoexpand": False},
        showlegend=False,
        **axes,
    )
    return fig


def boxed_image(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    *,
    title: str = "",
    caption: str = "",
    color: str = "#f59e0b",
) -> go.Figure:
    """An input image with a frame around `box` (top, left, bottom, right), inclusive: the
    pixels a neuron or a kernel window sees."""
    fig = image_figure(image, title=title, caption=caption)
    top, left, bottom, right = box
    fig.add_shape(
        type="rect",
        x0=left - 0.5,
        x1=right + 0.5,
        y0=top - 0.5,
        y1=bottom + 0.5,
        line={"color": color, "width": 3},
    )
    return fig


NARROW_TITLE_PX = 190  # titles of figures that sit in a third of a laptop's page wrap here


def image_figure(
    image: np.ndarray, *, title: str = "", subtitle: str = "", caption: str = ""
) -> go.Figure:
    """An input image, (H, W), (H, W, 3) or (3, H, W), drawn pixel-exact without tick clutter."""
    rgb, values = _rgb(image)
    H, W = rgb.shape[:2]
    gray = values.ndim == 2
    fig = go.Figure(
        go.Image(
            z=rgb,
            customdata=values if gray else None,
            hovertemplate=(
                "x %{x}, y %{y}<br>value %{customdata:.4~g}<extra></extra>"
                if gray
                else "x %{x}, y %{y}<br>RGB %{z}<extra></extra>"
            ),
        )
    )
    _image_layout(fig, H, W, title or "Input image", subtitle, max_side=320)
    fit_titles(fig, NARROW_TITLE_PX)
    if caption:
        fig.add_annotation(
            text=caption,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0,
            yshift=-10,
            yanchor="top",
            showarrow=False,
            font={"color": MUTED, "size": 12},
        )
        fig.update_layout(margin={"b": 50})
    return fig


def gradcam_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.45,
    title: str = "",
    colorscale: str = "Jet",
) -> go.Figure:
    """A class-activation map (h, w) upsampled bilinearly and blended over the image."""
    rgb, _ = _rgb(image)
    H, W = rgb.shape[:2]
    cam = upsample(heatmap, (H, W))
    lo, hi = float(cam.min()), float(cam.max())
    cam = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    fig = go.Figure(
        [
            go.Image(z=rgb, hoverinfo="skip"),
            go.Heatmap(
                z=cam,
                zmin=0.0,
                zmax=1.0,
                colorscale=colorscale,
                opacity=alpha,  # the browser blends: (1 − α)·image + α·colour
                colorbar={"title": {"text": "relative<br>importance"}},
                hovertemplate="x %{x}, y %{y}<br>importance %{z:.2f}<extra></extra>",
            ),
        ]
    )
    _image_layout(fig, H, W, title or "Where the model looked", "", max_side=360)
    return fig


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False) resize of a 2-D map to size (H, W), as torch does it."""
    h = torch.as_tensor(_numpy(heatmap), dtype=torch.float32)
    if h.ndim != 2:
        raise ShapeError(f"heatmap must be 2-D (h, w), got {tuple(h.shape)}")
    out = F.interpolate(h[None, None], size=size, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def probability_bars(
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    true_class: int | None = None,
    top: int | None = 10,
    title: str = "",
) -> go.Figure:
    """Class probabilities as sorted horizontal bars: predicted coloured, true class marked."""
    p = _numpy(probabilities).astype(np.float64).ravel()
    if len(p) != len(classes):
        raise ShapeError(f"{len(p)} probabilities for {len(classes)} classes")
    ranked = np.argsort(-p, kind="stable")
    shown = list(ranked[: top or len(p)])
    if true_class is not None and true_class not in shown:
        shown.append(true_class)  # the true class is always visible, even far down
    predicted = int(ranked[0])
    verdict_colour = CORRECT if predicted == true_class else WRONG
    top_colour = PREDICTED if true_class is None else verdict_colour
    colours = [top_colour if k == predicted else "#cbd5e1" for k in shown]
    outline = [CORRECT if k == true_class else "rgba(0,0,0,0)" for k in shown]
    labels = [f"{classes[k]}  ✓ true" if k == true_class else str(classes[k]) for k in shown]
    values = p[shown] * 100
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker={"color": colours, "line": {"color": outline, "width": 2}},
            text=[f"{v:.1f} %" for v in values],
            textposition="outside",
            cliponaxis=False,
            customdata=np.array([[int(k), r + 1] for r, k in enumerate(shown)]),
            hovertemplate="%{y}<br>class %{customdata[0]}, rank %{customdata[1]}"
            "<br>%{x:.2f} %<extra></extra>",
        )
    )
    verdict = f"predicted {classes[predicted]} ({p[predicted] * 100:.1f} %)"
    if true_class is not None:
        verdict += f" · true {classes[true_class]}"
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(title or "Class probabilities", verdict),
        xaxis={"title": "probability (%)", "range": [0, 112], "showgrid": True},
        yaxis={"autorange": "reversed", "ticks": "", "type": "category"},  # "7" is a name
        width=560,
        height=max(220, 130 + 28 * len(shown)),
        showlegend=False,
    )
    fit_titles(fig, NARROW_TITLE_PX)
    return fig


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def curve_overlay(curves: Sequence[Run], *, metric: str, title: str, one_split: bool) -> go.Figure:
    """Several runs' curves of one metric on one set of axes; with one split shown, one line per
    run, named by the run alone."""
    fig = training_curves(curves, metric=metric, title=title)
    if one_split:
        fig.for_each_trace(lambda t: t.update(name=t.legendgroup, legendgrouptitle=None))
        shown = "one run" if len(curves) == 1 else f"{len(curves)} runs, one line each"
        fig.update_layout(title_subtitle_text=shown)
    fig.update_layout(height=540, legend={"orientation": "h", "y": -0.16})
    return fig


def training_curves(runs: Sequence[Run], *, metric: str = "accuracy", title: str = "") -> go.Figure:
    """Train (solid) and test (dashed) curves, one colour and legend group per run."""
    if metric not in ("accuracy", "loss"):
        raise ValueError(f'unknown metric {metric!r}; choose "accuracy" or "loss"')
    factor = 100.0 if metric == "accuracy" else 1.0
    unit = " %" if metric == "accuracy" else ""
    traces = []
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for split, values, dash in (("train", run.train, "solid"), ("test", run.test, "dash")):
            if not values:
                continue  # a split that was never measured
            if len(values) != len(run.epochs):
                raise ShapeError(
                    f"run {run.label!r}: {len(values)} {split} values for {len(run.epochs)} epochs"
                )
            kept = [(e, v) for e, v in zip(run.epochs, values, strict=True) if v is not None]
            if not kept:
                continue
            traces.append(
                go.Scatter(
                    x=[e for e, _ in kept],
                    y=[v * factor for _, v in kept],
                    name=split,
                    legendgroup=run.label,
                    legendgrouptitle_text=run.label,
                    mode="lines+markers" if len(kept) <= 40 else "lines",
                    line={"color": colour, "dash": dash, "width": 2.5},
                    marker={"size": 7, "color": colour},
                    hovertemplate=f"{run.label} · {split}<br>epoch %{{x:.2f}}<br>{metric} "
                    f"%{{y:.{2 if metric == 'accuracy' else 4}f}}{unit}<extra></extra>",
                )
            )
    fig = go.Figure(traces)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(title or f"Training {metric}", "solid = train · dashed = test"),
        xaxis={"title": "epoch", "rangemode": "tozero" if metric == "loss" else "normal"},
        yaxis={"title": f"{metric} (%)" if metric == "accuracy" else "loss", "ticksuffix": unit},
        width=720,
        height=420,
        legend={"groupclick": "toggleitem", "tracegroupgap": 8},
    )
    return fig


def _class_ticks(names: Sequence[str]) -> dict:
    """Axis settings naming the classes of a K×K matrix: at most 50 labels, smaller past 20."""
    K = len(names)
    step = max(1, math.ceil(K / 50))
    return {
        "tickmode": "array",
        "tickvals": list(range(0, K, step)),
        "ticktext": list(names)[::step],
        "tickfont": {"size": 12 if K <= 20 else 9},
        "showgrid": False,
        "zeroline": False,
        "ticks": "",
    }


def confusion_heatmap(
    cm: np.ndarray, classes: Sequence[str], *, normalize: str = "counts", title: str = ""
) -> go.Figure:
    """Confusion matrix (rows = true) with cell text and a clickable overlay, one per cell."""
    counts = _numpy(cm).astype(np.int64)
    K = len(classes)
    if counts.shape != (K, K):
        raise ShapeError(f"confusion matrix {counts.shape} does not fit {K} classes")
    shares = confusion_shares(counts)
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize {normalize!r}; choose {', '.join(NORMALIZE_MODES)}")
    z = counts.astype(np.float64) if normalize == "counts" else shares[normalize]
    basis = "row" if normalize == "counts" else normalize
    of = {"row": "of row", "column": "of column", "all": "of all"}[basis]
    names = [str(c) for c in classes]
    hover = [
        f"true {names[i]} → predicted {names[j]}: {counts[i, j]:,} "
        f"image{'s' if counts[i, j] != 1 else ''} ({shares[basis][i, j]:.1f} % {of})"
        for i in range(K)
        for j in range(K)
    ]
    cell_px = max(6.0, min(56.0, 640 / K))
    side = cell_px * K
    heat = go.Heatmap(
        z=z,
        x=np.arange(K),
        y=np.arange(K),
        colorscale="Blues",
        zmin=0,
        hoverinfo="skip",  # hover and clicks come from the overlay below
        colorbar={"title": {"text": "images" if normalize == "counts" else f"% {of}"}},
    )
    if K <= 20:
        heat.update(text=confusion_text(counts, normalize), texttemplate="%{text}")
    i, j = np.divmod(np.arange(K * K), K)
    overlay = go.Scatter(
        x=j,
        y=i,
        mode="markers",
        marker={"symbol": "square", "size": cell_px, "opacity": 0.01, "color": INK},
        customdata=np.stack([i, j], axis=1),
        hovertext=hover,
        hovertemplate="%{hovertext}<extra></extra>",
        showlegend=False,
        name="cells",
    )
    ticks = _class_ticks(names)
    subtitle = {
        "counts": "images per cell · rows = true class",
        "row": "% of each true class (rows sum to 100 %)",
        "column": "% of each predicted class (columns sum to 100 %)",
        "all": "% of all images",
    }[normalize]
    fig = go.Figure([heat, overlay])
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(title or "Confusion matrix", subtitle + " · click a cell"),
        xaxis={**ticks, "title": "predicted class", "range": [-0.5, K - 0.5], "tickangle": -45},
        yaxis={
            **ticks,
            "title": "true class",
            "range": [K - 0.5, -0.5],  # class 0 on top
            "scaleanchor": "x",
            "constrain": "domain",
        },
        width=int(side + 260),
        height=int(side + 200),
        clickmode="event+select",
        hovermode="closest",
        dragmode=False,
    )
    return fig


def confusion_shares(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The matrix as percentages of its row, its column and of all images (0 where empty)."""
    c = _numpy(cm).astype(np.float64)

    def share(total: np.ndarray | float) -> np.ndarray:
        total = np.asarray(total, dtype=np.float64)
        return np.divide(c * 100, total, out=np.zeros_like(c), where=total > 0)

    return {
        "row": share(c.sum(axis=1, keepdims=True)),
        "column": share(c.sum(axis=0, keepdims=True)),
        "all": share(c.sum()),
    }


def confusion_text(cm: np.ndarray, normalize: str) -> np.ndarray:
    """Cell labels: counts as integers, shares with one decimal ("0" for an exact zero)."""
    counts = _numpy(cm).astype(np.int64)
    if normalize == "counts":
        return counts.astype(str)
    values = confusion_shares(counts)[normalize]
    return np.array([[f"{v:.1f}" if v else "0" for v in row] for row in values])


def confusion_difference(
    cm_a: np.ndarray,
    cm_b: np.ndarray,
    classes: Sequence[str],
    *,
    names: tuple[str, str] = ("A", "B"),
    title: str = "",
) -> go.Figure:
    """Two models' matrices on the same images: cells show B − A, coloured by whether B is
    better there (blue: more on the diagonal or fewer off it) or worse (red), centred at zero."""
    a, b = _numpy(cm_a).astype(np.int64), _numpy(cm_b).astype(np.int64)
    K = len(classes)
    if a.shape != (K, K) or b.shape != (K, K):
        raise ShapeError(f"confusion matrices {a.shape} and {b.shape} do not fit {K} classes")
    diff = b - a
    better = -diff
    np.fill_diagonal(better, np.diag(diff))
    peak = max(1, int(np.abs(better).max()))
    names_ = [str(c) for c in classes]
    verdict = np.where(better > 0, "better", np.where(better < 0, "worse", "same"))
    hover = [
        f"true {names_[i]} → predicted {names_[j]}<br>{names[0]}: {a[i, j]:,} · "
        f"{names[1]}: {b[i, j]:,} ({diff[i, j]:+,}: {names[1]} {verdict[i, j]})"
        for i in range(K)
        for j in range(K)
    ]
    heat = go.Heatmap(
        z=better,
        x=np.arange(K),
        y=np.arange(K),
        colorscale="RdBu",
        zmin=-peak,
        zmax=peak,
        zmid=0,
        customdata=np.array(hover, dtype=object).reshape(K, K),
        hovertemplate="%{customdata}<extra></extra>",
        colorbar={
            "title": {"text": f"{names[1]} vs {names[0]}"},
            "tickvals": [-peak, 0, peak],
            "ticktext": [f"{peak} worse", "same", f"{peak} better"],
        },
    )
    if K <= 20:
        text = np.where(diff == 0, "", np.char.replace(np.char.mod("%+d", diff), "-", "−"))
        heat.update(text=text, texttemplate="%{text}")
    cell_px = max(6.0, min(56.0, 640 / K))
    ticks = _class_ticks(names_)
    fig = go.Figure(heat)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(
            title or f"Difference: {names[1]} − {names[0]}",
            "cells show B − A images · blue: B better, red: B worse",
        ),
        xaxis={**ticks, "title": "predicted class", "range": [-0.5, K - 0.5], "tickangle": -45},
        yaxis={
            **ticks,
            "title": "true class",
            "range": [K - 0.5, -0.5],
            "scaleanchor": "x",
            "constrain": "domain",
        },
        width=int(cell_px * K + 260),
        height=int(cell_px * K + 200),
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Architecture


@dataclass(frozen=True)
class _Block:
    """One drawn block of the shape-flow diagram, in pixels (y up)."""

    name: str
    shape: tuple[int, ...]
    x0: float
    width: float  # front face, ∝ log channels
    height: float  # front face, ∝ √H or H
    depth: float  # oblique edge, same scale as height but for W
    row: int = 0
    yc: float = 0.0  # centre line of the block's row
    names_y: float = 0.0  # baseline of the row's name labels (text above it)
    shapes_y: float = 0.0  # top line of the row's shape labels (text below it)

    @property
    def flat(self) -> bool:
        return len(self.shape) == 1

    @property
    def centre(self) -> float:
        return self.x0 + (self.width + self.depth * _COS) / 2

    @property
    def top(self) -> float:
        return self.height / 2 + self.depth * _COS


_COS = 0.7  # the oblique edge runs at 45°, drawn shortened
_MAX_BLOCK = 150.0  # pixels for the largest spatial size
_CHAR = 6.8  # pixels per character of an 11-pt label
_LINE = 15.0  # pixels per line of label text


def shape_flow_diagram(
    layers: Sequence[tuple[str, tuple[int, ...]]],
    *,
    title: str = "",
    spatial_scale: str = "sqrt",
    max_width: int = 1100,
) -> go.Figure:
    """Feature-map flow as blocks (height ∝ √H or H, width ∝ log C), in rows ≤ max_width px."""
    if not layers:
        raise ShapeError("no layers to draw")
    if spatial_scale not in ("sqrt", "linear"):
        raise ValueError(f'unknown spatial_scale {spatial_scale!r}; choose "sqrt" or "linear"')
    for name, shape in layers:
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise ShapeError(f"layer {name}: shape must be (C, H, W) or (F,), got {shape}")
    shapes = [(name, tuple(int(s) for s in shape)) for name, shape in layers]
    blocks = _stack_rows(_place_blocks(shapes, spatial_scale, max_width - 80.0))
    traces = []
    for flat, colours, legend in (
        (False, ("#6baed6", "#c6dbef", "#4292c6", "#08519c"), "feature maps C×H×W"),
        (True, ("#fdae6b", "#fdd0a2", "#f16913", "#a63603"), "vectors F"),
    ):
        group = [b for b in blocks if b.flat == flat]
        if not group:
            continue
        for face, colour in zip(("front", "top", "side"), colours[:3], strict=True):
            xs, ys = _faces(group, face)
            traces.append(
                go.Scatter(
                    x=xs,
                    y=ys,
                    fill="toself",
                    fillcolor=colour,
                    mode="lines",
                    line={"color": colours[3], "width": 1},
                    hoverinfo="skip",
                    name=legend,
                    legendgroup=legend,
                    showlegend=face == "front",
                )
            )
    traces.extend(_flow_arrows(blocks))
    centres = [b.centre for b in blocks]
    for name, ys, text, position, colour in (
        (
            "shapes",
            [b.shapes_y for b in blocks],
            [_shape_label(b.shape) for b in blocks],
            "bottom center",
            INK,
        ),
        (
            "names",
            [b.names_y for b in blocks],
            [_wrap_name(b.name) for b in blocks],
            "top center",
            MUTED,
        ),
    ):
        traces.append(
            go.Scatter(
                x=centres,
                y=ys,
                mode="text",
                text=text,
                textposition=position,
                textfont={"size": 11, "color": colour},
                hoverinfo="skip",
                showlegend=False,
                name=name,
            )
        )
    traces.append(
        go.Scatter(
            x=[b.x0 + b.width / 2 for b in blocks],
            y=[b.yc for b in blocks],
            mode="markers",
            marker={"size": [max(12.0, min(b.height, b.width, 60.0)) for b in blocks]},
            opacity=0,
            hovertext=[_block_hover(b) for b in blocks],
            hovertemplate="%{hovertext}<extra></extra>",
            showlegend=False,
            name="blocks",
        )
    )
    x_max = max(b.x0 + b.width + b.depth * _COS for b in blocks) + 20
    y_max = max(b.names_y + _LINE * _lines(b.name) for b in blocks) + 4
    y_min = min(b.shapes_y for b in blocks) - _LINE - 6
    hidden = {"visible": False, "fixedrange": True}
    height_rule = "height ∝ √(spatial size)" if spatial_scale == "sqrt" else "height ∝ spatial size"
    fig = go.Figure(traces)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(
            title or "Feature-map flow",
            f"{height_rule} · width ∝ log channels · hover a block for details",
        ),
        xaxis={**hidden, "range": [-20, x_max]},
        yaxis={**hidden, "range": [y_min, y_max], "scaleanchor": "x"},
        width=int(x_max + 60),
        height=int(y_max - y_min + 130),
        margin={"l": 20, "r": 20, "b": 40},
        legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "top"},
        hovermode="closest",
    )
    return fig


def _place_blocks(
    layers: list[tuple[str, tuple[int, ...]]], spatial_scale: str, row_width: float
) -> list[_Block]:
    """Block sizes from the shapes, then x positions left to right in rows of even length."""
    grow = math.sqrt if spatial_scale == "sqrt" else float
    max_hw = max((max(s[1], s[2]) for _, s in layers if len(s) == 3), default=1)
    max_f = max((s[0] for _, s in layers if len(s) == 1), default=1)
    sized: list[tuple[str, tuple[int, ...], float, float, float, float]] = []
    for name, shape in layers:
        if len(shape) == 3:
            C, H, W = shape
            width = 10 + 7 * math.log2(C)
            height = max(6.0, _MAX_BLOCK * grow(H) / grow(max_hw))
            depth = 0.45 * _MAX_BLOCK * grow(W) / grow(max_hw)
        else:
            width, depth = 12.0, 0.0
            height = max(14.0, _MAX_BLOCK * math.log2(shape[0] + 1) / math.log2(max_f + 1))
        label = max(len(_shape_label(shape)), *(len(p) for p in _wrap_name(name).split("<br>")))
        slot = max(width + depth * _COS + 28, label * _CHAR + 12)
        sized.append((name, shape, width, height, depth, slot))
    total = sum(s[-1] for s in sized)
    n_rows = math.ceil(total / row_width)
    per_row = total / n_rows  # even rows rather than a full row and a stub
    blocks: list[_Block] = []
    x, row = 0.0, 0
    for name, shape, width, height, depth, slot in sized:
        if x > 0 and x + slot / 2 > per_row and row < n_rows - 1:
            x, row = 0.0, row + 1
        offset = (slot - width - depth * _COS) / 2  # centre the block in its slot
        blocks.append(_Block(name, shape, x + offset, width, height, depth, row))
        x += slot
    return blocks


def _stack_rows(blocks: list[_Block]) -> list[_Block]:
    """Vertical placement: each row as tall as its own blocks and labels, rows top to bottom."""
    placed: list[_Block] = []
    yc = 0.0
    for row in range(blocks[-1].row + 1):
        members = [b for b in blocks if b.row == row]
        top = max(b.top for b in members)
        bottom = max(b.height / 2 for b in members)
        if row:
            yc -= top + 6 + _LINE * max(_lines(b.name) for b in members) + 24
        names_y, shapes_y = yc + top + 6, yc - bottom - 8
        placed += [replace(b, yc=yc, names_y=names_y, shapes_y=shapes_y) for b in members]
        yc = shapes_y - _LINE
    return placed


def _lines(name: str) -> int:
    """Number of lines a block name takes once wrapped."""
    return _wrap_name(name).count("<br>") + 1


def _faces(blocks: Sequence[_Block], face: str) -> tuple[list[float | None], list[float | None]]:
    """Closed polygons of one face of every block, separated by None for one fill trace."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for b in blocks:
        left, right = b.x0, b.x0 + b.width
        bottom, top = b.yc - b.height / 2, b.yc + b.height / 2
        d = b.depth * _COS
        if face == "front":
            px, py = [left, right, right, left, left], [bottom, bottom, top, top, bottom]
        elif face == "top":
            px = [left, right, right + d, left + d, left]
            py = [top, top, top + d, top + d, top]
        else:
            px = [right, right + d, right + d, right, right]
            py = [bottom, bottom + d, top + d, top, bottom]
        xs += [*px, None]
        ys += [*py, None]
    return xs, ys


def _flow_arrows(blocks: Sequence[_Block]) -> list[go.Scatter]:
    """Short arrows between consecutive blocks of the same row."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    sizes: list[float] = []
    for a, b in itertools.pairwise(blocks):
        if a.row != b.row:
            continue
        xs += [a.x0 + a.width + a.depth * _COS + 3, b.x0 - 4, None]
        ys += [a.yc, b.yc, None]
        sizes += [0, 8, 0]
    if not xs:
        return []
    return [
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            line={"color": "#9ca3af", "width": 1.5},
            marker={"symbol": "arrow", "angleref": "previous", "size": sizes, "color": "#9ca3af"},
            hoverinfo="skip",
            showlegend=False,
            name="flow",
        )
    ]


def _shape_label(shape: tuple[int, ...]) -> str:
    """ "64×27×27" for maps, "4096" for vectors."""
    return "×".join(str(s) for s in shape)


def _wrap_name(name: str, width: int = 12) -> str:
    """Break long dotted module names (layer4.1.conv2) onto lines of about `width` chars."""
    lines: list[str] = []
    for part in name.split("."):
        if lines and len(lines[-1]) + 1 + len(part) <= width:
            lines[-1] += "." + part
        else:
            lines.append(part if not lines else "." + part)
    return "<br>".join(lines)


def _block_hover(b: _Block) -> str:
    """Hover text of a block: name, shape in words, number of values."""
    if b.flat:
        what = f"vector of {b.shape[0]:,} features"
    else:
        C, H, W = b.shape
        what = f"{C:,} channel{'s' if C != 1 else ''} of {H}×{W}"
    total = math.prod(b.shape)
    return f"<b>{b.name}</b><br>{_shape_label(b.shape)}: {what}<br>{total:,} values"


# ---------------------------------------------------------------------------------------------
# Export


def figure_html(fig: go.Figure) -> str:
    """A full self-contained HTML page of the figure (plotly.js inlined) for download."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _numpy(x: Any) -> np.ndarray:
    """Arrays and tensors alike as a NumPy array on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _hover_records(
    index: np.ndarray, ys: np.ndarray, xs: np.ndarray, values: np.ndarray, layout: TileLayout
) -> np.ndarray:
    """Per-pixel [map index, y, x, value(s)] tiled like the mosaic: a heatmap's customdata."""
    shape = values.shape[:3]  # (N, H, W); values may carry a trailing axis (RGB)
    fields = [
        np.broadcast_to(index[:, None, None], shape),
        np.broadcast_to(ys, shape),
        np.broadcast_to(xs, shape),
    ]
    vals = values.reshape(*shape, -1)
    record = np.concatenate([np.stack(fields, axis=-1), vals], axis=-1).astype(np.float32)
    return tile(record, cols=layout.cols, pad=layout.pad)[0]


def _dead_outlines(layout: TileLayout, tiles: np.ndarray) -> go.Scatter:
    """One line trace outlining the given tiles of a mosaic (red boxes), None-separated."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for k in tiles:
        y0, x0 = layout.origin(int(k))
        left, right = x0 - 0.5, x0 + layout.tile_w - 0.5
        top, bottom = y0 - 0.5, y0 + layout.tile_h - 0.5
        xs += [left, right, right, left, left, None]
        ys += [top, top, bottom, bottom, top, None]
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines",
        line={"color": DEAD, "width": 2},
        hoverinfo="skip",
        name="dead channel",
    )


def _hover_layer(z: np.ndarray, custom: np.ndarray, template: str) -> go.Heatmap:
    """An invisible heatmap over an image trace: hover with real values, silent on gaps."""
    return go.Heatmap(
        z=z,
        customdata=custom,
        opacity=0,
        showscale=False,
        hoverongaps=False,
        hovertemplate=template,
        colorscale=[[0, "white"], [1, "white"]],
    )


def _rgb(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 for display and the values behind it ((H, W) for grayscale)."""
    a = _numpy(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)  # (C, H, W) tensors as the model sees them
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ShapeError(f"image must be (H, W), (H, W, 3) or (3, H, W), got {a.shape}")
    if a.dtype == np.uint8:
        pixels = a
    else:
        f = a.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        if lo < 0.0 or hi > 1.0:  # normalized inputs: stretch to the visible range
            f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
        pixels = np.rint(f * 255).astype(np.uint8)
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(rgb), a


def _text_px(text: str, font_px: float) -> float:
    """An upper estimate of `text`'s width: Source Sans advances, plus a margin for the
    sans-serif fonts a browser may draw instead."""
    return 1.15 * tables.text_width(text, font_px)


def wrap(text: str, width_px: float, font_px: float) -> str:
    """`text` broken at spaces into lines (<br>) no wider than `width_px` where a word allows."""
    if "<br>" in text or _text_px(text, font_px) <= width_px:
        return text
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if line and _text_px(trial, font_px) > width_px:
            lines.append(line)
            line = word
        else:
            line = trial
    return "<br>".join([*lines, line])


def fit_titles(fig: go.Figure, room: float | None = None) -> None:
    """Wrap a fixed-width figure's title and subtitle to its width (or `room` pixels, for a
    figure that usually sits in a narrow column and is shrunk to it): plotly never wraps, so a
    long title ran past the figure's edge and was cut. The lines added take room above the
    plot area (the figure grows), not from it."""
    width, title = fig.layout.width, fig.layout.title
    if not (width or room) or not title.text:
        return
    left = fig.layout.margin.l if fig.layout.margin.l is not None else 60
    room = room or width - left - 10
    text = wrap(title.text, room, title.font.size or 18)
    sub = title.subtitle.text or ""
    sub_wrapped = wrap(sub, room, 12)
    added = 22 * (text.count("<br>") - title.text.count("<br>"))
    added += 15 * (sub_wrapped.count("<br>") - sub.count("<br>"))
    if not added:
        return
    top = fig.layout.margin.t if fig.layout.margin.t is not None else 80
    fig.update_layout(
        title_text=text, margin_t=top + added, height=(fig.layout.height or 450) + added
    )
    if sub:
        fig.update_layout(title_subtitle_text=sub_wrapped)


def _title(text: str, subtitle: str = "") -> dict[str, Any]:
    """Title with a muted subtitle line."""
    title: dict[str, Any] = {"text": text}
    if subtitle:  # the pad keeps the subtitle line clear of the plot area
        title["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": MUTED}}
        title["pad"] = {"b": 36}
    return title


def _image_layout(
    fig: go.Figure,
    height: int,
    width: int,
    title: str,
    subtitle: str,
    *,
    max_side: float = 640,
    background: str = "white",
) -> None:
    """Pixel-image axes (y down, square pixels, no ticks) and a size that fits the content."""
    cell = min(max_side / max(height, width), 40.0)
    axis = {
        "showgrid": False,
        "zeroline": False,
        "showticklabels": False,
        "ticks": "",
        "showline": False,
        "constrain": "domain",
    }
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=_title(title, subtitle),
        xaxis={**axis, "range": [-0.5, width - 0.5]},
        yaxis={**axis, "range": [height - 0.5, -0.5], "scaleanchor": "x"},
        plot_bgcolor=background,
        width=int(max(MIN_WIDTH, width * cell + 150)),
        height=int(height * cell + (110 if subtitle else 80)),
        margin={"l": 20, "r": 20, "t": 80 if subtitle else 50, "b": 20},
    )
    fit_titles(fig)
