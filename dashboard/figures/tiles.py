"""Many small maps (filters, activation channels) tiled into ONE image and drawn as one heatmap
trace, so a 512-channel layer costs one trace instead of 512 subplots; hover text reads the real
values back through the tile layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from dashboard.base.errors import ShapeError
from dashboard.figures.style import DEAD, SCALE_MODES, as_numpy


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
    a = as_numpy(maps)
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
    a = as_numpy(maps).astype(np.float64)
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


def hover_records(
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


def dead_outlines(layout: TileLayout, tiles: np.ndarray) -> go.Scatter:
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


def hover_layer(z: np.ndarray, custom: np.ndarray, template: str) -> go.Heatmap:
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
