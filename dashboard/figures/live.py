"""The Train page's live view: the figures drawn from one copy of a training model's weights
(filters of two conv layers, one test image, its maps at a layer, the prediction)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import plotly.graph_objects as go

from dashboard.figures.activations import activation_grid
from dashboard.figures.filters import filter_grid
from dashboard.figures.images import image_figure, probability_bars

if TYPE_CHECKING:
    from dashboard.training.live import LiveView

# px: the longer side of a live mosaic. A mosaic's figure is this plus 150 px wide, so two fit
# side by side at 1280 px unshrunk: a shrunk figure's titles run past its edge.
SIDE = 250
TOP_CLASSES = 5


class LiveFigures(NamedTuple):
    first: go.Figure | None  # the first conv layer's filters (None: the model has no conv)
    later: go.Figure | None  # the chosen later conv layer's (None: none chosen)
    image: go.Figure
    maps: go.Figure
    prediction: go.Figure


def live_figures(
    view: LiveView, classes: list[str], layer: str, first: str | None, later: str | None
) -> LiveFigures:
    """Every figure of the live view (the page says once where in the run the weights are)."""

    def filters(name: str | None, weights) -> go.Figure | None:
        if name is None or weights is None:
            return None
        fig = filter_grid(weights, title=f"{name} filters", max_side=SIDE)
        c_out, c_in, kh, kw = weights.shape
        # One line: the page's caption gives the colour scale, and at this size the grid's
        # own two-line subtitle ran into the mosaic.
        mean = f", mean of {c_in} input channels" if c_in > 1 else ""
        fig.update_layout(title_subtitle_text=f"{c_out} filters of {kh}×{kw}{mean}")
        return fig

    maps = activation_grid(view.maps, title=f"{layer} maps", max_side=SIDE)
    prediction = probability_bars(
        view.probabilities, classes, true_class=view.label, top=TOP_CLASSES, title="Prediction"
    )
    prediction.update_layout(margin_r=64)  # "100.0 %" beside the longest bar, in a third
    return LiveFigures(
        first=filters(first, view.first_filters),
        later=filters(later, view.later_filters),
        image=image_figure(view.image, title=f"Test image · {classes[view.label]}"),
        maps=maps,
        prediction=prediction,
    )
