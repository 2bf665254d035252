"""Sizing a confusion-matrix figure for its place on the page: beside a table or on a row of
its own, with click targets as large as its cells and zoom only where there is something to
zoom into."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go


def is_wide(classes: Sequence[object]) -> bool:
    """Many classes or long names: the matrix gets the page's full width."""
    return len(classes) > 12 or max(len(str(c)) for c in classes) > 12


def size_matrix(fig: go.Figure, names: Sequence[object], *, wide: bool) -> str:
    """Size a matrix figure for its place; → the `width` for st.plotly_chart.

    Beside the per-class table it stretches to its column at a fixed height (plotly keeps the
    cells square). On its own row it gets a fixed size from its class count and label lengths,
    so 100 classes get 8-pixel cells and long names their margins. Large matrices zoom by
    dragging; small ones stay put."""
    K = len(names)
    if wide:
        cell = min(48, max(8, 760 // K))
        label = 7 * max(len(str(n)) for n in names)  # pixels of the longest tick label
        fig.update_layout(width=K * cell + label + 230, height=int(K * cell + 0.75 * label + 200))
    else:
        cell = (600 - 220) / K
        fig.update_layout(width=None, height=600)
    fig.update_layout(yaxis={"constraintoward": "top"})  # spare room goes below, not above
    for trace in fig.data[1:]:  # the click targets over the cells
        trace.marker.size = max(4.0, cell)
    if K > 20:
        fig.update_layout(dragmode="zoom")  # drag to zoom in, double-click to zoom out
    else:  # nothing to zoom into: a drag must not pan the matrix away
        fig.update_layout(xaxis={"fixedrange": True}, yaxis={"fixedrange": True})
    return "content" if wide else "stretch"
