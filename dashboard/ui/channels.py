"""The Channels page's clicks and choices: a tile picks its channel, an example opens on the
Activations page at the position that fired, a layer's atlas joins the HTML report, and the
feature visualization can be stopped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.navigation import clicked_customdata, open_in_activations
from dashboard.ui.show import figure, progress_bar, show_error

if TYPE_CHECKING:  # torch-heavy: loaded by the page after its first paint
    from torch import nn

    from dashboard.analysis.atlas import Example
    from dashboard.analysis.feature_vis import VisSettings
    from dashboard.data import DatasetInfo

CHANNEL_KEY = "ch_channel"
TILES_CHART_KEY, EXAMPLES_CHART_KEY = "ch_tiles_chart", "ch_examples_chart"
OPEN_KEY = "ch_open"  # an example clicked: (image index, layer, (channel, y, x))
REPORT_ATLASES_KEY = "lens_report_atlases"  # {model key: [[layer, images, steps], …]}
VIS_STOP_KEY = "ch_vis_stop"


def tile_clicked() -> None:
    """A tile of the layer's atlas was clicked: its channel becomes the chosen one."""
    custom = clicked_customdata(TILES_CHART_KEY)
    if custom is not None:
        st.session_state[CHANNEL_KEY] = int(custom[0])


def example_clicked(layer: str, channel: int, examples: Sequence[Example]) -> None:
    """An example's crop was clicked: open its image on Activations once the page has run
    (a page cannot be switched from inside a callback)."""
    custom = clicked_customdata(EXAMPLES_CHART_KEY)
    if custom is None:
        return
    index = int(custom[0])
    chosen = next((e for e in examples if e.index == index), None)
    if chosen is not None:
        y, x = chosen.position
        st.session_state[OPEN_KEY] = (index, layer, (channel, int(y), int(x)))


def open_clicked_example() -> None:
    """Go to Activations with the clicked example, if one was clicked in this run."""
    request = st.session_state.pop(OPEN_KEY, None)
    if request is not None:
        index, layer, neuron = request
        open_in_activations(index, layer=layer, neuron=neuron)


def report_atlases(model_key: str) -> list[list]:
    """The layers whose atlases go into this model's HTML report: [layer, images, steps]."""
    return list(st.session_state.get(REPORT_ATLASES_KEY, {}).get(model_key, []))


def report_toggle(model_key: str, layer: str, images: int, steps: int) -> None:
    """A toggle putting this layer's atlas (over these images, with the feature visualizations
    of these steps when made) into the model's HTML report, built on the Model page."""
    chosen = st.session_state.setdefault(REPORT_ATLASES_KEY, {})
    entries = [e for e in chosen.get(model_key, []) if e[0] != layer]
    included = any(e[0] == layer for e in chosen.get(model_key, []))
    if st.toggle(
        "In the HTML report",
        value=included,
        key=f"ch_report_{model_key}_{layer}",
        help="Adds this layer's atlas (every channel's top images, selectivity and dead share, "
        "and the feature visualizations once made) to the report the Model page builds.",
    ):
        entries.append([layer, int(images), int(steps)])
    chosen[model_key] = entries
    if entries:
        names = ", ".join(e[0] for e in entries)
        st.caption(f"The report of this model will hold the atlas of: {names}.")


def visualize_button(
    model: nn.Module,
    layer: str,
    info: DatasetInfo,
    model_id: str,
    settings: VisSettings,
    count: int,
) -> None:
    """'Visualize all channels', with a progress bar and a Stop button while it runs: Stop
    reruns the page, which ends the work at its next step (nothing of it is kept)."""
    from dashboard.analysis import channels

    if st.session_state.get(VIS_STOP_KEY):
        st.info("Stopped: no visualization was kept.", icon=":material/stop_circle:")
    if not st.button(f"Visualize all {count} channels", icon=":material/auto_awesome:"):
        return
    st.button("Stop", icon=":material/stop_circle:", key=VIS_STOP_KEY)
    try:
        with progress_bar(f"Optimizing {count} images", unit="steps") as progress:
            channels.visualizations(model, layer, info, model_id, settings, progress)
    except LensError as err:
        show_error(err)
        st.stop()
    st.rerun()  # the page's tiles take the visualizations in


def first_layer_filter(model: nn.Module, layer: str, channel: int) -> None:
    """For a conv layer that reads the image itself, the channel's filter weights: what it
    looks for in the raw pixels."""
    from dashboard import figures
    from dashboard.analysis import probe

    name = layer.split("#")[0]
    convs = [n for n, _ in probe.conv_layers(model)]
    if not convs or convs[0] != name:
        return
    weights = probe.filter_weights(model, name).float().numpy()[channel : channel + 1]
    title = f"{name}, filter {channel}"
    if weights.shape[1] == 3:
        fig = figures.rgb_filters(weights, title=title, max_side=240)
    else:
        fig = figures.filter_grid(weights, title=title, max_side=240)
    figure(fig, f"{name}-filter-{channel}", width="content")


def class_section(
    model: nn.Module, info: DatasetInfo, model_id: str, settings: VisSettings
) -> None:
    """The class model visualizations (Simonyan et al. 2014): per output class, an input
    optimized to raise its logit; made on request, kept on disk."""
    from dashboard.analysis import channels
    from dashboard.figures import atlas as atlas_figures

    count = len(info.classes)
    if not channels.class_visualization_stored(model_id, info, settings):
        st.caption(
            f"Per class, an input optimized to raise its logit (Simonyan et al. 2014), "
            f"{settings.steps} steps."
        )
        if not st.button(f"Visualize the {count} classes", icon=":material/category:"):
            return
        st.button("Stop", icon=":material/stop_circle:", key=VIS_STOP_KEY + "_classes")
        with progress_bar(f"Optimizing {count} images", unit="steps") as progress:
            channels.class_visualizations(model, info, model_id, settings, progress)
    vis = channels.class_visualizations(model, info, model_id, settings)
    pictures = vis.rgb()
    side = 4 * pictures.shape[1]
    big = atlas_figures.resize_nearest(pictures, side)
    st.image(list(big), caption=[str(info.classes[int(u)]) for u in vis.units], width=side)
