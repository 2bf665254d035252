"""Figures of attribution maps: arrays in, plotly (or a PIL picture for the command line) out.

A map is drawn over its image: each pixel takes the colour of its value with an opacity that
grows with |value| (times the opacity asked for), so where a method sees nothing the image
shows through. Signed maps use the diverging scale (evidence for the class red, against it
blue), absolute maps a sequential one. Each map is divided by the 99th percentile of its |·|
(clipped to ±1): one extreme pixel, common in gradients, would otherwise leave every other
pixel pale; the hover still reports the real values.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.base.errors import LensError, ShapeError
from dashboard.figures import mosaic
from dashboard.figures.style import LENS_TEMPLATE, MUTED, RUN_COLOURS, rgb_image, title_layout

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

# The colour stops of plotly's RdBu_r (negative blue, 0 white, positive red) and Plasma, kept
# here so the command line's PNG needs no plotly and both draw the same colours.
SIGNED_STOPS = (
    (5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240),
    (247, 247, 247),
    (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31),
)  # fmt: skip
ABSOLUTE_STOPS = (
    (13, 8, 135), (70, 3, 159), (114, 1, 168), (156, 23, 158), (189, 55, 134),
    (216, 87, 107), (237, 121, 83), (251, 159, 58), (253, 202, 38), (240, 249, 33),
)  # fmt: skip
PERCENTILE = 99.0
OPACITY = 0.7
PNG_MIN_SIDE = 224  # the command line's picture: small images upscaled to at least this


def colorscale(signed: bool) -> list[list[object]]:
    stops = SIGNED_STOPS if signed else ABSOLUTE_STOPS
    return [[i / (len(stops) - 1), f"rgb{stop}"] for i, stop in enumerate(stops)]


def _lut(signed: bool) -> np.ndarray:
    """(256, 3) float colours along the scale."""
    stops = np.array(SIGNED_STOPS if signed else ABSOLUTE_STOPS, dtype=np.float64) / 255
    where = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, where, stops[:, k]) for k in range(3)], axis=1)


def normalized(values: np.ndarray, *, signed: bool) -> np.ndarray:
    """A map divided by the PERCENTILE of its |·|, clipped: −1..1 signed, 0..1 absolute."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ShapeError(f"an attribution map to draw is (H, W), got {v.shape}")
    if not signed:
        v = np.abs(v)
    magnitude = np.abs(v)
    scale = float(np.percentile(magnitude, PERCENTILE)) if magnitude.size else 0.0
    scale = scale if scale > 0 else float(magnitude.max(initial=0.0))
    if scale == 0 or not np.isfinite(scale):
        return np.zeros_like(v)
    return np.clip(v / scale, -1.0, 1.0)


def blend(
    image: np.ndarray, values: np.ndarray, *, signed: bool, opacity: float = OPACITY
) -> np.ndarray:
    """(H, W, 3) uint8: the image with the map's colours laid over it, opaque where |v| is big."""
    rgb = rgb_image(image)[0].astype(np.float64) / 255
    norm = normalized(values, signed=signed)
    if norm.shape != rgb.shape[:2]:
        raise ShapeError(f"map {norm.shape} and image {rgb.shape[:2]} differ in size")
    position = (norm + 1) / 2 if signed else norm
    colour = _lut(signed)[np.rint(position * 255).astype(np.int64)]
    alpha = np.clip(opacity, 0.0, 1.0) * np.abs(norm)[..., None]
    return np.rint(((1 - alpha) * rgb + alpha * colour) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# The command line's picture


def overlay_picture(
    image: np.ndarray, values: np.ndarray, *, signed: bool, opacity: float = OPACITY
) -> Image.Image:
    """The image and the map over it, side by side, upscaled by whole pixels (PIL, no plotly)."""
    from PIL import Image

    original = rgb_image(image)[0]
    overlay = blend(image, values, signed=signed, opacity=opacity)
    H, W = original.shape[:2]
    k = max(1, -(-PNG_MIN_SIDE // max(H, W)))
    gap = np.full((H * k, max(4, k), 3), 255, dtype=np.uint8)
    parts = [np.repeat(np.repeat(p, k, axis=0), k, axis=1) for p in (original, overlay)]
    return Image.fromarray(np.concatenate([parts[0], gap, parts[1]], axis=1), "RGB")


def check_png_path(path: Path) -> None:
    """A PNG file name in a folder that exists, else a one-line LensError (checked before the
    work, so a typo in --out costs nothing)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.suffix.lower() != ".png":
        raise LensError(f"{path.name}: the picture is written as PNG; give a .png file name")
    if not folder.is_dir():
        raise LensError(f"cannot write {path}: the folder {folder} does not exist")


def save_png(picture: Image.Image, path: Path) -> None:
    """Write atomically (a temporary file in the same folder, then a rename): a failure leaves
    no half-written file. One-line LensError for a folder that is missing or read-only."""
    check_png_path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise LensError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            picture.save(stream, format="PNG")
        os.replace(temp, path)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        raise LensError(f"cannot write {path}: {err.strerror or err}") from None


# ---------------------------------------------------------------------------------------------
# Methods side by side


def methods_side_by_side(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    *,
    signed: bool,
    opacity: float = OPACITY,
    notes: Mapping[str, str] | None = None,
    title: str = "",
    subtitle: str = "",
    max_side: float = 1100,
) -> go.Figure:
    """Several methods' (H, W) maps (title → map) over the same image, one row, one scale.

    `notes` (title → short text) go under each picture (e.g. "Σ 17.3", "flagged")."""
    if not maps:
        raise ShapeError("no maps to draw")
    names = list(maps)
    pictures = np.stack([blend(image, maps[n], signed=signed, opacity=opacity) for n in names])
    values = np.stack([np.asarray(maps[n], dtype=np.float32) for n in names])
    texts = np.array([[(notes or {}).get(n, "") for n in names]]) if notes else None
    kind = "signed: red for the class, blue against" if signed else "absolute"
    fig = mosaic.grid_figure(
        pictures[None],
        col_labels=names,
        texts=texts,
        values=values[None],
        value_name="attribution",
        hover=np.array([[f"{n}<br>max |a| {np.abs(maps[n]).max():.4g}" for n in names]]),
        title=title or "Attribution",
        subtitle=subtitle or f"{kind} · each map scaled by its {PERCENTILE:g}th percentile",
        max_side=max_side,
    )
    _add_colorbar(fig, signed)
    return fig


def _add_colorbar(fig: go.Figure, signed: bool) -> None:
    """The scale as a colour bar (an invisible trace carries it)."""
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            marker={
                "colorscale": colorscale(signed),
                "cmin": -1 if signed else 0,
                "cmax": 1,
                "color": [0],
                "showscale": True,
                "colorbar": {
                    "title": {"text": "a / p99 |a|"},
                    "thickness": 12,
                    "len": 0.8,
                    "tickvals": [-1, 0, 1] if signed else [0, 0.5, 1],
                },
            },
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig.update_layout(width=fig.layout.width + 90)


# ---------------------------------------------------------------------------------------------
# The sanity check


def cascade_grid(
    image: np.ndarray,
    maps: np.ndarray,
    methods: Sequence[str],
    layers: Sequence[str],
    correlations: np.ndarray,
    *,
    signed: Sequence[bool] | bool = False,
    flagged: Sequence[bool] | None = None,
    opacity: float = OPACITY,
    title: str = "",
    max_side: float = 1000,
) -> go.Figure:
    """Methods (rows) × cascade steps (columns): maps (M, S, H, W) over the image, each with
    its Spearman correlation to the original map (M, S) written under it. `layers` name the
    steps ("original", then each re-initialized layer); `flagged` marks rows."""
    maps = np.asarray(maps)
    M, S = maps.shape[:2]
    if (len(methods), len(layers)) != (M, S) or np.shape(correlations) != (M, S):
        raise ShapeError(f"{len(methods)} methods × {len(layers)} steps for maps {maps.shape[:2]}")
    signs = [signed] * M if isinstance(signed, bool) else list(signed)
    pictures = np.stack(
        [
            np.stack([blend(image, maps[m, s], signed=signs[m], opacity=opacity) for s in range(S)])
            for m in range(M)
        ]
    )
    rho = np.asarray(correlations, dtype=np.float64)
    texts = np.vectorize(lambda r: "ρ –" if np.isnan(r) else f"ρ {r:.2f}")(rho)
    hover = np.array(
        [
            [
                f"{methods[m]}<br>{_step_name(layers, s)}<br>Spearman ρ {rho[m, s]:.3f}"
                for s in range(S)
            ]
            for m in range(M)
        ]
    )
    rows = [f"⚑ {m}" if flagged is not None and flagged[i] else m for i, m in enumerate(methods)]
    return mosaic.grid_figure(
        pictures,
        col_labels=list(layers),
        row_labels=rows,
        texts=texts,
        hover=hover,
        customdata=np.stack(np.indices((M, S)), axis=-1),
        title=title or "Sanity check: cascading randomization",
        subtitle="layers re-initialized from the output back · ρ: Spearman rank correlation "
        "with the original map<br>⚑ the map does not depend on the model",
        max_side=max_side,
    )


def _step_name(layers: Sequence[str], s: int) -> str:
    return "trained model" if s == 0 else f"re-initialized down to {layers[s]}"


def cascade_correlations(
    correlations: np.ndarray,
    methods: Sequence[str],
    layers: Sequence[str],
    *,
    threshold: float,
    title: str = "",
) -> go.Figure:
    """Spearman ρ (M, S) against the cascade step, one line per method, the flag's threshold
    dashed: a method that depends on the model falls, one that does not stays high."""
    rho = np.asarray(correlations, dtype=np.float64)
    steps = list(range(len(layers)))
    fig = go.Figure(
        [
            go.Scatter(
                x=steps,
                y=rho[m],
                mode="lines+markers",
                name=method,
                line={"color": RUN_COLOURS[m % len(RUN_COLOURS)]},
                customdata=list(layers),
                hovertemplate=f"{method}<br>%{{customdata}}<br>ρ %{{y:.3f}}<extra></extra>",
            )
            for m, method in enumerate(methods)
        ]
    )
    fig.add_hline(
        y=threshold,
        line={"dash": "dash", "color": MUTED},
        annotation_text=f"flag at ρ ≥ {threshold:g} after the whole cascade",
        annotation_position="top right",
    )
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(title or "How much each map still looks like the original"),
        xaxis={
            "title": "layers re-initialized (from the output)",
            "tickvals": steps,
            "ticktext": list(layers),
            "tickangle": -45 if len(layers) > 6 else 0,
        },
        yaxis={"title": "Spearman ρ with the original", "range": [-1.05, 1.05]},
        width=max(640, 60 * len(layers) + 260),
        height=460,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Faithfulness


def faithfulness_curves(
    fractions: np.ndarray,
    deletion: Mapping[str, np.ndarray],
    insertion: Mapping[str, np.ndarray],
    *,
    images: int,
    title: str = "",
) -> go.Figure:
    """Mean deletion and insertion curves (title → (S,) probability), their areas in the
    legend; the random order dashed grey."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Deletion: lower is better", "Insertion: higher is better"),
        horizontal_spacing=0.08,
    )
    x = np.asarray(fractions, dtype=np.float64) * 100
    for col, curves in ((1, deletion), (2, insertion)):
        for i, (name, curve) in enumerate(curves.items()):
            area = float(np.trapezoid(curve, fractions))
            reference = name.lower().startswith("random")
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=np.asarray(curve) * 100,
                    mode="lines",
                    name=f"{name}",
                    legendgroup=name,
                    showlegend=col == 1,
                    line={
                        "color": MUTED if reference else RUN_COLOURS[i % len(RUN_COLOURS)],
                        "dash": "dash" if reference else "solid",
                    },
                    hovertemplate=f"{name}<br>%{{x:.0f}} % of pixels<br>p %{{y:.1f}} %"
                    f"<br>area {area:.3f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="pixels removed (%)", range=[0, 100], row=1, col=1)
    fig.update_xaxes(title_text="pixels inserted (%)", range=[0, 100], row=1, col=2)
    fig.update_yaxes(title_text="probability of the class (%)", range=[0, 102], row=1, col=1)
    fig.update_yaxes(range=[0, 102], row=1, col=2)
    fig.update_layout(
        template=LENS_TEMPLATE,
        title={  # the pad keeps the subtitle clear of the panels' own titles
            **title_layout(
                title or "Faithfulness: deletion and insertion",
                f"mean over {images} test images · removed pixels black, insertion from the "
                "blurred image · pixels in each method's order",
            ),
            "pad": {"b": 60},
        },
        width=1000,
        height=480,
        legend={"orientation": "h", "y": -0.22, "x": 0},
        margin={"b": 110},
    )
    return fig


def auc_table(table: pd.DataFrame, *, title: str = "") -> go.Figure:
    """The faithfulness table (Faithfulness.table()) with the best method per column bold."""
    deletion = table["deletion AUC ↓"].to_numpy(dtype=np.float64)
    insertion = table["insertion AUC ↑"].to_numpy(dtype=np.float64)
    methods = table["method"].tolist()
    real = np.array([not m.lower().startswith("random") for m in methods])

    def marked(values: np.ndarray, best: int) -> list[str]:
        return [f"<b>{v:.4f}</b>" if i == best else f"{v:.4f}" for i, v in enumerate(values)]

    best_deletion = int(np.flatnonzero(real)[np.argmin(deletion[real])]) if real.any() else -1
    best_insertion = int(np.flatnonzero(real)[np.argmax(insertion[real])]) if real.any() else -1
    fig = go.Figure(
        go.Table(
            columnwidth=[220, 140, 140, 80],
            header={
                "values": ["method", "deletion AUC ↓", "insertion AUC ↑", "images"],
                "align": ["left", "right", "right", "right"],
                "fill_color": "#f3f4f6",
                "font": {"size": 13},
            },
            cells={
                "values": [
                    methods,
                    marked(deletion, best_deletion),
                    marked(insertion, best_insertion),
                    [f"{int(n):,}" for n in table["images"]],
                ],
                "align": ["left", "right", "right", "right"],
                "height": 28,
                "font": {"size": 13},
            },
        )
    )
    fig.update_layout(
        template=LENS_TEMPLATE,
        title=title_layout(
            title or "Which method is most faithful", "bold: the best of the methods"
        ),
        width=640,
        height=150 + 28 * len(methods),
        margin={"l": 20, "r": 20, "t": 90, "b": 10},
    )
    return fig
