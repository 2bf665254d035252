"""Figures of one input image: the image itself, Grad-CAM over it, and the predicted
probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from dashboard.base.errors import ShapeError
from dashboard.figures.style import (
    CORRECT,
    LENS_TEMPLATE,
    MUTED,
    NARROW_TITLE_PX,
    PREDICTED,
    WRONG,
    as_numpy,
    fit_titles,
    image_layout,
    rgb_image,
    title_layout,
)


def boxed_image(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    *,
    title: str = "",
    caption: str = "",
    color: str = "#f59e0b",
) -> go.Figure:
    """An input image with a frame around `box` (top, left, bottom, right), inclusive: the
    pixels a neuron or a kernel window sees."""
    fig = image_figure(image, title=title, caption=caption)
    top, left, bottom, right = box
    fig.add_shape(
        type="rect",
        x0=left - 0.5,
        x1=right + 0.5,
        y0=top - 0.5,
        y1=bottom + 0.5,
        line={"color": color, "width": 3},
    )
    return fig


def image_figure(
    image: np.ndarray, *, title: str = "", subtitle: str = "", caption: str = ""
) -> go.Figure:
    """An input image, (H, W), (H, W, 3) or (3, H, W), drawn pixel-exact without tick clutter."""
    rgb, values = rgb_image(image)
    H, W = rgb.shape[:2]
    gray = values.ndim == 2
    fig = go.Figure(
        go.Image(
            z=rgb,
            customdata=values if gray else None,
            hovertemplate=(
                "x %{x}, y %{y}<br>value %{customdata:.4~g}<extra></extra>"
                if gray
                else "x %{x}, y %{y}<br>RGB %{z}<extra></extra>"
            ),
        )
    )
    image_layout(fig, H, W, title or "Input image", subtitle, max_side=320)
    fit_titles(fig, NARROW_TITLE_PX)
    if caption:
        fig.add_annotation(
            text=caption,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0,
            yshift=-10,
            yanchor="top",
            showarrow=False,
            font={"color": MUTED, "size": 12},
        )
        fig.update_layout(margin={"b": 50})
    return fig


def gradcam_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    alpha: float = 0.45,
    title: str = "",
    colorscale: str = "Jet",
) -> go.Figure:
    """A class-activation map (h, w) upsampled bilinearly and blended over the image."""
    rgb, _ = rgb_image(image)
    H, W = rgb.shape[:2]
    cam = upsample(heatmap, (H, W))
    lo, hi = float(cam.min()), float(cam.max())
    cam = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    fig = go.Figure(
        [
            go.Image(z=rgb, hoverinfo="skip"),
            go.Heatmap(
                z=cam,
                zmin=0.0,
                zmax=1.0,
                colorscale=colorscale,
                opacity=alpha,  # the browser blends: (1 − α)·image + α·colour
                colorbar={"title": {"text": "relative<br>importance"}},
                hovertemplate="x %{x}, y %{y}<br>importance %{z:.2f}<extra></extra>",
            ),
        ]
    )
    image_layout(fig, H, W, title or "Where the model looked", "", max_side=360)
    return fig


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False) resize of a 2-D map to size (H, W), as torch does it."""
    h = torch.as_tensor(as_numpy(heatmap), dtype=torch.float32)
    if h.ndim != 2:
        raise ShapeError(f"heatmap must be 2-D (h, w), got {tuple(h.shape)}")
    out = F.interpolate(h[None, None], size=size, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def probability_bars(
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    true_class: int | None = None,
    top: int | None = 10,
    title: str = "",
) -> go.Figure:
    """Class probabilities as sorted horizontal bars: predicted coloured, true class marked."""
    p = as_numpy(probabilities).astype(np.float64).ravel()
    if len(p) != len(classes):
        raise ShapeError(f"{len(p)} probabilities for {len(classes)} classes")
    ranked = np.argsort(-p, kind="stable")
    shown = list(ranked[: top or len(p)])
    if true_class is not None and true_class not in shown:
        shown.append(true_class)  # the true class is always visible, even far down
    predicted = int(ranked[0])
    verdict_colour = CORRECT if predicted == true_class else WRONG
    top_colour = PREDICTED if true_class is None else verdict_colour
    colours = [top_colour if k == predicted else "#cbd5e1" for k in shown]
    outline = [CORRECT if k == true_class else "rgba(0,0,0,0)" for k in shown]
    labels = [f"{classes[k]}  ✓ true" if k == true_class else str(classes[k]) for k in shown]
    values = p[shown] * 100
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker={"color": colours, "line": {"color": outline, "width": 2}},
            text=[f"{v:.1f} %" for v in values],
            textposition="outside",
            cliponaxis=False,
            customdata=np.array([[int(k), r + 1] for r, k in enumerate(shown)]),
            hovertemplate="%{y}<br>class %{customdata[0]}, rank %{customdata[1]}"
            "<br>%{x:.2f} %<extra></extra>",
        )
    )
    verdict = f"predicted {classes[predicted]} ({p[predicted] * 100:.1f} %)"
    if true_class is not None:
        verdict += f" · true {classes[true_class]}"
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title or "Class probabilities", verdict),
        xaxis={"title": "probability (%)", "range": [0, 112], "showgrid": True},
        yaxis={"autorange": "reversed", "ticks": "", "type": "category"},  # "7" is a name
        width=560,
        height=max(220, 130 + 28 * len(shown)),
        showlegend=False,
    )
    fit_titles(fig, NARROW_TITLE_PX)
    return fig
