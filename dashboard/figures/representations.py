"""Figures of the Representations page: arrays in, `plotly.graph_objects.Figure` out.

The projector scatter (2-D or 3-D, coloured by true class, predicted class or correct/wrong),
PCA's explained variance, the per-layer probe chart and the CKA heatmap. Pure functions in the
look of `figures.LENS_TEMPLATE`; every point of a scatter carries its image's index in the
split as `customdata[0]`, so a page can show the image behind a hovered, clicked or selected
point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale

from dashboard.base.errors import ShapeError
from dashboard.figures.style import (
    CORRECT,
    GRID,
    INK,
    LENS_TEMPLATE,
    MUTED,
    RUN_COLOURS,
    WRONG,
    title_layout,
)

if TYPE_CHECKING:
    from dashboard.analysis.representations import ProbeReport

COLOUR_BY = {"true": "true class", "predicted": "predicted class", "correct": "correct / wrong"}
PROBE = "#2563eb"  # logistic-regression probe
KNN = "#d97706"  # k-NN
SILHOUETTE = "#7c3aed"
FOCUS = "#111827"  # rings around the clicked image (thick) and its neighbours (thin): black,
NEIGHBOUR = "#111827"  # a colour no class takes
CKA_SCALE = "Viridis"
MAX_CELL_TEXT = 24  # layers per side up to which every CKA value is written in its cell


def class_colours(count: int) -> list[str]:
    """One distinct colour per class: the app's ten for ≤ 10, Dark24 for ≤ 24, else samples of
    a perceptual rainbow (CIFAR-100's classes are then told apart by hover, not colour)."""
    if count <= len(RUN_COLOURS):
        return list(RUN_COLOURS[:count])
    if count <= len(qualitative.Dark24):
        return list(qualitative.Dark24[:count])
    return sample_colorscale("Turbo", [i / (count - 1) for i in range(count)])


def _marker_size(points: int, dims: int) -> float:
    size = 7.0 if points <= 1000 else 5.0 if points <= 5000 else 3.5
    return size * (0.6 if dims == 3 else 1.0)


def embedding_scatter(
    coords: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: Sequence[str],
    *,
    colour_by: str = "true",
    indices: np.ndarray | None = None,
    axis_titles: Sequence[str] | None = None,
    focus: int | None = None,
    neighbours: Sequence[int] = (),
    title: str = "",
    subtitle: str = "",
) -> go.Figure:
    """Points (N, 2) or (N, 3), one trace per colour so the legend hides a class with a click.

    `indices` are the images' indices in the split (default 0..N−1), carried by every point as
    customdata [split index, row, true class, predicted class]. `focus` (a row) is ringed, and
    `neighbours` (rows) get lighter rings: the clicked image and its nearest neighbours.
    """
    xyz = np.asarray(coords, dtype=np.float64)
    n = len(xyz)
    if xyz.ndim != 2 or xyz.shape[1] not in (2, 3):
        raise ShapeError(f"coordinates must be (N, 2) or (N, 3), got {xyz.shape}")
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if len(labels) != n or len(predicted) != n:
        raise ShapeError(f"{n} points but {len(labels)} labels and {len(predicted)} predictions")
    if colour_by not in COLOUR_BY:
        raise ValueError(f"unknown colouring {colour_by!r}; choose one of {', '.join(COLOUR_BY)}")
    dims = xyz.shape[1]
    split_index = np.arange(n) if indices is None else np.asarray(indices)
    names = np.array([str(c) for c in classes], dtype=object)
    custom = np.empty((n, 4), dtype=object)
    custom[:, 0], custom[:, 1] = split_index, np.arange(n)
    custom[:, 2], custom[:, 3] = names[labels], names[predicted]
    hover = (
        "image %{customdata[0]}<br>true: %{customdata[2]}<br>predicted: %{customdata[3]}"
        "<extra></extra>"
    )
    if colour_by == "correct":
        right = labels == predicted
        groups = [
            (f"correct ({right.sum():,})", right, CORRECT),
            (f"wrong ({(~right).sum():,})", ~right, WRONG),
        ]
    else:
        key = labels if colour_by == "true" else predicted
        colours = class_colours(len(names))
        groups = [(str(names[k]), key == k, colours[k]) for k in range(len(names))]
    size = _marker_size(n, dims)
    traces: list[go.BaseTraceType] = []
    for name, mask, colour in groups:
        if not mask.any():
            continue
        marker = {"size": size, "color": colour, "opacity": 0.8, "line": {"width": 0}}
        traces.append(_points(xyz[mask], custom[mask], name, marker, hover))
    rings = [(list(neighbours), NEIGHBOUR, "nearest neighbours", 2.2, 1.5)]
    if focus is not None:
        rings.append(([focus], FOCUS, "clicked image", 3.0, 3.0))
    for rows, colour, name, grow, width in rings:
        if rows:
            marker = {
                "size": size * grow,
                "color": "rgba(0,0,0,0)",
                "line": {"width": width, "color": colour},
            }
            traces.append(_points(xyz[rows], custom[rows], name, marker, hover))
    fig = go.Figure(traces)
    axes = list(axis_titles or [f"dimension {i + 1}" for i in range(dims)])
    what = COLOUR_BY[colour_by]
    sub = subtitle or f"{n:,} images, coloured by {what}"
    layout = {
        "template": LENS_TEMPLATE,
        "title": title_layout(title or "Projection", sub),
        "legend": {"title": {"text": what}, "itemsizing": "constant"},
        "hovermode": "closest",
        "uirevision": "projection",  # zoom and camera survive a rerun that keeps the figure
        "width": 820,
        "height": 640,
    }
    if dims == 2:
        fig.update_layout(
            **layout,
            xaxis={"title": axes[0], "zeroline": False},
            yaxis={"title": axes[1], "zeroline": False, "scaleanchor": "x"},
            # Zoom by default: Streamlit turns clicks into selections only while the drag tool
            # is zoom or pan (under box or lasso a click selects nothing), so a click picks an
            # image until the reader takes the toolbar's box or lasso tool.
            dragmode="zoom",
            clickmode="event+select",
        )
    else:
        scene_axis = {"backgroundcolor": "white", "gridcolor": GRID, "zeroline": False}
        fig.update_layout(
            **layout,
            scene={
                "xaxis": {**scene_axis, "title": axes[0]},
                "yaxis": {**scene_axis, "title": axes[1]},
                "zaxis": {**scene_axis, "title": axes[2]},
                "aspectmode": "data",
                "camera": {"eye": {"x": 1.6, "y": 1.6, "z": 1.1}},  # the whole cloud in view
            },
        )
    return fig


def _points(
    xyz: np.ndarray, custom: np.ndarray, name: str, marker: dict, hover: str
) -> go.BaseTraceType:
    """WebGL points in 2-D (10,000 stay smooth), Scatter3d in 3-D."""
    common = {
        "mode": "markers",
        "name": name,
        "marker": marker,
        "customdata": custom,
        "hovertemplate": hover,
    }
    if xyz.shape[1] == 2:
        return go.Scattergl(x=xyz[:, 0], y=xyz[:, 1], **common)
    return go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], **common)


def pca_axis_titles(explained: np.ndarray, dims: int) -> list[str]:
    """ "PC1 (23.4 % of variance)", … for a PCA scatter's axes."""
    return [f"PC{i + 1} ({100 * explained[i]:.1f} % of variance)" for i in range(dims)]


def explained_variance_bars(explained: np.ndarray, *, title: str = "") -> go.Figure:
    """Share of the variance along each principal component (bars) and the running total."""
    share = 100 * np.asarray(explained, dtype=np.float64)
    if share.ndim != 1 or not len(share):
        raise ShapeError(f"explained variance must be a non-empty vector, got {share.shape}")
    components = np.arange(1, len(share) + 1)
    total = np.cumsum(share)
    fig = go.Figure(
        [
            go.Bar(
                x=components,
                y=share,
                name="this component",
                marker={"color": PROBE},
                hovertemplate="PC%{x}: %{y:.2f} % of the variance<extra></extra>",
            ),
            go.Scatter(
                x=components,
                y=total,
                name="running total",
                mode="lines+markers",
                line={"color": INK, "width": 2},
                hovertemplate="PC1–PC%{x}: %{y:.2f} %<extra></extra>",
            ),
        ]
    )
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(
            title or "Explained variance",
            f"the first {len(share)} components hold {total[-1]:.1f} % of the variance",
        ),
        xaxis={
            "title": "principal component",
            "dtick": 1 if len(share) <= 20 else None,
            "range": [0.4, len(share) + 0.6],
        },
        yaxis={"title": "% of the variance", "range": [0, 100 * 1.02], "ticksuffix": " %"},
        legend={"orientation": "h", "y": -0.22},
        width=640,
        height=400,
    )
    return fig


def probe_chart(
    layers: Sequence[str],
    probe_accuracy: Sequence[float],
    knn_accuracy: Sequence[float],
    silhouette: Sequence[float | None],
    model_accuracy: float,
    *,
    features: Sequence[int] | None = None,
    title: str = "",
    subtitle: str = "",
) -> go.Figure:
    """How separable are the classes at each depth: probe and k-NN accuracy (left axis, %) and
    the silhouette of the classes (right axis, −1..1) per layer in forward order, with the
    model's own accuracy as a dotted reference line."""
    count = len(layers)
    if not (len(probe_accuracy) == len(knn_accuracy) == len(silhouette) == count):
        raise ShapeError("one probe accuracy, k-NN accuracy and silhouette per layer are needed")
    x = list(range(count))
    width = [f"{f:,} features" for f in features] if features is not None else [""] * count
    sil = [np.nan if s is None else s for s in silhouette]
    line = {"width": 2.5}
    traces = [
        go.Scatter(
            x=x,
            y=[100 * a for a in probe_accuracy],
            name="linear probe",
            mode="lines+markers",
            line={**line, "color": PROBE},
            marker={"size": 8},
            customdata=np.stack([list(layers), width], axis=1),
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>linear probe: %{y:.2f} %"
            "<extra></extra>",
        ),
        go.Scatter(
            x=x,
            y=[100 * a for a in knn_accuracy],
            name="k-NN",
            mode="lines+markers",
            line={**line, "color": KNN},
            marker={"size": 8, "symbol": "diamond"},
            customdata=list(layers),
            hovertemplate="%{customdata}<br>k-NN: %{y:.2f} %<extra></extra>",
        ),
        go.Scatter(
            x=x,
            y=sil,
            name="silhouette (right axis)",
            mode="lines+markers",
            yaxis="y2",
            line={**line, "color": SILHOUETTE, "dash": "dash"},
            marker={"size": 7, "symbol": "square"},
            customdata=list(layers),
            hovertemplate="%{customdata}<br>silhouette: %{y:.3f}<extra></extra>",
        ),
    ]
    fig = go.Figure(traces)
    fig.add_hline(
        y=100 * model_accuracy,
        line={"color": MUTED, "width": 1.5, "dash": "dot"},
        annotation={
            "text": f"the model: {100 * model_accuracy:.2f} %",
            "font": {"color": MUTED, "size": 12},
        },
        annotation_position="bottom left",
    )
    lowest = min([*probe_accuracy, *knn_accuracy, model_accuracy], default=0.0)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(
            title or "How separable are the classes at each depth",
            subtitle or "accuracy of a linear probe and of k-NN on each layer's features",
        ),
        xaxis={
            "tickmode": "array",
            "tickvals": x,
            "ticktext": list(layers),
            "tickangle": -40 if count > 6 else 0,
            "title": "layer (forward order)",
        },
        yaxis={
            "title": "test accuracy (%)",
            "ticksuffix": " %",
            "range": [max(0.0, 100 * lowest - 8), 101],
        },
        yaxis2={
            "title": "silhouette",
            "overlaying": "y",
            "side": "right",
            "range": [-1, 1],
            "tickmode": "linear",  # its own ticks, not the left axis' grid
            "tick0": -1,
            "dtick": 0.5,
            "showgrid": False,
            "zeroline": True,
            "zerolinecolor": GRID,
        },
        legend={"x": 1.12, "y": 1, "xanchor": "left", "yanchor": "top"},
        hovermode="closest",
        width=max(640, 70 * count + 220) + 200,
        height=480,
    )
    return fig


def probe_report_chart(report: ProbeReport, labels: Mapping[str, str]) -> go.Figure:
    """`probe_chart` of a probe report, its layers named by `labels` (block → label)."""
    return probe_chart(
        [labels.get(p.layer, p.layer) for p in report.layers],
        [p.probe_accuracy for p in report.layers],
        [p.knn_accuracy for p in report.layers],
        [p.silhouette for p in report.layers],
        report.model_accuracy,
        features=[p.features for p in report.layers],
    )


def cka_heatmap(
    matrix: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    row_title: str = "layer",
    column_title: str = "layer",
    title: str = "",
    subtitle: str = "",
) -> go.Figure:
    """Linear CKA between layers, 0..1: one model against itself (`columns` None: symmetric,
    ones on the diagonal) or model A's layers (rows) against model B's (columns)."""
    values = np.asarray(matrix, dtype=np.float64)
    cols = list(rows if columns is None else columns)
    if values.shape != (len(rows), len(cols)):
        raise ShapeError(f"CKA matrix {values.shape} does not fit {len(rows)}×{len(cols)} layers")
    cell = max(14.0, min(48.0, 620 / max(len(rows), len(cols), 1)))
    heat = go.Heatmap(
        z=values,
        x=list(range(len(cols))),
        y=list(range(len(rows))),
        zmin=0,
        zmax=1,
        colorscale=CKA_SCALE,
        customdata=np.array([[(r, c) for c in cols] for r in rows], dtype=object),
        hovertemplate=f"{row_title}: %{{customdata[0]}}<br>{column_title}: %{{customdata[1]}}"
        "<br>CKA %{z:.3f}<extra></extra>",
        colorbar={"title": {"text": "CKA"}},
    )
    if max(len(rows), len(cols)) <= MAX_CELL_TEXT:
        heat.update(text=np.round(values, 2), texttemplate="%{text:.2f}", textfont={"size": 11})

    def ticks(names: Sequence[str]) -> dict:
        return {
            "tickmode": "array",
            "tickvals": list(range(len(names))),
            "ticktext": list(names),
            "showgrid": False,
            "zeroline": False,
        }

    fig = go.Figure(heat)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(
            title or "Layer similarity (linear CKA)",
            subtitle or "1 = the same representation up to rotation and scale · 0 = unrelated",
        ),
        xaxis={**ticks(cols), "title": column_title, "tickangle": -40},
        yaxis={
            **ticks(rows),
            "title": row_title,
            "autorange": "reversed",  # the first layer on top
            "scaleanchor": "x",
            "constrain": "domain",
        },
        width=int(cell * len(cols) + 320),
        height=int(cell * len(rows) + 260),
    )
    return fig
