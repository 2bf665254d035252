"""Channels: what each channel of a layer responds to across the test images — the whole layer
as tiles (each channel's best image cropped to its receptive field), and for one channel its top
images, its mean maximum per class with the class-selectivity index, the histogram of its maxima,
and on request its feature visualization (an input optimized to excite it).

Widgets and layout only: `dashboard.analysis.channels` picks the layers and keeps the atlas and the
visualizations in the result cache; `analysis.atlas` computes, `figures.atlas` draws.
"""

from functools import partial

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Channels", icon=":material/blur_on:")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
import numpy as np  # noqa: E402

from dashboard import data, figures  # noqa: E402
from dashboard.analysis import atlas, channels, feature_vis, metrics, probe  # noqa: E402
from dashboard.figures import atlas as atlas_figures  # noqa: E402
from dashboard.ui import channels as channels_ui  # noqa: E402

LAYER_KEY, IMAGES_KEY, CHANNEL_KEY = "ch_layer", "ch_images", channels_ui.CHANNEL_KEY
ORDER_KEY, STEPS_KEY, IMAGES_FOR_KEY = "ch_order", "ch_steps", "ch_images_for"
COLUMN_ROOM = 360  # pixels a figure's title has in half the page on a 1280-pixel screen

st.title("Channels")
try:
    model, view = ui.load_model(selection)
    flow = ui.shape_flow(selection.model_key, view.input_shape, ui.mtime_of(selection.model_key))
except LensError as err:
    ui.show_error(err)
    st.stop()
st.caption(
    f"**{ui.plain(view.label)}** — what each channel of a layer responds to across the test "
    "images: its top images cropped to what it sees, the classes it prefers, how often it fires."
)
ui.untrained_warning(
    view,
    "These channels have learned nothing yet: their top "
    "images show what random filters happen to respond to.",
)
if flow.broken is not None:
    st.error(f"{ui.plain(view.label)} cannot take its own input: {ui.plain(flow.broken.reason)}")
    st.stop()
kinds = channels.layer_kinds(model, flow)
if not kinds:
    st.info(
        f"{ui.plain(view.label)} has no conv, activation or pooling layer with channel maps, "
        "so there are no channels to look at.",
        icon=":material/info:",
    )
    st.stop()

try:
    like = data.dataset_info(selection.dataset, data_root=ui.data_root())
    outputs = flow.output_shape[-1] if flow.output_shape else len(view.classes)
    unfit = channels.unfit_reason(view.label, view.input_shape, outputs, like)
    if unfit:
        st.info(
            f"The {ui.plain(selection.dataset)} test images do not fit this model "
            f"({ui.plain(unfit)}): pick a dataset it was made for in the sidebar.",
            icon=":material/info:",
        )
        st.stop()
    split = ui.load_data(selection, view)
except LensError as err:
    ui.show_error(err)
    st.stop()
classes = [str(c) for c in split.info.classes]

# --------------------------------------------------------------------------- controls

layers = list(kinds)
fallback = channels.default_layer(kinds)
if st.session_state.get(LAYER_KEY) not in kinds:  # the default, in the address bar too
    st.session_state[LAYER_KEY] = fallback
ui.url_bound("layer", LAYER_KEY, ui.one_of(layers))
panel = ui.controls().columns([2.4, 1.4, 1.6], gap="medium")
layer = panel[0].selectbox(
    "Layer",
    layers,
    **ui.kept(LAYER_KEY, layers, fallback),
    format_func=lambda k: (
        f"{k} · {kinds[k]} · " + "×".join(map(str, flow.find(*probe._parse_key(k)).output_shape))
    ),
    help="Conv, activation and pooling layers in forward order; the last conv is the default. "
    "A conv's values are those entering its activation function.",
)
most = len(split)
suggested = channels.default_images(flow.mult_adds, most)
if st.session_state.get(IMAGES_FOR_KEY) != selection.model_key:  # another model: its default
    st.session_state[IMAGES_FOR_KEY] = selection.model_key
    st.session_state[IMAGES_KEY] = suggested
st.session_state[IMAGES_KEY] = min(int(st.session_state.get(IMAGES_KEY, suggested)), most)
count = panel[1].number_input(
    f"Test images (of {most:,})",
    min_value=min(channels.MIN_IMAGES, most),
    max_value=most,
    step=500,
    **ui.held(IMAGES_KEY, suggested),
    help=f"The first images of the test split; more take longer the first time. The default, "
    f"{suggested:,}, keeps this model's first atlas to seconds on a CPU.",
)
order_by = panel[2].selectbox(
    "Order the tiles by",
    channels.TILE_ORDERS,
    **ui.kept(ORDER_KEY, channels.TILE_ORDERS, channels.TILE_ORDERS[0]),
)

# --------------------------------------------------------------------------- the atlas

images = data.take_first(split, int(count))
model_id, images_id = ui.model_id(selection), ui.data_id(images)
try:
    with ui.progress_bar(f"Reading {layer} over the test images") as progress:
        result = channels.layer_atlas(model, images, layer, model_id, progress)
    with ui.progress_bar("Classifying the test images") as progress:
        predicted = metrics.cached_predict(model, images, model_id, progress=progress).predicted
except LensError as err:
    ui.show_error(err)
    st.stop()
labels = images.labels.numpy()
settings = feature_vis.VisSettings(
    steps=int(st.session_state.get(STEPS_KEY, channels.VIS_STEPS)), threads=1
)
vis_key = (model_id, layer, split.info.input_shape, settings.steps, settings.seed)
vis = None
if channels.visualization_stored(model_id, layer, split.info, settings):
    vis = channels.visualizations(model, layer, split.info, model_id, settings)

C = result.channels
st.subheader(f"All {C} channels of {layer}")
st.caption(
    f"Each tile: the channel's best image of {result.images:,}, cropped to the "
    f"{int(result.rf[0])}×{int(result.rf[1])}-pixel receptive field of its maximum"
    + (" (left: its feature visualization)" if vis is not None else "")
    + f". Values: {ui.plain(result.values_of)}. Hover a tile for its numbers."
)
numbers = {
    "selectivity": result.selectivity,
    "mean activation": result.mean_activation,
    "dead share": result.dead_share,
}


def layer_tiles():
    crops = channels.best_crops(result, images.images)
    pictures = vis.rgb() if vis is not None else None
    return atlas_figures.layer_atlas(
        atlas_figures.channel_tiles(crops, pictures, size=channels.TILE_SIDE),
        numbers,
        order=channels.tile_order(result, order_by),
        title=f"{layer}: {C} channels by {order_by}",
        subtitle=f"{result.images:,} test images · click a tile to open its channel",
        max_side=channels.tiles_side(C),
    )


tiles_key = ("channel-tiles", model_id, images_id, layer, order_by, vis is not None, vis_key)
ui.figure(
    ui.cached_figure(tiles_key, layer_tiles),
    f"{layer}-channels",
    width="content",
    key=channels_ui.TILES_CHART_KEY,
    on_select=channels_ui.tile_clicked,
    selection_mode=("points",),
)
channels_ui.report_toggle(selection.model_key, layer, result.images, settings.steps)

# --------------------------------------------------------------------------- one channel

st.divider()
st.session_state[CHANNEL_KEY] = min(int(st.session_state.get(CHANNEL_KEY, 0)), C - 1)  # new layer
ui.url_bound("channel", CHANNEL_KEY, ui.index_below(C))
pick = st.columns([1, 3], gap="medium", vertical_alignment="bottom")
channel = int(
    pick[0].number_input(f"Channel (0 – {C - 1})", 0, C - 1, step=1, **ui.held(CHANNEL_KEY, 0))
)
favourite = int(result.preferred_class[channel])
pick[1].markdown(
    f"**Channel {channel}** · selectivity `{result.selectivity[channel]:.3f}` · fires most for "
    f"**{ui.plain(classes[favourite])}** · never fires on `{result.dead_share[channel]:.1%}` of "
    f"the images · mean activation `{result.mean_activation[channel]:.4g}`"
)

examples = result.top(channel)
base_key = (model_id, images_id, layer, channel)


def examples_figure(kind: str, shown: list[atlas.Example], chart: dict, **titles: str) -> None:
    """A grid of examples' receptive-field crops, drawn once per model, images and channel."""

    def build():
        crops = atlas.example_crops(result, images.images, shown)
        return atlas_figures.top_examples_grid(
            crops, shown, labels, classes, predicted=predicted, channel=channel, **titles
        )

    column_figure(kind, build, **chart)


def column_figure(kind: str, build, **chart) -> None:
    """A figure of the chosen channel in a half-page column, its titles wrapped to fit."""

    def fitted():
        fig = build()
        figures.fit_titles(fig, room=COLUMN_ROOM)
        return fig

    ui.figure(ui.cached_figure((kind, *base_key), fitted), f"{layer}-{channel}-{kind}", **chart)


columns = st.columns(2, gap="medium")
with columns[0]:
    examples_figure(
        "top",
        examples,
        {
            "key": channels_ui.EXAMPLES_CHART_KEY,
            "on_select": partial(channels_ui.example_clicked, layer, channel, examples),
            "selection_mode": ("points",),
        },
        subtitle="activation, true → predicted class · click a crop: Activations",
    )
channels_ui.open_clicked_example()
with columns[1]:
    bars = partial(
        atlas_figures.selectivity_bars,
        result.class_means[channel],
        classes,
        channel=channel,
        selectivity=float(result.selectivity[channel]),
    )
    column_figure("classes", bars)
    histogram = partial(
        atlas_figures.maxima_histogram,
        result.hist_counts[channel],
        result.hist_edges[channel],
        channel=channel,
        dead_share=float(result.dead_share[channel]),
        title=f"Channel {channel}: its maximum per image",  # one line in a column
    )
    column_figure("maxima", histogram)
    channels_ui.first_layer_filter(model, layer, channel)

if result.bottom_index is not None:
    with st.expander(f"The {len(examples)} most negative images of channel {channel}"):
        negatives = result.bottom(channel)
        examples_figure(
            "bottom",
            negatives,
            {},
            title=f"Channel {channel}: most negative {len(negatives)} images",
            subtitle="values before the activation function, cropped to the receptive field",
        )

# --------------------------------------------------------------------------- feature visualization

st.divider()
st.subheader("Feature visualization")
row = st.columns([1, 3], gap="medium", vertical_alignment="bottom")
row[0].number_input(
    "Steps", 16, 1024, step=16, **ui.held(STEPS_KEY, channels.VIS_STEPS),
    help="Adam steps per image: more give cleaner pictures and take longer.",
)  # fmt: skip
prior = "a decorrelated Fourier image" if view.input_shape[0] == 3 else "a total-variation penalty"
if vis is None:
    seconds = channels.visualization_seconds(C, settings.steps)
    row[1].caption(
        f"An input optimized to excite each of the {C} channels (jitter, scale and rotation "
        f"each step; {prior}). Slow: about {seconds:,.0f} s for a small model, minutes for a "
        "large one."
    )
    channels_ui.visualize_button(model, layer, split.info, model_id, settings, C)
else:
    k = int(np.flatnonzero(vis.units == channel)[0])
    row[1].caption(
        f"Channel {channel}: an input optimized for {int(vis.steps[0])} steps (seed "
        f"{int(vis.seed[0])}; {prior}) to raise the channel's mean over its map: mean "
        f"`{float(vis.objective[k]):.4g}`, maximum `{float(vis.maximum[k]):.4g}` (the best test "
        f"image's maximum: `{float(examples[0].activation):.4g}`). More steps: another picture."
    )
    picture = vis.rgb()[k]
    st.image(
        atlas_figures.resize_nearest(picture[None], 8 * picture.shape[0])[0],
        caption=f"{layer}, channel {channel}",
        width=224,
    )
with st.expander(f"The {len(classes)} classes, visualized"):
    channels_ui.class_section(model, split.info, model_id, settings)
