"""Confusion matrices: counts or shares, and the difference of two models' matrices."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.base.errors import ShapeError
from dashboard.figures.style import INK, LENS_TEMPLATE, NORMALIZE_MODES, as_numpy, title_layout


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
    counts = as_numpy(cm).astype(np.int64)
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
        title=title_layout(title or "Confusion matrix", subtitle + " · click a cell"),
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
    c = as_numpy(cm).astype(np.float64)

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
    counts = as_numpy(cm).astype(np.int64)
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
    a, b = as_numpy(cm_a).astype(np.int64), as_numpy(cm_b).astype(np.int64)
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
        title=title_layout(
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
