"""Which images a reader picked in the projector's scatter, and what the picked set holds.

A chart's selection event (Streamlit's `st.plotly_chart(on_select=…)` state, a plain dict) lists
the points picked, each with its customdata [split index, row, true class, predicted class]
(see `figures.representations.embedding_scatter`). A click names one point; a box or lasso
names every point inside it and records its outline under "box" or "lasso". The rings drawn
around a clicked image and its neighbours repeat their points' customdata, so one image can be
named twice: it counts once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ROW_FIELD = 1  # customdata[1]: the point's row in the projector's features


@dataclass(frozen=True)
class ChartPick:
    """The rows a chart event names, each once, in the order named; `area`: drawn by a box or
    lasso (a gallery), else a click (one image) or nothing (the selection was cleared)."""

    rows: tuple[int, ...]
    area: bool


def point_custom(point: Mapping[str, Any]) -> list | None:
    """A picked point's customdata as a list: a typed array's row comes back as
    {"0": …, "1": …}."""
    custom = point.get("customdata")
    if isinstance(custom, Mapping):
        custom = [custom[k] for k in sorted(custom, key=int)]
    if isinstance(custom, str):  # one value per point
        custom = [custom]
    return list(custom) if custom is not None else None


def picked_rows(event: Mapping[str, Any] | None) -> ChartPick:
    """The rows of the points a selection event names (see the module's docstring)."""
    selection = (event or {}).get("selection") or {}
    rows: dict[int, None] = {}  # ordered and without repeats
    for point in selection.get("points") or []:
        custom = point_custom(point)
        if custom is not None and len(custom) > ROW_FIELD:
            rows.setdefault(int(custom[ROW_FIELD]))
    area = bool(selection.get("box") or selection.get("lasso"))
    return ChartPick(tuple(rows), area)


@dataclass(frozen=True)
class PickSummary:
    """What a set of picked images holds: how many, how many the model got right, and how many
    of each true class (most first, then in class order)."""

    count: int
    right: int
    by_class: tuple[tuple[str, int], ...]

    @property
    def wrong(self) -> int:
        return self.count - self.right

    def text(self) -> str:
        """'37 images selected: 30 right, 7 wrong; by true class: 8: 16, 3: 12, 5: 9.'"""
        noun = "image" if self.count == 1 else "images"
        classes = ", ".join(f"{name}: {n:,}" for name, n in self.by_class)
        return (
            f"{self.count:,} {noun} selected: {self.right:,} right, {self.wrong:,} wrong; "
            f"by true class: {classes}."
        )


def summarize(
    rows: Sequence[int], labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> PickSummary:
    """The summary of the images at `rows` of (labels, predicted)."""
    chosen = np.asarray(rows, dtype=np.int64)
    true, guess = np.asarray(labels)[chosen], np.asarray(predicted)[chosen]
    counts = np.bincount(true, minlength=len(classes))
    order = sorted(np.flatnonzero(counts), key=lambda k: (-counts[k], k))
    return PickSummary(
        count=len(chosen),
        right=int((true == guess).sum()),
        by_class=tuple((str(classes[k]), int(counts[k])) for k in order),
    )


def gallery_order(rows: Sequence[int], labels: np.ndarray, predicted: np.ndarray) -> list[int]:
    """The picked rows as the gallery shows them: the model's mistakes first (the images a
    reader looks for in a cluster), each part in row order."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    return sorted((int(r) for r in rows), key=lambda r: (bool(labels[r] == predicted[r]), r))
