"""Figures of a model's evaluation: arrays and `evaluation` records in, plotly out.

Per-class precision–recall and ROC curves (one class or all), the reliability diagram before and
after temperature scaling, the confidence of right and wrong answers, and a gallery of the top
losses whose pictures carry the image index for "open on Activations".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.analysis.evaluation import ConfidenceHistogram, Curve, Loss, Reliability
from dashboard.base.errors import ShapeError
from dashboard.figures import mosaic
from dashboard.figures.style import (
    CORRECT,
    LENS_TEMPLATE,
    MUTED,
    RUN_COLOURS,
    WRONG,
    rgb_image,
    title_layout,
)

MAX_CURVE_POINTS = 600  # per drawn curve; the scores in the legend come from the full curve


def _thin(curve: Curve) -> np.ndarray:
    """Indices of at most MAX_CURVE_POINTS points, both ends kept: 10,000 test images give a
    curve of up to 10,000 steps, invisible at screen resolution but heavy to send."""
    n = len(curve.x)
    if n <= MAX_CURVE_POINTS:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, MAX_CURVE_POINTS)).astype(np.int64))


def class_curves(curves: Sequence[Curve], *, kind: str, title: str = "") -> go.Figure:
    """PR (kind "pr") or ROC ("roc") curves of one class or several, overlaid, each named with
    its average precision or area. A PR curve's chance line is the class's share of images;
    a ROC curve's is the diagonal."""
    if kind not in ("pr", "roc"):
        raise ValueError(f'kind must be "pr" or "roc", got {kind!r}')
    score_name = "AP" if kind == "pr" else "AUC"
    x_name, y_name = ("recall", "precision") if kind == "pr" else ("false-positive rate", "TPR")
    traces = []
    for i, curve in enumerate(curves):
        if not curve.defined:
            continue
        keep = _thin(curve)
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        traces.append(
            go.Scatter(
                x=curve.x[keep],
                y=curve.y[keep],
                mode="lines",
                line={"color": colour, "width": 2, "shape": "hv" if kind == "roc" else "linear"},
                name=f"{curve.name} ({score_name} {curve.score:.4f})",
                legendgroup=curve.name,
                hovertemplate=f"class {curve.name}<br>{x_name} %{{x:.4f}}<br>{y_name} %{{y:.4f}}"
                "<extra></extra>",
            )
        )
    single = len(curves) == 1
    if kind == "roc":
        traces.append(_chance([0, 1], [0, 1], "chance"))
    elif single and curves[0].defined:
        share = curves[0].positives / (curves[0].positives + curves[0].negatives)
        traces.append(_chance([0, 1], [share, share], f"chance ({share:.1%} of images)"))
    missing = [c.name for c in curves if not c.defined]
    subtitle = (
        f"{len(curves) - len(missing)} classes, one against the rest"
        if not single
        else f"class {curves[0].name} against the rest: {curves[0].positives:,} of "
        f"{curves[0].positives + curves[0].negatives:,} images"
    )
    if missing:
        subtitle += f" · no curve for {', '.join(missing[:5])} (no image of it, or only)"
    fig = go.Figure(traces)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(
            title or ("Precision–recall" if kind == "pr" else "ROC") + " curves", subtitle
        ),
        xaxis={"title": x_name.capitalize(), "range": [-0.01, 1.01]},
        yaxis={
            "title": "Precision" if kind == "pr" else "True-positive rate",
            "range": [-0.01, 1.02],
        },
        width=760,
        height=560,
        legend={"title": {"text": "class"}},
    )
    return fig


def _chance(x: list[float], y: list[float], name: str) -> go.Scatter:
    return go.Scatter(
        x=x, y=y, mode="lines", line={"dash": "dash", "color": MUTED}, name=name, hoverinfo="skip"
    )


def reliability_diagram(
    before: Reliability,
    after: Reliability | None = None,
    *,
    temperature: float | None = None,
    title: str = "",
) -> go.Figure:
    """Accuracy per confidence bin as bars against the diagonal, before (and after) temperature
    scaling side by side; the red part of a bar is its gap to perfect calibration."""
    panels = [before] + ([after] if after is not None else [])
    names = [f"Before scaling · ECE {before.ece:.2%}"]
    if after is not None:
        scaled = f"After T = {temperature:.3f}" if temperature is not None else "After scaling"
        names.append(f"{scaled} · ECE {after.ece:.2%}")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=names, horizontal_spacing=0.1)
    for col, rel in enumerate(panels, start=1):
        centres = (rel.edges[:-1] + rel.edges[1:]) / 2
        width = np.diff(rel.edges)
        filled = rel.counts > 0
        hover = [
            f"confidence {lo:.3f}–{hi:.3f}<br>{n:,} predictions<br>accuracy {a:.2%}"
            f"<br>mean confidence {c:.2%}"
            for lo, hi, n, a, c in zip(
                rel.edges[:-1], rel.edges[1:], rel.counts, rel.accuracy, rel.confidence, strict=True
            )
        ]
        fig.add_trace(
            go.Bar(
                x=centres[filled],
                y=rel.accuracy[filled],
                width=width[filled],
                marker={"color": "#3b82f6", "line": {"color": "white", "width": 1}},
                name="accuracy",
                hovertext=np.array(hover, dtype=object)[filled],
                hoverinfo="text",
                showlegend=col == 1,
                legendgroup="accuracy",
            ),
            row=1,
            col=col,
        )
        gap = rel.confidence[filled] - rel.accuracy[filled]
        fig.add_trace(
            go.Bar(
                x=centres[filled],
                y=gap,
                base=rel.accuracy[filled],
                width=width[filled],
                marker={"color": "rgba(220,38,38,0.35)", "line": {"color": WRONG, "width": 1}},
                name="gap to the diagonal",
                hoverinfo="skip",
                showlegend=col == 1,
                legendgroup="gap",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                line={"dash": "dash", "color": MUTED},
                name="perfect calibration",
                hoverinfo="skip",
                showlegend=col == 1,
                legendgroup="diagonal",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="confidence (top probability)", range=[0, 1], row=1, col=col)
        fig.update_yaxes(range=[0, 1.02], row=1, col=col)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title={  # the pad keeps the subtitle clear of the panels' own titles
            **title_layout(
                title or "Reliability diagram",
                f"{len(before.counts)} equal-width bins · ECE = Σ (share of predictions) × "
                "|accuracy − confidence|",
            ),
            "pad": {"b": 60},
        },
        barmode="overlay",
        width=520 * len(panels) + 80,
        height=500,
        legend={"orientation": "h", "y": -0.2, "x": 0},
        margin={"b": 100},
    )
    return fig


def confidence_histograms(
    hist: ConfidenceHistogram, *, share: bool = True, title: str = ""
) -> go.Figure:
    """How confident right (green) and wrong (red) answers are. `share`: each group as a
    percentage of its own size (wrong answers are few), else counts."""
    centres = (hist.edges[:-1] + hist.edges[1:]) / 2
    width = float(np.diff(hist.edges).mean())
    traces = []
    for name, counts, colour in (("right", hist.correct, CORRECT), ("wrong", hist.wrong, WRONG)):
        total = int(counts.sum())
        y = counts / total * 100 if share and total else counts
        traces.append(
            go.Bar(
                x=centres,
                y=y,
                width=width,
                name=f"{name} ({total:,})",
                marker={"color": colour, "opacity": 0.6},
                customdata=np.stack([hist.edges[:-1], hist.edges[1:], counts], axis=1),
                hovertemplate=f"{name}<br>confidence %{{customdata[0]:.2f}}–%{{customdata[1]:.2f}}"
                "<br>%{customdata[2]:,} predictions<extra></extra>",
            )
        )
    fig = go.Figure(traces)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(
            title or "Confidence of right and wrong answers", "top probability per image"
        ),
        barmode="overlay",
        xaxis={"title": "confidence (top probability)", "range": [0, 1]},
        yaxis={"title": "share of the group (%)" if share else "predictions"},
        width=760,
        height=440,
    )
    return fig


def top_losses_gallery(
    images: np.ndarray,
    losses: Sequence[Loss],
    classes: Sequence[str],
    *,
    cols: int = 10,
    title: str = "",
    max_side: float = 1000,
) -> go.Figure:
    """The images of the top losses (N, C, H, W) uint8 in loss order, each labelled
    "true → predicted"; hovering shows both probabilities and the loss, and each picture's
    `customdata` is [image index] (what a click selects, to open it on Activations)."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) != len(losses) or not len(losses):
        raise ShapeError(
            f"need one image (N, C, H, W) per loss, got {images.shape} for {len(losses)}"
        )
    N = len(losses)
    cols = max(1, min(cols, N))
    rows = -(-N // cols)
    H, W = images.shape[2:]
    pictures = np.full((rows * cols, H, W, 3), 255, dtype=np.uint8)
    pictures[:N] = np.stack([rgb_image(image)[0] for image in images])
    texts = np.full(rows * cols, "", dtype=object)
    hover = np.full(rows * cols, "", dtype=object)
    custom = np.full((rows * cols, 1), -1, dtype=np.int64)
    for k, loss in enumerate(losses):
        true, predicted = classes[loss.true], classes[loss.predicted]
        texts[k] = f"{true} → {predicted}"
        hover[k] = (
            f"test image {loss.index}<br>true {true}: {loss.true_probability:.2%}"
            f"<br>predicted {predicted}: {loss.predicted_probability:.2%}"
            f"<br>loss {loss.loss:.3f}<br>click to open on Activations"
        )
        custom[k, 0] = loss.index
    shape = (rows, cols)
    return mosaic.grid_figure(
        pictures.reshape(*shape, H, W, 3),
        texts=texts.reshape(shape),
        hover=hover.reshape(shape),
        customdata=custom.reshape(*shape, 1),
        title=title or "Top losses",
        subtitle=f"the {N} test images with the highest cross-entropy · true → predicted",
        max_side=max_side,
    )
