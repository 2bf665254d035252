"""Filters: every conv layer's weights as one tiled image, their distribution, how they changed
during training, and the first layer beside the classic Prewitt/Sobel edge detectors."""

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Filters")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
from dashboard.analysis import filters  # noqa: E402
from dashboard.ui import filters as cached  # noqa: E402

# Session-state keys: stable names, so a later URL binding can seed them.
LAYER_KEY, SCALE_KEY, CHANNELS_KEY = "filters_layer", "filters_scale", "filters_channels"
CHANNEL_KEY, EPOCH_KEY, IMAGE_KEY = "filters_channel", "filters_epoch", "filters_image"
SCALES = ("shared", "per filter")
ALL_CHANNELS, ONE_CHANNEL = "mean of all input channels", "one input channel"

try:
    model, view = ui.load_model(selection)
    history = ui.filter_history(selection)
except LensError as err:
    ui.show_error(err)
    st.stop()

st.title("Filters")
st.caption(f"**{ui.plain(view.label)}** — the weights each conv layer slides over its input.")
ui.untrained_warning(
    view,
    "These filters are where training starts; train the "
    "model (or pick a checkpoint) to see what it learns.",
)

layers = filters.conv_layer_list(model)
if not layers:
    st.info(f"{ui.plain(view.label)} has no Conv2d layer, so there are no filters to show.")
    st.stop()
by_name = {layer.name: layer for layer in layers}
if st.session_state.get(LAYER_KEY) not in by_name:  # the default, in the address bar too
    st.session_state[LAYER_KEY] = layers[0].name
ui.url_bound("layer", LAYER_KEY, ui.one_of(by_name))
ui.url_bound("scale", SCALE_KEY, ui.one_of(SCALES))

controls = ui.controls().columns([3, 1.3, 2.2], gap="medium")  # folded away when presenting
name = controls[0].selectbox(
    "Conv layer",
    list(by_name),
    **ui.kept(LAYER_KEY, list(by_name), layers[0].name),
    format_func=lambda n: by_name[n].label,
    help=f"{len(layers)} conv layers, in the order the model defines them.",
)
layer = by_name[name]
first = name == layers[0].name
scale = controls[1].radio(
    "Colour scale",
    SCALES,
    **ui.kept(SCALE_KEY, SCALES, SCALES[0]),
    help="Shared: one symmetric scale for the whole layer, so strong and weak filters compare. "
    "Per filter: each filter scaled by its own max |w|, so faint patterns show.",
)
channel: int | None = None
with controls[2]:
    if layer.in_channels > 1:
        channels_from = st.radio(
            "Input channels",
            [ALL_CHANNELS, ONE_CHANNEL],
            **ui.kept(CHANNELS_KEY, [ALL_CHANNELS, ONE_CHANNEL], ALL_CHANNELS),
            horizontal=True,
            help="Each filter has one kernel per input channel: their mean, or one of them.",
        )
        if channels_from == ONE_CHANNEL:
            last = layer.in_channels - 1  # a channel beyond this layer's becomes its last
            nearest = min(int(st.session_state.get(CHANNEL_KEY, 0)), last)
            channel = st.slider(
                "Input channel", 0, last, **ui.kept(CHANNEL_KEY, range(last + 1), nearest)
            )
    else:
        st.caption("One input channel: each filter is a single kernel.")

epochs = filters.history_epochs(history, name)
epoch: int | None = None
if epochs:
    epoch = st.select_slider(
        "Epoch",
        epochs,
        **ui.kept(EPOCH_KEY, epochs, epochs[-1]),
        format_func=lambda e: "0 (before training)" if e == 0 else str(e),
        help="Snapshots of this layer's filters saved during training.",
    )
elif history:
    saved = sorted({n for snapshot in history.values() for n in snapshot})
    st.caption(
        f"Per-epoch history was saved for {', '.join(saved)} only; this layer shows its final "
        "weights."
    )
elif selection.is_checkpoint:
    st.caption("No per-epoch history saved with this checkpoint: the weights as they are now.")
elif view.untrained:
    st.caption("No per-epoch history: this model has not been trained.")
else:
    st.caption("No per-epoch history: pretrained weights, as they were published.")

mtime = ui.mtime_of(selection.model_key)
weights = cached.weights_of(model, history, selection.model_key, mtime, name, epoch)
source = (selection.model_key, mtime, name, epoch)
when = "" if epoch is None else (" · before training" if epoch == 0 else f" · epoch {epoch}")

# Row 1: the filters, and beside them the classic kernels (first layer) or their histogram.
main = st.columns([3, 2], gap="large")
with main[0]:
    ui.figure(
        cached.grid_figure(weights, source, scale, channel, f"{name}{when}"),
        f"filters-{name}",
        width="content",
    )
histogram_place, stats_place = main[1], main[1]
if first:
    with main[1]:
        ui.figure(cached.classic_figure(), "classic-kernels", width="content")
    lower = st.columns([3, 2], gap="large")
    histogram_place = lower[0]
    stats_place = lower[1]
    if layer.in_channels == 3:
        with lower[0]:
            title = f"{name} as colour images{when}"
            rgb = cached.rgb_figure(weights, source, title)
            ui.figure(rgb, f"filters-rgb-{name}", width="content")
        histogram_place = lower[1]
with histogram_place:
    figure, stats = cached.histogram(weights, source, f"{name} weights{when}")
    ui.figure(figure, f"weights-{name}")
with stats_place:
    cells = st.columns(2)
    cells[0].metric("Mean", f"{stats.mean:.3g}")
    cells[1].metric("Std", f"{stats.std:.3g}")
    cells[0].metric("Min", f"{stats.min:.3g}")
    cells[1].metric("Max", f"{stats.max:.3g}")
    if len(epochs) > 1:
        moved = filters.drift(history, name)
        st.metric(
            f"Change since epoch {epochs[0]}",
            f"{moved[epoch]:.1%}",
            help="‖w(epoch) − w(start)‖ / ‖w(start)‖ over all of the layer's weights",
        )

if not first:
    st.caption(
        f"Pick the first layer ({layers[0].name}) to compare it with classic edge detectors."
    )
    st.stop()

st.subheader("Which learned filters are edge detectors?")
try:  # at its own size: one image is resized below, not the whole split
    split = ui.dataset_split(selection.dataset, "test")
except LensError as err:
    st.info(f"No test image to apply the filters to: {ui.plain(err)}")
    st.stop()
if layer.groups != 1 or layer.in_channels != split.info.channels:
    st.info(
        f"No test image to apply the filters to: {name} takes {layer.in_channels}-channel "
        f"images but {split.info.title} has {split.info.channels}; pick a dataset with "
        f"{layer.in_channels}-channel images."
    )
    st.stop()

ui.url_bound("image", IMAGE_KEY, ui.index_below(len(split.labels)))
pick = st.columns([1.2, 1, 4], vertical_alignment="center", gap="medium")
index = pick[0].number_input(
    f"Test image (0–{len(split.labels) - 1:,})",
    0,
    len(split.labels) - 1,
    **ui.kept(IMAGE_KEY, range(len(split.labels)), 0),
)
classes = view.classes or split.info.classes
label = classes[int(split.labels[int(index)])]
mean, std = filters.normalization(view.card, split.info)
size = view.input_shape[-1]
split_id = ui.data_id(split)  # the images themselves: a data root or folder of other files
shown, image = cached.sample_image(split, split_id, int(index), size, mean, std)
pick[1].image(shown, caption=ui.plain(f"{split.info.title} #{int(index):,}: {label}"))
pick[2].caption(
    "Each map below is what a kernel computes at every position of this image (red = positive, "
    "blue = negative). A learned filter whose map looks like a classic one's acts as an edge "
    "detector; the table under the maps names the closest classic kernel of each filter."
)
image_key = (split_id, int(index), size, mean, std)
classic_maps, learned_maps, matches = cached.responses(weights, source, image, image_key)
columns = st.columns([2, 3], gap="large")
with columns[0]:
    ui.figure(classic_maps, "classic-responses", width="content")
with columns[1]:
    ui.figure(learned_maps, f"responses-{name}", width="content")

st.markdown("**Nearest classic kernel of each learned filter**")
st.caption(
    "Cosine similarity between the filter as it acts on a gray image (its kernels summed over "
    "input channels) and each classic kernel resized to the filter's size; a negative cosine is "
    "the same edge with the opposite sign. |cosine| ≥ 0.8 is a close match."
)
ui.table(
    [
        {
            "Filter": m.filter,
            "Nearest classic kernel": m.kernel,
            "Cosine": round(m.cosine, 3),
            "Likeness": abs(m.cosine),
        }
        for m in sorted(matches, key=lambda m: -abs(m.cosine))
    ],
    width="content",
    height=min(38 + 35 * len(matches), 420),
    column_config={
        "Cosine": st.column_config.NumberColumn(format="%.3f"),
        "Likeness": st.column_config.ProgressColumn(
            "|cosine|", min_value=0.0, max_value=1.0, format="%.2f"
        ),
    },
)
