"""The dataflow graph drawn in layers: the main path down the middle, branches beside it, and
each merge (a residual add, a concatenation) where its inputs join.

Layout: a node's row is the length of the longest path from the input to it, so a block sits
below everything it reads. The longest path from the input to the output is the main path, in
the middle column; every other node takes the nearest free column beside the branch it comes
from. An edge between neighbouring rows is a straight line or an elbow; a longer edge (a skip
connection) runs down a free column beside the blocks it passes and enters its target from the
side, so it never crosses a block.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from dashboard.figures.mosaic import png_source
from dashboard.figures.style import INK, LENS_TEMPLATE, MUTED, arrow_lines, title_layout

if TYPE_CHECKING:  # drawing needs no torch: the graph is a plain record
    from dashboard.analysis.graph import BlockMaps, GraphNode, ModelGraph

BLOCK_W = 200.0  # pixels: a block's width, room for about 26 characters of its label
BLOCK_H = 50.0
COLUMN = 260.0  # from one column's centre to the next: a 60 px gutter between blocks
ROW = 74.0  # from one row's centre to the next
LANE_GAP = 14.0  # between two skip edges sharing a gutter
_CHARS = {10: 33, 11: 30, 12: 25}  # characters that fit BLOCK_W at a font size
MAP_SIDE = BLOCK_H  # a feature map's thumbnail beside its block, as tall as the block
MAP_GAP = 4.0

# (fill, outline) by what a block does
_COLOURS = {
    "convolution": ("#dbeafe", "#2563eb"),
    "pooling": ("#dcfce7", "#16a34a"),
    "linear": ("#ffedd5", "#ea580c"),
    "merge": ("#ede9fe", "#7c3aed"),
    "folded block": ("#ccfbf1", "#0d9488"),
    "other": ("#f3f4f6", "#6b7280"),
}
_MERGES = {"add", "cat", "mul", "matmul"}


@dataclass(frozen=True)
class _Placed:
    node: GraphNode
    row: int
    column: int

    @property
    def x(self) -> float:
        return self.column * COLUMN

    @property
    def y(self) -> float:
        return -self.row * ROW


def _category(node: GraphNode) -> str:
    if node.folded:
        return "folded block"
    if "Conv" in node.kind:
        return "convolution"
    if "Pool" in node.kind or node.kind == "pool":
        return "pooling"
    if node.kind in ("Linear", "Bilinear", "LazyLinear"):
        return "linear"
    if node.kind in _MERGES:
        return "merge"
    return "other"


def layout(graph: ModelGraph) -> dict[str, _Placed]:
    """Row and column of every node (column 0 the main path, negative to its left)."""
    by_id = {n.id: n for n in graph.nodes}
    row: dict[str, int] = {}
    for node in graph.nodes:  # topological order: inputs already have their rows
        row[node.id] = 1 + max((row[i] for i in node.inputs), default=-1)
    read = {i for n in graph.nodes for i in n.inputs}
    sinks = [n for n in graph.nodes if n.id not in read] or [graph.nodes[-1]]
    tip = max(sinks, key=lambda n: row[n.id])
    main = {tip.id}
    while by_id[tip.id].inputs:  # back along the longest way in
        tip = by_id[max(tip.inputs, key=lambda i: row[i])]
        main.add(tip.id)
    column: dict[str, int] = {i: 0 for i in main}
    taken = {(row[i], 0) for i in main}
    for node in graph.nodes:
        if node.id in column:
            continue
        beside = [column[i] for i in node.inputs if column.get(i, 0) != 0]
        for candidate in itertools.chain(beside, _outward()):
            if (row[node.id], candidate) not in taken:
                break
        column[node.id] = candidate
        taken.add((row[node.id], candidate))
    return {n.id: _Placed(n, row[n.id], column[n.id]) for n in graph.nodes}


def _outward() -> Iterator[int]:
    """1, -1, 2, -2, …: the columns beside the main path, right first."""
    k = 1
    while True:
        yield k
        yield -k
        k += 1


def edge_paths(placed: dict[str, _Placed]) -> list[list[tuple[float, float]]]:
    """One polyline per edge. Between neighbouring rows: down, across the gap between the rows,
    down into the reader. A longer edge runs down a gutter between columns (where no block
    stands) and enters its reader from the side; edges sharing a gutter over touching rows
    take different slots in it."""
    taken = {(p.row, p.column) for p in placed.values()}
    lanes: dict[float, list[tuple[int, int, int]]] = {}  # gutter → (from row, to row, slot)
    paths = []
    for b in placed.values():
        for source_id in b.node.inputs:
            a = placed[source_id]
            if a.column == b.column and all(
                (r, a.column) not in taken for r in range(a.row + 1, b.row)
            ):
                paths.append([(a.x, a.y - BLOCK_H / 2), (b.x, b.y + BLOCK_H / 2)])
            elif b.row - a.row == 1:
                gap = a.y - ROW / 2
                paths.append(
                    [(a.x, a.y - BLOCK_H / 2), (a.x, gap), (b.x, gap), (b.x, b.y + BLOCK_H / 2)]
                )
            else:
                paths.append(_skip_path(a, b, lanes))
    return paths


def _skip_path(a: _Placed, b: _Placed, lanes: dict) -> list[tuple[float, float]]:
    """A long edge: out of `a`'s side (or below it, when the gutter is not beside it), down a
    gutter beside `b`, into `b`'s side."""
    gutter = b.column + 0.5 if a.column >= b.column else b.column - 0.5
    used = [s for lo, hi, s in lanes.get(gutter, []) if lo <= b.row and a.row <= hi]
    slot = next(s for s in _slots() if s not in used)
    lanes.setdefault(gutter, []).append((a.row, b.row, slot))
    x = gutter * COLUMN + slot * LANE_GAP
    toward_b = 1 if gutter > b.column else -1
    if abs(gutter - a.column) == 0.5:  # the gutter is beside a: straight out of its side
        start = [
            (a.x + (BLOCK_W / 2 if gutter > a.column else -BLOCK_W / 2), a.y - 8),
            (x, a.y - 8),
        ]
    else:  # across the gap below a's row, where no block stands
        gap = a.y - ROW / 2
        start = [(a.x, a.y - BLOCK_H / 2), (a.x, gap), (x, gap)]
    return [*start, (x, b.y + 8), (b.x + toward_b * BLOCK_W / 2, b.y + 8)]


def _slots() -> Iterator[int]:
    yield 0
    yield from _outward()


def _fit(text: str, size: int, *, keep_end: bool = False) -> str:
    """Text cut with an ellipsis to fit a block at this font size (a name keeps its end)."""
    room = _CHARS[size]
    if len(text) <= room:
        return text
    return "…" + text[-(room - 1) :] if keep_end else text[: room - 1] + "…"


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "—" if shape is None else "×".join(str(s) for s in shape)


def _hover(node: GraphNode, graph: ModelGraph, by_id: dict[str, GraphNode]) -> str:
    lines = [f"<b>{node.name}</b> — {node.kind}", node.label]
    if node.steps:
        lines[-1] += " → " + " → ".join(node.steps)
    reads = [by_id[i] for i in node.inputs]
    if reads:
        shapes = ", ".join(f"{_shape_text(r.shape)} from {r.name}" for r in reads)
        lines.append(f"reads {shapes}")
    lines.append(f"output {_shape_text(node.shape)}")
    if node.params or node.mult_adds:
        inside = " (steps inside included)" if node.steps or node.folded else ""
        lines.append(f"parameters {node.params:,} · multiply-adds {node.mult_adds:,}{inside}")
    if node.detail:
        lines += node.detail.splitlines()
    if node.folded:
        lines.append(f"{len(node.members)} traced steps folded into one block")
    if node.id == graph.broken:
        lines.append("<b>the input breaks the model here</b>")
    return "<br>".join(lines)


def dataflow_graph(
    graph: ModelGraph,
    *,
    title: str = "",
    subtitle: str = "",
    maps: Mapping[str, BlockMaps] | None = None,
) -> go.Figure:
    """The graph as labelled blocks in rows and columns, arrows along its edges; hover a block
    for its input and output shapes, parameters and multiply-adds. With `maps` (by node id),
    each main-path block's maps for one image are drawn in a strip at the right, in its row."""
    placed = layout(graph)
    by_id = {n.id: n for n in graph.nodes}
    columns = [p.column for p in placed.values()]
    paths = edge_paths(placed)
    lane_x = [x for path in paths for x, _ in path]
    traces: list[go.Scatter] = []
    for category, (fill, outline) in _COLOURS.items():
        group = [p for p in placed.values() if _category(p.node) == category]
        if not group:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        for p in group:
            left, right = p.x - BLOCK_W / 2, p.x + BLOCK_W / 2
            bottom, top = p.y - BLOCK_H / 2, p.y + BLOCK_H / 2
            xs += [left, right, right, left, left, None]
            ys += [bottom, bottom, top, top, bottom, None]
        traces.append(
            go.Scatter(
                x=xs,
                y=ys,
                fill="toself",
                fillcolor=fill,
                mode="lines",
                line={"color": outline, "width": 1.2},
                hoverinfo="skip",
                name=category,
            )
        )
    broken = [placed[graph.broken]] if graph.broken in placed else []
    if broken:
        p = broken[0]
        left, right = p.x - BLOCK_W / 2 - 3, p.x + BLOCK_W / 2 + 3
        bottom, top = p.y - BLOCK_H / 2 - 3, p.y + BLOCK_H / 2 + 3
        traces.append(
            go.Scatter(
                x=[left, right, right, left, left],
                y=[bottom, bottom, top, top, bottom],
                mode="lines",
                line={"color": "#dc2626", "width": 3},
                hoverinfo="skip",
                name="breaks here",
            )
        )
    xs, ys, sizes = [], [], []
    for path in paths:
        xs += [x for x, _ in path] + [None]
        ys += [y for _, y in path] + [None]
        sizes += [0] * (len(path) - 1) + [9, 0]
    traces.append(arrow_lines(xs, ys, sizes, colour="#4b5563", width=1.4, name="data"))
    nodes = list(placed.values())
    for offset, size, colour, text in (
        (15, 10, MUTED, [_fit(p.node.name, 10, keep_end=True) for p in nodes]),
        (0, 12, INK, [f"<b>{_fit(p.node.label, 12)}</b>" for p in nodes]),
        (-15, 11, INK, [_fit(_sub_line(p.node), 11) for p in nodes]),
    ):
        traces.append(
            go.Scatter(
                x=[p.x for p in nodes],
                y=[p.y + offset for p in nodes],
                mode="text",
                text=text,
                textposition="middle center",
                textfont={"size": size, "color": colour},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    hover = [_hover(p.node, graph, by_id) for p in nodes]
    traces.append(
        go.Scatter(
            x=[p.x + dx for p in nodes for dx in (-BLOCK_W / 3, 0, BLOCK_W / 3)],
            y=[p.y for p in nodes for _ in range(3)],
            mode="markers",
            marker={"size": BLOCK_H, "symbol": "square", "color": "rgba(0,0,0,0)"},
            hovertext=[h for h in hover for _ in range(3)],
            customdata=[[p.node.name] for p in nodes for _ in range(3)],  # what a click opens
            hovertemplate="%{hovertext}<extra></extra>",
            showlegend=False,
            name="blocks",
        )
    )
    left = min(min(columns) * COLUMN - BLOCK_W / 2, min(lane_x, default=0)) - 20
    right = max(max(columns) * COLUMN + BLOCK_W / 2, max(lane_x, default=0)) + 20
    images: list[dict] = []
    if maps:
        targets, images, right = _map_strip(placed, maps, right + 16)
        traces.append(targets)
    right = max(right, left + 560)  # room for the title and legend
    rows = max(p.row for p in nodes) + 1
    top, bottom = BLOCK_H / 2 + 10, -(rows - 1) * ROW - BLOCK_H / 2 - 10
    hidden = {"visible": False, "fixedrange": True}
    fig = go.Figure(traces)
    for image in images:
        fig.add_layout_image(image)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title={
            **title_layout(title or "Dataflow graph", subtitle),
            "y": 1,
            "yref": "container",
            "yanchor": "top",
        },
        xaxis={**hidden, "range": [left, right]},
        yaxis={**hidden, "range": [bottom, top], "scaleanchor": "x"},
        width=int(right - left + 40),
        height=int(top - bottom + 128),
        margin={"l": 20, "r": 20, "t": 108, "b": 20},
        legend={"orientation": "h", "x": 0, "y": 1, "yanchor": "bottom", "font": {"size": 11}},
        hovermode="closest",
        hoverdistance=int(BLOCK_W / 2),
    )
    return fig


def _sub_line(node: GraphNode) -> str:
    """Under the label: the steps drawn inside the block (or how many a folded block holds),
    then its output shape."""
    shape = _shape_text(node.shape)
    if node.folded:
        return f"{len(node.members)} steps → {shape}"
    return f"{' · '.join(node.steps)} → {shape}" if node.steps else shape


# --- feature maps beside the blocks --------------------------------------------------------------

_VIRIDIS = np.array(
    [
        [int(float(c)) for c in colour[4:-1].split(",")]
        for colour in sample_colorscale("Viridis", [i / 255 for i in range(256)])
    ],
    dtype=np.uint8,
)


def _coloured(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """(H, W) values → (H, W, 3) uint8 on Viridis between `low` and `high`."""
    span = high - low if high > low else 1.0
    index = np.clip((np.asarray(values, dtype=np.float64) - low) / span * 255, 0, 255)
    return _VIRIDIS[index.astype(np.uint8)]


def _map_strip(
    placed: dict[str, _Placed], maps: Mapping[str, BlockMaps], x0: float
) -> tuple[go.Scatter, list[dict], float]:
    """The main path's maps from `x0` rightwards, each block's row beside it on one colour scale
    of its own: (hover targets over the thumbnails, the thumbnails as layout images, the
    strip's right edge)."""
    xs, ys, texts, images = [], [], [], []
    right = x0
    for p in (p for p in placed.values() if p.column == 0 and p.node.id in maps):
        block = maps[p.node.id]
        low, high = float(np.min(block.maps)), float(np.max(block.maps))
        for i, (channel, values) in enumerate(zip(block.channels, block.maps, strict=True)):
            left = x0 + i * (MAP_SIDE + MAP_GAP)
            right = max(right, left + MAP_SIDE)
            xs.append(left + MAP_SIDE / 2)
            ys.append(p.y)
            texts.append(
                f"{block.layer} · channel {channel}<br>{values.shape[0]}×{values.shape[1]} · "
                f"mean {float(values.mean()):.3g}<br>colours {low:.3g} … {high:.3g} "
                "(this block's channels)"
            )
            upscale = max(1, math.ceil(MAP_SIDE / max(values.shape)))
            images.append(
                {
                    "source": png_source(_coloured(values, low, high), upscale),
                    "xref": "x", "yref": "y", "x": left, "y": p.y + MAP_SIDE / 2,
                    "sizex": MAP_SIDE, "sizey": MAP_SIDE, "xanchor": "left", "yanchor": "top",
                    "sizing": "stretch", "layer": "above",
                }
            )  # fmt: skip
    targets = go.Scatter(
        x=xs,
        y=ys,
        mode="markers",
        marker={"size": MAP_SIDE, "symbol": "square", "color": "rgba(0,0,0,0)"},
        hovertext=texts,
        hovertemplate="%{hovertext}<extra></extra>",
        showlegend=False,
        name="feature maps",
    )
    return targets, images, right + 8
