"""The Train page's live view (ConvNetJS's demo): while a run trains, its first conv layer's
filters, a later conv layer's, and one fixed test image's maps at a chosen layer with the
prediction, redrawn from the newest copy of the weights every few seconds until Stop or the
end (training/live.py takes the copies)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.show import figure, plain, show_error
from dashboard.ui.state import kept
from dashboard.ui.training_runs import clock, session_runs

if TYPE_CHECKING:
    from dashboard.training import live

LIVE_LAYER_KEY, LIVE_CONV_KEY, LIVE_IMAGE_KEY = (
    "train_live_layer",
    "train_live_conv",
    "train_live_image",
)
NO_LATER = "(none)"


def live_controls(weights: live.LiveWeights) -> tuple[str | None, str, int]:
    """The later conv layer, the layer whose maps show, and the test image (kept across runs
    and pages; a choice the new run's model lacks falls back to its default)."""
    bar = st.container(horizontal=True, gap="medium")
    later_choices = weights.convs[1:] or [NO_LATER]
    later = bar.selectbox(
        "Later conv layer",
        later_choices,
        help="A deeper conv layer's filters, beside the first one's (its input-channel mean).",
        **kept(LIVE_CONV_KEY, later_choices, later_choices[-1]),
    )
    default_layer = (
        weights.convs[0]
        if weights.convs and weights.convs[0] in weights.layers
        else weights.layers[0]
    )
    layer = bar.selectbox(
        "Maps of layer",
        weights.layers,
        help="The layer whose feature maps show for the test image.",
        **kept(LIVE_LAYER_KEY, weights.layers, default_layer),
    )
    images = list(range(len(weights.labels)))
    image = bar.selectbox(
        "Test image",
        images,
        format_func=lambda i: f"{i} ({weights.classes[weights.labels[i]]})",
        help="One of the first test images of the run's dataset: the same image all run long.",
        **kept(LIVE_IMAGE_KEY, images, 0),
    )
    return (None if later == NO_LATER else later), layer, int(image)


def draw_live(figs, first: str | None, later: str | None) -> None:
    """The live figures: the two filter grids side by side, then image, maps and prediction."""
    row = st.columns(2)
    for column, name, fig, key in (
        (row[0], first, figs.first, "first"),
        (row[1], later, figs.later, "later"),
    ):
        if fig is not None:
            with column:
                figure(fig, f"live-filters-{name}", key=f"live_filters_{key}")
    image, maps, guess = st.columns([1, 1.6, 1.6], gap="medium")
    with image:
        figure(figs.image, "live-image", key="live_image")
    with maps:
        figure(figs.maps, "live-maps", key="live_maps")
    with guess:
        figure(figs.prediction, "live-prediction", key="live_prediction")


def live_views() -> None:
    """The newest run's live view, redrawn by a fragment while it trains."""
    from dashboard.training import live

    kept_runs = session_runs()
    if not kept_runs:
        return
    run = kept_runs[-1]
    st.subheader("Inside the model as it learns")
    weights = run.live
    if weights is None:
        if run.live_error:
            st.caption(f"No live view for this model: {plain(run.live_error)}")
        return
    snapshot = weights.latest()
    later, layer, image = live_controls(weights)
    if snapshot is None:
        st.caption("The filters and maps appear after the first logged steps…")
        return
    try:
        view = weights.view(snapshot, image, layer, later)
    except LensError as err:
        show_error(err)
        return
    from dashboard.figures.live import live_figures

    moment = "at the end of the run" if run.done else f"{clock(snapshot.elapsed)} into the run"
    st.markdown(f"**The weights after {snapshot.where}** ({moment})")
    first = weights.convs[0] if weights.convs else None
    draw_live(live_figures(view, weights.classes, layer, first, later), first, later)
    st.caption(
        f"Redrawn from a fresh copy of the weights every {live.LIVE_EVERY_S:g} s while the run "
        "trains. Filters on one symmetric scale per layer (red positive, blue negative); the "
        "maps and the prediction are the same test image's all run long."
    )
