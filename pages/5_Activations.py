"""Activations: what every layer of the selected model makes of one image — its feature maps
before and after the activation function, which channels never fire, the prediction, and
where the model looked (Grad-CAM).

Other pages open an image here by setting `st.session_state[inputs.IMAGE_INDEX_KEY]` (and
`inputs.SOURCE_KEY` to `inputs.SOURCE_TEST`) before switching to this page, or by a link with
`?image=INDEX`. The chosen layer and neuron are kept under `inputs.LAYER_KEY` and
`inputs.NEURON_KEY` for the convolution lab.
"""

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Activations")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
from dashboard import data  # noqa: E402
from dashboard.analysis import activation_maps, inputs  # noqa: E402
from dashboard.ui import activations as activations_ui  # noqa: E402
from dashboard.ui import image_input  # noqa: E402

COMPARE_KEY = "lens_compare_index"

# --------------------------------------------------------------------------- model and data

try:
    model, view = ui.load_model(selection)
    mtime = ui.mtime_of(selection.model_key)
    flow = ui.shape_flow(selection.model_key, view.input_shape, mtime)
except LensError as err:
    st.title("Activations")
    ui.show_error(err)
    st.stop()

# The selected dataset's test images when they fit the model (channels and classes); any
# model also takes an uploaded or drawn image, resized to its own input.
outputs = flow.output_shape[-1] if flow.output_shape else len(view.classes)
split, unfit, like, unread = None, "", None, None
try:
    like = data.dataset_info(selection.dataset, data_root=ui.data_root())
    channels = view.input_shape[0]
    if like.channels != channels:
        unfit = f"{view.label} takes {channels}-channel images, {like.title} has {like.channels}"
    elif outputs != like.num_classes:
        unfit = f"{view.label} has {outputs:,} outputs, {like.title} {like.num_classes} classes"
    else:
        split = ui.load_data(selection, view)
except LensError as err:  # the data cannot be read: said below; uploads and drawings work
    unread = err
split_id = ui.data_id(split) if split is not None else ""
if split is not None:
    info = split.info
    classes = view.classes if len(view.classes) == info.num_classes else info.classes
else:
    zoo = selection.model_key.startswith(ui.ZOO_PREFIX)  # ImageNet weights: ImageNet's names
    classes = inputs.class_names(outputs, view.classes, imagenet=zoo)
    info = inputs.own_input(view.input_shape, classes, imagenet=zoo, like=like)
st.title("Activations")
st.caption(
    f"**{ui.plain(view.label)}** on {ui.plain(info.title)} — what each layer makes of one "
    "image: its feature maps, the channels that never fire, the prediction and where the "
    "model looked."
)
if unread is not None:
    ui.show_error(unread)
ui.untrained_warning(
    view,
    "These maps come from a model that has learned "
    "nothing yet: the patterns are the random filters' responses, and the prediction is "
    "a guess. Train the model or pick a checkpoint to see learned features.",
)
if flow.broken is not None:
    st.error(
        f"{view.label} cannot take its own input: {flow.broken.reason}", icon=":material/warning:"
    )
    st.stop()
if unfit:
    st.info(
        f"The {selection.dataset} test images do not fit this model ({ui.plain(unfit)}). Upload "
        f"or draw an image: it is resized to the model's {info.title.removeprefix('its own ')}"
        f" and read with the model's own {len(classes):,} classes"
        + (" (ImageNet's)." if classes[0] != "class 0" and outputs == 1000 else "."),
        icon=":material/info:",
    )

# --------------------------------------------------------------------------- the input

index = image_input.opened_index(split)  # from a link (?image=123) or another page
top = st.columns([1.05, 1, 1.25], gap="medium")
with top[0]:
    st.subheader("Input")
    source, prepared, index = image_input.pick_input(split, info, classes, selection, index)

x = inputs.model_input(prepared.pixels, info)
try:
    x_key = inputs.input_key(x.numpy())
    result = activations_ui.forward(selection.model_key, mtime, x_key, model, x)
except LensError as err:
    ui.show_error(err)
    st.stop()
probabilities = result["probabilities"]

# Figures of one input depend on the model, the input's pixels (item.key), the class names and
# the normalization the model's input was made with: all in their keys.
model_id = (selection.model_key, mtime, ui.info_key(info), tuple(classes))
shown_image = activation_maps.display_pixels(prepared.pixels)
seen_shape = tuple(x.shape[1:])
comparing = split is not None and bool(st.session_state.get(activations_ui.TWO_KEY, False))

if comparing:  # both inputs side by side below the layer controls; here, the second's pick
    if inputs.parse_index(st.session_state.get(COMPARE_KEY), len(split)) is None:
        st.session_state[COMPARE_KEY] = (index + 1) % len(split)
    with top[1]:
        st.subheader("Second input")
        second_at = st.number_input(
            f"Test image (0 – {len(split) - 1})",
            0,
            len(split) - 1,
            key=ui.keep(COMPARE_KEY, (index + 1) % len(split)),
            on_change=ui.store,
            args=(COMPARE_KEY,),
            step=1,
        )
        st.caption("Both images, predictions and maps are set side by side below.")
else:
    with top[1]:
        activations_ui.input_images(prepared, source, seen_shape)
    with top[2]:
        activations_ui.prediction(prepared, probabilities, classes, model_id)

# --------------------------------------------------------------------------- layer controls

st.divider()
layers = inputs.viewable_layers(flow)
choice = activations_ui.layer_controls(flow, layers, split is not None)
dead = activations_ui.dead_channels(
    selection, mtime, flow, choice.layer, layers, split, split_id, model
)
maps_view = activations_ui.MapsView(choice, dead, model, model_id)

# --------------------------------------------------------------------------- the maps

maps, maps_chart = maps_view.figure(result, prepared)
order = maps_view.order_of(maps)
if comparing:  # both inputs: images and predictions side by side, then each one's maps in full
    second = inputs.test_image(split, int(second_at))
    second_x = inputs.model_input(second.pixels, info)
    second_result = activations_ui.forward(selection.model_key, mtime, second.key, model, second_x)
    pair = ((prepared, result, source), (second, second_result, inputs.SOURCE_TEST))
    shared = maps_view.compared_range([res for _, res, _ in pair])
    sides = st.columns(2, gap="medium")
    for column, (item, res, how) in zip(sides, pair, strict=True):
        with column:
            activations_ui.input_images(item, how, seen_shape)
            title = f"Prediction — {item.name}"
            activations_ui.prediction(item, res["probabilities"], classes, model_id, title)
    for item, res, _ in pair:  # full width: the same size as a single input's maps
        ui.figure(maps_view.figure(res, item, shared)[1], f"maps-{item.name}", width="content")
    st.caption(
        f"Both inputs' maps on one colour scale ({shared[0]:.3g} … {shared[1]:.3g})."
        if shared is not None
        else "Each channel scaled to its own range, in both inputs."
    )
else:
    ui.figure(maps_chart, "maps", width="content")
if dead.dead is not None:
    st.caption(
        f"Dead = never above zero after the activation ({dead.layer}) on any of the first "
        f"{dead.count:,} test images: {int(dead.dead.sum())} of {len(dead.dead)} channels."
    )

# --------------------------------------------------------------------------- below the maps

activations_ui.channel_statistics(maps, order, dead, choice.what)
with st.expander(
    "One neuron: its value and the input pixels it sees", expanded=ui.neuron_window_opened()
):
    activations_ui.one_neuron(maps, choice, flow, shown_image, prepared.key)
activations_ui.grad_cam_section(
    selection, mtime, flow, model, x, prepared, probabilities, classes, model_id, shown_image
)
if choice.show_all:
    activations_ui.every_layer(layers, result, choice.scale, prepared, model_id)
