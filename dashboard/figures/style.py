"""The one look every figure shares: colours, the plotly template, titles that wrap to their
figure's width, and the small conversions the builders of every subject use.

Pages should draw figures with `st.plotly_chart(fig, theme=None)`: Streamlit's default theme
replaces the template's fonts and colours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from dashboard.base import tables
from dashboard.base.errors import ShapeError

FONT = "Inter, 'Segoe UI', 'Helvetica Neue', Arial, sans-serif"


INK = "#1f2937"  # text


MUTED = "#6b7280"  # secondary text, inactive bars


GRID = "#e5e7eb"


GAP = "#c9ced6"  # background between tiles: must differ from a diverging scale's white zero


DEAD = "#dc2626"


PREDICTED = "#2563eb"


CORRECT = "#16a34a"


WRONG = "#dc2626"


RUN_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)


DIVERGING = "RdBu_r"  # positive weights red, negative blue, zero white


SCALE_MODES = ("per map", "per layer", "global")


NORMALIZE_MODES = ("counts", "row", "column", "all")


MIN_WIDTH = 300  # pixels: an image figure's narrowest, two fit side by side on a laptop


MAX_MOSAIC_PIXELS = 400_000  # about a screenful; larger activation mosaics are thinned


_AXIS = {  # both axes alike
    "gridcolor": GRID,
    "zerolinecolor": "#9ca3af",
    "linecolor": "#9ca3af",
    "ticks": "outside",
    "automargin": True,
    "title": {"standoff": 8},
}
LENS_TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": FONT, "size": 13, "color": INK},
        "title": {  # just above the plot area; automargin makes room for it and a subtitle
            "font": {"size": 18},
            "x": 0.0,
            "xref": "paper",
            "y": 1.0,
            "yref": "paper",
            "yanchor": "bottom",
            "pad": {"b": 16},
            "automargin": True,
        },
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 60, "r": 30, "t": 80, "b": 55, "autoexpand": True},
        "colorway": list(RUN_COLOURS),
        "hoverlabel": {"font": {"family": FONT, "size": 13}, "bgcolor": "white"},
        "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
        "xaxis": _AXIS,
        "yaxis": _AXIS,
    },
    data={
        "heatmap": [go.Heatmap(colorbar={"thickness": 14, "outlinewidth": 0, "len": 0.9})],
    },
)


NARROW_TITLE_PX = 190  # titles of figures that sit in a third of a laptop's page wrap here


def figure_html(fig: go.Figure) -> str:
    """A full self-contained HTML page of the figure (plotly.js inlined) for download."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


def as_numpy(x: Any) -> np.ndarray:
    """Arrays and tensors alike as a NumPy array on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def rgb_image(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 for display and the values behind it ((H, W) for grayscale)."""
    a = as_numpy(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)  # (C, H, W) tensors as the model sees them
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ShapeError(f"image must be (H, W), (H, W, 3) or (3, H, W), got {a.shape}")
    if a.dtype == np.uint8:
        pixels = a
    else:
        f = a.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        if lo < 0.0 or hi > 1.0:  # normalized inputs: stretch to the visible range
            f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
        pixels = np.rint(f * 255).astype(np.uint8)
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(rgb), a


def text_width_px(text: str, font_px: float) -> float:
    """An upper estimate of `text`'s width: Source Sans advances, plus a margin for the
    sans-serif fonts a browser may draw instead."""
    return 1.15 * tables.text_width(text, font_px)


def wrap(text: str, width_px: float, font_px: float) -> str:
    """`text` broken at spaces into lines (<br>) no wider than `width_px` where a word allows."""
    if "<br>" in text or text_width_px(text, font_px) <= width_px:
        return text
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if line and text_width_px(trial, font_px) > width_px:
            lines.append(line)
            line = word
        else:
            line = trial
    return "<br>".join([*lines, line])


def fit_titles(fig: go.Figure, room: float | None = None) -> None:
    """Wrap a fixed-width figure's title and subtitle to its width (or `room` pixels, for a
    figure that usually sits in a narrow column and is shrunk to it): plotly never wraps, so a
    long title ran past the figure's edge and was cut. The lines added take room above the
    plot area (the figure grows), not from it."""
    width, title = fig.layout.width, fig.layout.title
    if not (width or room) or not title.text:
        return
    left = fig.layout.margin.l if fig.layout.margin.l is not None else 60
    room = room or width - left - 10
    text = wrap(title.text, room, title.font.size or 18)
    sub = title.subtitle.text or ""
    sub_wrapped = wrap(sub, room, 12)
    added = 22 * (text.count("<br>") - title.text.count("<br>"))
    added += 15 * (sub_wrapped.count("<br>") - sub.count("<br>"))
    if not added:
        return
    top = fig.layout.margin.t if fig.layout.margin.t is not None else 80
    fig.update_layout(
        title_text=text, margin_t=top + added, height=(fig.layout.height or 450) + added
    )
    if sub:
        fig.update_layout(title_subtitle_text=sub_wrapped)


def title_layout(text: str, subtitle: str = "") -> dict[str, Any]:
    """Title with a muted subtitle line."""
    title: dict[str, Any] = {"text": text}
    if subtitle:  # the pad keeps the subtitle line clear of the plot area
        title["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": MUTED}}
        title["pad"] = {"b": 36}
    return title


def image_layout(
    fig: go.Figure,
    height: int,
    width: int,
    title: str,
    subtitle: str,
    *,
    max_side: float = 640,
    background: str = "white",
) -> None:
    """Pixel-image axes (y down, square pixels, no ticks) and a size that fits the content."""
    cell = min(max_side / max(height, width), 40.0)
    axis = {
        "showgrid": False,
        "zeroline": False,
        "showticklabels": False,
        "ticks": "",
        "showline": False,
        "constrain": "domain",
    }
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title, subtitle),
        xaxis={**axis, "range": [-0.5, width - 0.5]},
        yaxis={**axis, "range": [height - 0.5, -0.5], "scaleanchor": "x"},
        plot_bgcolor=background,
        width=int(max(MIN_WIDTH, width * cell + 150)),
        height=int(height * cell + (110 if subtitle else 80)),
        margin={"l": 20, "r": 20, "t": 80 if subtitle else 50, "b": 20},
    )
    fit_titles(fig)


def arrow_lines(
    xs: list, ys: list, sizes: list, *, colour: str, width: float, name: str
) -> go.Scatter:
    """Polylines (None between them) whose markers are arrowheads where `sizes` is not 0,
    pointing along the line: the edges of a diagram."""
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines+markers",
        line={"color": colour, "width": width},
        marker={"symbol": "arrow", "angleref": "previous", "size": sizes, "color": colour},
        hoverinfo="skip",
        showlegend=False,
        name=name,
    )
