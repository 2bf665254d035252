"""Figures of what a layer computes for one image: the channel grid and the stack of every layer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dashboard.base.errors import ShapeError
from dashboard.figures.style import (
    DEAD,
    INK,
    LENS_TEMPLATE,
    MAX_MOSAIC_PIXELS,
    SCALE_MODES,
    as_numpy,
    image_layout,
    title_layout,
)
from dashboard.figures.tiles import dead_outlines, hover_records, scale_maps, tile


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
    a = as_numpy(maps).astype(np.float32)
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
    custom = hover_records(channels, ys, xs, values, layout)  # channel, y, x, value
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
        traces.append(dead_outlines(layout, dead_shown))
    fig = go.Figure(traces)
    parts = [f"{n} of {len(a)} channels" if n < len(a) else f"{n} channels", f"{H}×{W} each"]
    parts.append({"per map": "each channel scaled to its own range"}.get(scale, f"{scale} scale"))
    if stride > 1:
        parts.append(f"shown at 1/{stride} resolution")
    if dead_shown.size:
        parts.append(f"{dead_shown.size} dead (outlined red)")
    subtitle = " · ".join(parts)
    image_layout(
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
        title=title_layout(title or "Activations", " · ".join(parts)),
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
        a = as_numpy(maps).astype(np.float32)
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
                hover_records(np.arange(C), ys, xs, values, layout),
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
        title=title_layout(title or "Every layer", f"{len(layers)} layers · {scale} scale"),
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
