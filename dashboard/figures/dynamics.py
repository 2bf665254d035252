"""Training dynamics as TensorBoard draws them: every layer's statistic over training (smoothed,
the raw line faint behind), and one tensor's "distributions" over epochs: percentile bands and
a heatmap of its histograms."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.style import LENS_TEMPLATE, MUTED, RUN_COLOURS, title_layout
from dashboard.models.dynamics import UPDATE_RATIO_GUIDE, ema

HEIGHT = 520
BAND_COLOUR = "31, 119, 180"  # TensorBoard's orange would clash with the run colours: blue
# Opacity of the bands from the outside in: (min, max), (7 %, 93 %), (16 %, 84 %), (31 %, 69 %).
BAND_OPACITY = (0.12, 0.22, 0.34, 0.5)


def _faint(colour: str) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, 0.25)"


def shown_values(values: np.ndarray, *, statistic: str, log_y: bool) -> np.ndarray:
    """What the axis can show: dead shares in per cent; on a log axis, zero, negative and
    infinite values become gaps (NaN) rather than points at the edge."""
    out = np.asarray(values, dtype=np.float64) * (100.0 if statistic == "dead_share" else 1.0)
    if log_y:
        out = np.where(np.isfinite(out) & (out > 0), out, np.nan)
    return out


def statistic_lines(
    x: np.ndarray,
    lines: Mapping[str, np.ndarray],
    *,
    statistic: str,
    y_title: str,
    x_title: str,
    smoothing: float = 0.6,
    log_y: bool = False,
    title: str = "",
    subtitle: str = "",
) -> go.Figure:
    """One line per layer of `statistic` over training, smoothed by TensorBoard's EMA with the
    raw values faint behind (smoothing 0: raw only). The update ratio gets the ~1e-3 guide."""
    fig = go.Figure()
    for i, (name, values) in enumerate(lines.items()):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        raw = shown_values(values, statistic=statistic, log_y=log_y)
        hover = f"{name}<br>%{{x:.4~g}} · %{{y:{'.1f' if statistic == 'dead_share' else '.4~g'}}}"
        if statistic == "dead_share":
            hover += " %"
        if smoothing > 0:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=raw,
                    mode="lines",
                    line={"color": _faint(colour), "width": 1},
                    legendgroup=name,
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{name} (raw)",
                )
            )
        smooth = shown_values(ema(values, smoothing), statistic=statistic, log_y=log_y)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=smooth if smoothing > 0 else raw,
                mode="lines+markers" if len(x) <= 30 else "lines",
                marker={"size": 5},
                line={"color": colour, "width": 2},
                name=name,
                legendgroup=name,
                hovertemplate=hover + "<extra></extra>",
            )
        )
    if statistic == "update_ratio":
        # A line across the plot; its label's y is in log10 units on a log axis (plotly's rule
        # for annotations, not for shapes), else the label would stretch the axis up to 10⁰.
        fig.add_hline(y=UPDATE_RATIO_GUIDE, line={"color": MUTED, "dash": "dash", "width": 1.5})
        fig.add_annotation(
            x=0,
            xref="paper",
            xanchor="left",
            y=math.log10(UPDATE_RATIO_GUIDE) if log_y else UPDATE_RATIO_GUIDE,
            yanchor="bottom",
            text="~1e-3 rule of thumb",
            showarrow=False,
            font={"color": MUTED, "size": 12},
        )
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title, subtitle),
        height=HEIGHT,
        xaxis_title=x_title,
        yaxis_title=y_title,
        yaxis_type="log" if log_y else "linear",
        legend={"font": {"size": 11}, "tracegroupgap": 0},
        hovermode="closest",
    )
    if statistic == "dead_share":
        fig.update_yaxes(range=[-2, 102], ticksuffix=" %")
    elif log_y:
        drawn = [np.asarray(t.y, dtype=np.float64) for t in fig.data]
        if statistic == "update_ratio":
            drawn.append(np.array([UPDATE_RATIO_GUIDE]))
        ticks = log_ticks(np.concatenate(drawn) if drawn else np.zeros(0))
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    return fig


def log_ticks(values: np.ndarray) -> list[float]:
    """1, 2 and 5 times the powers of ten spanning the finite positive `values`: whole numbers
    on every tick (plotly's own log ticks label 0.02 as a bare "2")."""
    shown = values[np.isfinite(values) & (values > 0)]
    if not len(shown):
        return []
    low, high = math.floor(math.log10(shown.min())), math.ceil(math.log10(shown.max()))
    ticks = [m * 10.0**e for e in range(low, high + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if shown.min() / 2 <= t <= shown.max() * 2]
    return [float(f"{t:.12g}") for t in inside]


def distribution_bands(
    epochs: Sequence[int],
    bands: np.ndarray,
    percentiles: Sequence[float],
    *,
    title: str = "",
    subtitle: str = "",
) -> go.Figure:
    """TensorBoard's distributions: the percentile bands of a tensor's values over the epochs,
    darker towards the median (bands: (E, P) for the P `percentiles`, symmetric around 50)."""
    bands = np.asarray(bands, dtype=np.float64)
    count = len(percentiles)
    if bands.shape != (len(epochs), count) or count % 2 == 0:
        raise ValueError(f"bands must be (epochs, an odd number of percentiles), got {bands.shape}")
    fig = go.Figure()
    x = list(epochs)
    middle = count // 2
    for ring in range(middle):  # from the outside in, so the darker bands lie on top
        low, high = ring, count - 1 - ring
        opacity = BAND_OPACITY[min(ring, len(BAND_OPACITY) - 1)]
        label = f"{_percent(percentiles[low])}–{_percent(percentiles[high])}"
        fig.add_trace(
            go.Scatter(x=x, y=bands[:, low], mode="lines", line={"width": 0}, showlegend=False,
                       hoverinfo="skip", legendgroup=label)
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=x,
                y=bands[:, high],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=f"rgba({BAND_COLOUR}, {opacity})",
                name=label,
                legendgroup=label,
                customdata=bands[:, low],
                hovertemplate=f"epoch %{{x}}<br>{label}: %{{customdata:.4~g}} to %{{y:.4~g}}"
                "<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=bands[:, middle],
            mode="lines+markers",
            line={"color": f"rgb({BAND_COLOUR})", "width": 2.5},
            marker={"size": 6},
            name="median",
            hovertemplate="epoch %{x}<br>median %{y:.4~g}<extra></extra>",
        )
    )
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title, subtitle),
        height=HEIGHT,
        xaxis={"title": "epoch (0 = before training)", "dtick": _epoch_tick(len(x))},
        yaxis_title="weight value",
        legend={"title": {"text": "percentiles"}, "traceorder": "reversed"},
        hovermode="x",
    )
    return fig


def histogram_heatmap(
    epochs: Sequence[int],
    edges: np.ndarray,
    counts: np.ndarray,
    *,
    title: str = "",
    subtitle: str = "",
) -> go.Figure:
    """A tensor's histograms as one heatmap: value across, epoch down, each cell the share of
    the tensor's values in that bin (counts: (E, bins + 2) with the outside bins, left out here
    and counted in the hover). The value axis spans the occupied bins only."""
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    inside = counts[:, 1:-1]
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    share = 100.0 * inside / totals
    occupied = np.flatnonzero(inside.sum(axis=0))
    first, last = (occupied[0], occupied[-1]) if len(occupied) else (0, len(edges) - 2)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(
        go.Heatmap(
            x=centres,
            y=list(epochs),
            z=share,
            customdata=inside,
            colorscale="Blues",
            zmin=0,
            colorbar={"title": {"text": "% of values", "side": "right"}},
            hovertemplate="epoch %{y}<br>bin centre %{x:.4~g}<br>%{customdata:,} values "
            "(%{z:.2f} %)<extra></extra>",
            xgap=0,
            ygap=1,
        )
    )
    width = edges[1] - edges[0]
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title, subtitle),
        height=HEIGHT,
        xaxis={"title": "weight value", "range": [edges[first] - width, edges[last + 1] + width]},
        yaxis={"title": "epoch (0 = before training)", "autorange": "reversed",
               "dtick": _epoch_tick(len(epochs))},
    )  # fmt: skip
    return fig


def _percent(p: float) -> str:
    if p <= 0:
        return "min"
    if p >= 100:
        return "max"
    return f"{p:.0f} %"


def _epoch_tick(count: int) -> int:
    return max(1, count // 10)
