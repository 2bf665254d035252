"""Labelled picture grids for plotly: many small RGB pictures as ONE image, hover per picture.

The attribution overlays, the sanity cascade (methods × layers) and the top-losses gallery are
grids of small pictures. Drawn as one PNG (`go.Image(source=…)`, upscaled by whole pixels so
the browser shows crisp squares) they cost a few kilobytes instead of a trace, or a per-pixel
hover array, per picture. Rows and columns are named by the axes' tick labels (columns on
top, slanted when the names are long), a line of text can sit under each picture, and one
invisible marker per picture carries its hover text and `customdata` (what a click selects,
e.g. the image index to open on Activations). Grids of few pixels also get a per-pixel hover
layer with the real values.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from dashboard.base.errors import ShapeError
from dashboard.figures.style import INK, LENS_TEMPLATE, title_layout
from dashboard.figures.tiles import hover_layer

PIXEL_HOVER_LIMIT = 60_000  # per-pixel hover values for grids up to this many pixels
TEXT_PX = 16  # screen pixels a line of text under a picture takes
MAX_CELL = 12.0  # screen pixels per image pixel at most (a 28-px digit: 336 px)


@dataclass(frozen=True)
class GridGeometry:
    """Where picture (r, c) of a grid sits, in image pixels (y down)."""

    rows: int
    cols: int
    tile_h: int
    tile_w: int
    gap: int  # between columns
    band: int  # under each row: the text line, or the gap
    cell: float  # screen pixels per image pixel

    @property
    def height(self) -> int:
        return self.rows * (self.tile_h + self.band)

    @property
    def width(self) -> int:
        return self.cols * (self.tile_w + self.gap) - self.gap

    def origin(self, r: int, c: int) -> tuple[int, int]:
        return r * (self.tile_h + self.band), c * (self.tile_w + self.gap)


def geometry(
    rows: int, cols: int, tile_h: int, tile_w: int, *, text: bool, max_side: float
) -> GridGeometry:
    """Screen scale first (the whole grid within `max_side`), then a text band that is
    TEXT_PX on screen whatever the scale."""
    gap = max(1, round(0.08 * max(tile_h, tile_w)))
    band = gap
    cell = MAX_CELL
    for _ in range(3):  # the band's size in pixels depends on the scale and back
        total_h = rows * (tile_h + band)
        total_w = cols * (tile_w + gap) - gap
        cell = min(max_side / max(total_h, total_w), MAX_CELL)
        band = max(gap, math.ceil(TEXT_PX / cell)) if text else gap
    return GridGeometry(rows, cols, tile_h, tile_w, gap, band, cell)


def png_source(rgb: np.ndarray, upscale: int) -> str:
    """A data: URI of the (H, W, 3) uint8 picture, each pixel an upscale × upscale square."""
    from PIL import Image

    big = np.repeat(np.repeat(rgb, upscale, axis=0), upscale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(big), "RGB").save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grid_figure(
    pictures: np.ndarray,
    *,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    texts: np.ndarray | None = None,
    hover: np.ndarray | None = None,
    customdata: np.ndarray | None = None,
    values: np.ndarray | None = None,
    value_name: str = "value",
    title: str = "",
    subtitle: str = "",
    max_side: float = 900,
) -> go.Figure:
    """(R, C, H, W, 3) uint8 pictures as one image with named rows and columns.

    `texts` (R, C) a line under each picture; `hover` (R, C) its hover text; `customdata`
    (R, C, k) what selecting it returns; `values` (R, C, H, W) real numbers for a per-pixel
    hover when the grid is small (PIXEL_HOVER_LIMIT)."""
    if pictures.ndim != 5 or pictures.shape[-1] != 3:
        raise ShapeError(f"pictures must be (rows, cols, H, W, 3), got {pictures.shape}")
    R, C, H, W = pictures.shape[:4]
    geo = geometry(R, C, H, W, text=texts is not None, max_side=max_side)
    canvas = np.full((geo.height, geo.width, 3), 255, dtype=np.uint8)  # white between
    for r in range(R):
        for c in range(C):
            y, x = geo.origin(r, c)
            canvas[y : y + H, x : x + W] = pictures[r, c]
    upscale = max(1, min(8, math.ceil(geo.cell)))
    centres_x = np.array([geo.origin(0, c)[1] + (W - 1) / 2 for c in range(C)])
    centres_y = np.array([geo.origin(r, 0)[0] + (H - 1) / 2 for r in range(R)])
    traces: list[go.BaseTraceType] = [
        go.Image(
            source=png_source(canvas, upscale),
            x0=-0.5 + 0.5 / upscale,
            y0=-0.5 + 0.5 / upscale,
            dx=1 / upscale,
            dy=1 / upscale,
            hoverinfo="skip",
        )
    ]
    if values is not None and geo.height * geo.width <= PIXEL_HOVER_LIMIT:
        traces.append(_pixel_hover(values, geo, value_name, row_labels, col_labels))
    grid_y, grid_x = np.meshgrid(centres_y, centres_x, indexing="ij")
    traces.append(
        go.Scatter(
            x=grid_x.ravel(),
            y=grid_y.ravel(),
            mode="markers",
            marker={"size": max(8, geo.cell * min(H, W) * 0.9), "opacity": 0, "symbol": "square"},
            hovertext=None if hover is None else [str(h) for h in np.ravel(hover)],
            hoverinfo="text" if hover is not None else "skip",
            customdata=None if customdata is None else customdata.reshape(R * C, -1),
            name="pictures",
            showlegend=False,
        )
    )
    if texts is not None:
        traces.append(
            go.Scatter(
                x=grid_x.ravel(),
                y=(grid_y + (H - 1) / 2 + 0.5 + 3 / geo.cell).ravel(),  # 3 px below
                mode="text",
                text=[str(t) for t in np.ravel(texts)],
                textposition="bottom center",
                textfont={"size": 11, "color": INK},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig = go.Figure(traces)
    _grid_layout(fig, geo, centres_x, centres_y, col_labels, row_labels, title, subtitle)
    return fig


def _pixel_hover(
    values: np.ndarray,
    geo: GridGeometry,
    value_name: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
) -> go.Heatmap:
    """An invisible heatmap over the grid: each pixel's real value, its picture's names."""
    R, C, H, W = values.shape
    z = np.full((geo.height, geo.width), np.nan, dtype=np.float32)
    names = np.full((geo.height, geo.width), "", dtype=object)
    for r in range(R):
        for c in range(C):
            y, x = geo.origin(r, c)
            z[y : y + H, x : x + W] = values[r, c]
            label = " · ".join(
                [*(row_labels[r : r + 1] if row_labels else []), *(col_labels[c : c + 1] or [])]
            )
            names[y : y + H, x : x + W] = label
    ys, xs = np.indices((geo.height, geo.width))
    local_y = ys % (geo.tile_h + geo.band)
    local_x = xs % (geo.tile_w + geo.gap)
    custom = np.stack([names, local_y, local_x], axis=-1)
    return hover_layer(
        z,
        custom,
        "%{customdata[0]}<br>row %{customdata[1]}, col %{customdata[2]}<br>"
        + value_name
        + " %{z:.4~g}<extra></extra>",
    )


def _grid_layout(
    fig: go.Figure,
    geo: GridGeometry,
    centres_x: np.ndarray,
    centres_y: np.ndarray,
    col_labels: Sequence[str],
    row_labels: Sequence[str],
    title: str,
    subtitle: str,
) -> None:
    longest = max((len(s) for s in col_labels), default=0)
    column_px = geo.cell * (geo.tile_w + geo.gap)
    slanted = longest * 7 > column_px  # names wider than their column are slanted
    axis = {"showgrid": False, "zeroline": False, "showline": False, "ticks": ""}
    fig.update_layout(
        template=LENS_TEMPLATE,
        xaxis={
            **axis,
            "range": [-0.5, geo.width - 0.5],
            "side": "top",
            "tickvals": list(centres_x) if col_labels else [],
            "ticktext": list(col_labels),
            "tickangle": -45 if slanted else 0,
            "tickfont": {"size": 12, "color": INK},
            "constrain": "domain",
        },
        yaxis={
            **axis,
            "range": [geo.height - 0.5, -0.5],
            "scaleanchor": "x",
            "tickvals": list(centres_y) if row_labels else [],
            "ticktext": list(row_labels),
            "tickfont": {"size": 12, "color": INK},
            "constrain": "domain",
        },
        plot_bgcolor="white",
        hovermode="closest",
        showlegend=False,
    )
    label_w = 7.5 * max((len(s) for s in row_labels), default=0)
    top = 7.0 * longest * (0.75 if slanted else 0) + (24 if col_labels else 0)
    lines = subtitle.split("<br>") if subtitle else []  # a subtitle may break into lines
    header = 95 + 16 * (len(lines) - 1) if subtitle else 60
    subtitle_w = 6.5 * max(map(len, lines), default=0) + 60  # its longest line
    heading = title_layout(title, subtitle)
    heading["pad"] = {"b": int(top + (36 if subtitle else 8))}  # clear of the column names
    fig.update_layout(
        title=heading,
        width=int(max(420, geo.width * geo.cell + label_w + 60, subtitle_w)),
        height=int(geo.height * geo.cell + top + header + 30),
        margin={"l": 20, "r": 20, "t": int(top + header), "b": 20},
    )
