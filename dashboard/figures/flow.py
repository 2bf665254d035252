"""The shape-flow diagram: one block per layer, sized by its output, with arrows between."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import plotly.graph_objects as go

from dashboard.base.errors import ShapeError
from dashboard.figures.style import INK, LENS_TEMPLATE, MUTED, arrow_lines, title_layout


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
        title=title_layout(
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
    return [arrow_lines(xs, ys, sizes, colour="#9ca3af", width=1.5, name="flow")]


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
