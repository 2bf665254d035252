"""Training curves: train (solid) and test (dashed) per run, alone or overlaid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from dashboard.base.errors import ShapeError
from dashboard.figures.style import LENS_TEMPLATE, RUN_COLOURS, title_layout
from dashboard.models.dynamics import ema

if TYPE_CHECKING:  # a plain record: reading its fields needs no import of the training code
    from dashboard.training.curves import Run


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


def training_curves(
    runs: Sequence[Run],
    *,
    metric: str = "accuracy",
    title: str = "",
    x_title: str = "epoch",
    smoothing: float = 0.0,
    log_y: bool = False,
) -> go.Figure:
    """Train (solid) and test (dashed) curves, one colour and legend group per run. With
    `smoothing` (TensorBoard's EMA weight, 0..1) the train line is smoothed and its raw values
    drawn faint behind; `log_y` puts the values on a log axis (for a loss)."""
    if metric not in ("accuracy", "loss"):
        raise ValueError(f'unknown metric {metric!r}; choose "accuracy" or "loss"')
    factor = 100.0 if metric == "accuracy" else 1.0
    unit = " %" if metric == "accuracy" else ""
    digits = 2 if metric == "accuracy" else 4
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
            xs, ys = [e for e, _ in kept], [v * factor for _, v in kept]
            hover = (
                f"{run.label} · {split}<br>{x_title} %{{x:.4~g}}<br>{metric} "
                f"%{{y:.{digits}f}}{unit}<extra></extra>"
            )
            smoothed = split == "train" and smoothing > 0
            if smoothed:  # the raw line stays visible, faint, as in TensorBoard
                traces.append(
                    go.Scatter(
                        x=xs, y=ys, name=f"{split} (raw)", legendgroup=run.label,
                        mode="lines", line={"color": colour, "width": 1}, opacity=0.3,
                        hovertemplate=hover.replace(split, f"{split} raw", 1), showlegend=False,
                    )
                )  # fmt: skip
                ys = list(ema(ys, smoothing))
            traces.append(
                go.Scatter(
                    x=xs,
                    y=ys,
                    name=f"{split} (smoothed)" if smoothed else split,
                    legendgroup=run.label,
                    legendgrouptitle_text=run.label,
                    mode="lines+markers" if len(kept) <= 40 else "lines",
                    line={"color": colour, "dash": dash, "width": 2.5},
                    marker={"size": 7, "color": colour},
                    hovertemplate=hover,
                )
            )
    fig = go.Figure(traces)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title or f"Training {metric}", "solid = train · dashed = test"),
        xaxis={
            "title": x_title,
            "rangemode": "tozero" if metric == "loss" and x_title == "epoch" else "normal",
        },
        yaxis={
            "title": f"{metric} (%)" if metric == "accuracy" else "loss",
            "ticksuffix": unit,
            "type": "log" if log_y else "linear",
        },
        width=720,
        height=420,
        legend={"groupclick": "toggleitem", "tracegroupgap": 8},
    )
    return fig
