"""The Convolution lab on the selected model: one neuron's activation recomputed by hand (any
conv, linear or pooling layer, any test image), a test image's patch to convolve, and the
first layer's learned filters beside the classic kernels — with their cached work."""

import numpy as np
import streamlit as st
import torch

from dashboard import ui
from dashboard.analysis import inputs, lab, probe
from dashboard.analysis.lab import inputs as typed
from dashboard.analysis.lab.inputs import NEURON_CHANNEL, NEURON_LAYER, NEURON_X, NEURON_Y
from dashboard.base.errors import LensError
from dashboard.figures import lab as show
from dashboard.ui.lab_widgets import code, kept, number, plot, show_panels


def model_and_data(selection: ui.Selection):
    """(model, view, split, flow) of the sidebar's choice; None, said why, when they don't fit."""
    try:
        model, view = ui.load_model(selection)
        split = ui.load_data(selection, view)
        mtime = ui.mtime_of(selection.model_key)
        flow = ui.shape_flow(selection.model_key, view.input_shape, mtime)
        if flow.broken is not None:
            raise LensError(f"{view.label} cannot take these images: {flow.broken.reason}")
    except LensError as err:
        ui.show_error(err)
        return None
    return model, view, split, flow


@st.cache_data(max_entries=64, show_spinner="Recomputing the neuron…")
def neuron(key: tuple, _model, _x: torch.Tensor, _flow) -> lab.NeuronArithmetic:
    """`key`: (model key, mtime, split id, image index, layer, channel, y, x) — the cache's key
    (the split's id covers its pixels and normalization, see ui.data_id)."""
    layer, channel, y, x = key[4:]
    return lab.neuron_arithmetic(_model, _x, layer, channel, y, x, flow=_flow)


@st.cache_data(max_entries=16, show_spinner=False)
def classic_figure(split_id: str, size: int, index: int, _gray: np.ndarray):
    return show.classic_figure(_gray)


@st.cache_data(max_entries=16, show_spinner="Filtering the image…")
def learned_figures(model_key: str, mtime: float, split_id: str, index: int, _model, _x):
    """(the first layer's filters, their responses to the image, closest classic kernels)."""
    return show.learned_figures(_model, _x)


def image_picker(split) -> int:
    """The test image shared with the Activations page."""
    last = len(split) - 1
    return int(number(f"Test image (0 – {last:,})", inputs.IMAGE_INDEX_KEY, 0, high=last))


def untrained_warning(text: str) -> None:
    st.warning(text, icon=":material/casino:")


def patch_controls(dataset: str) -> None:
    """Pick a test image and the patch of it the worked example convolves; show it boxed."""
    split = ui.dataset_split(dataset, "test")
    _, c, h, w = split.images.shape
    cells = st.columns(3 if c == 1 else 4)
    with cells[0]:
        index = number("Test image", "lab_patch_index", 0, high=len(split) - 1)
    with cells[1]:
        top = number("Top", "lab_patch_top", 10, high=h - typed.PATCH)
    with cells[2]:
        left = number("Left", "lab_patch_left", 10, high=w - typed.PATCH)
    if c > 1:
        with cells[3]:
            kept(
                st.selectbox,
                "Channel",
                "lab_patch_channel",
                0,
                options=list(range(c)),
                format_func=lambda i: show.channel_name(i, c),
            )
    pixels = split.images[int(index)].numpy()
    box = typed.patch_box(int(top), int(left))
    title = f"{split.info.title} test image {index}"
    plot(show.boxed_image(pixels, box, title, "raw 0–255 values"), f"lab-patch-{index}")


def neuron_controls(split, records) -> tuple[int, probe.LayerRecord, str, int, int, int]:
    """(image index, layer record, its key, channel, y, x) of the neuron, with its widgets."""
    keys = [inputs.layer_key(r) for r in records]
    by_key = dict(zip(keys, records, strict=True))
    if st.session_state.get(NEURON_LAYER) not in by_key:
        st.session_state[NEURON_LAYER] = keys[0]
    cells = st.columns([1, 2.2, 0.8, 0.8, 0.8])
    with cells[0]:
        index = image_picker(split)
    with cells[1]:
        layer = kept(
            st.selectbox,
            "Layer",
            NEURON_LAYER,
            keys[0],
            options=keys,
            format_func=lambda k: show.layer_option(k, by_key[k]),
        )
    shape = by_key[layer].output_shape
    with cells[2]:
        label = "Channel" if len(shape) == 3 else "Unit"
        channel = number(label, NEURON_CHANNEL, 0, high=shape[0] - 1)
    y = x = 0
    if len(shape) == 3:
        with cells[3]:
            y = number("Row y", NEURON_Y, shape[1] // 2, high=shape[1] - 1)
        with cells[4]:
            x = number("Column x", NEURON_X, shape[2] // 2, high=shape[2] - 1)
    return index, by_key[layer], layer, int(channel), int(y), int(x)


def neuron_tab(selection: ui.Selection) -> None:
    """The "Any neuron" tab: a neuron of the selected model recomputed by hand."""
    loaded = model_and_data(selection)
    if loaded is None:
        return
    model, view, split, flow = loaded
    if view.untrained:
        untrained_warning(
            f"**{ui.plain(view.label)}: untrained — random weights.** The arithmetic still "
            "holds: every activation is the same sum of products, only of random weights."
        )
    seen = st.session_state.get(typed.NEURON_SEEN)
    st.session_state.update(typed.adopted_neuron(st.session_state.get(inputs.NEURON_KEY), seen))
    records = lab.neuron_layers(model, flow)
    if not records:
        st.info("This model has no conv, linear or pooling layer to take apart.")
        return
    index, record, layer, channel, y, x_pos = neuron_controls(split, records)
    pixels = split.images[index].numpy()
    x = inputs.model_input(pixels, split.info)
    mtime = ui.mtime_of(selection.model_key)
    key = (selection.model_key, mtime, ui.data_id(split), index, layer, channel, y, x_pos)
    try:
        a = neuron(key, model, x, flow)
    except LensError as err:
        ui.show_error(err)
        return
    first = flow.leaves[0].name == record.name
    picture, summary = st.columns([1, 2.3], gap="large")
    with picture:
        figure = show.boxed_image(
            pixels, a.source_box, "What this neuron sees", show.receptive_caption(a.source_box)
        )
        plot(figure, f"lab-neuron-{layer}-{channel}-{y}-{x_pos}")
    with summary:
        st.markdown(show.neuron_heading(a, first))
        code(show.neuron_numbers(a), wrap=False)
        if a.matches():
            st.success(show.neuron_verdict(a), icon=":material/check_circle:")
        else:
            st.error(show.neuron_verdict(a), icon=":material/error:")
        st.markdown(f"**How:** {a.sum_text}.")
    if a.kind == "conv":
        conv_neuron(a)
    elif a.kind == "linear":
        linear_neuron(a)
    else:
        pool_neuron(a)


def conv_neuron(a: lab.NeuronArithmetic) -> None:
    channels = a.input_channels
    shown = channels[0]
    if len(channels) > 1:
        shown = kept(
            st.selectbox,
            f"Input channel to show (of {len(channels)})",
            "lab_neuron_in",
            channels[0],
            options=list(channels),
            width=260,
        )
    panels = show.conv_neuron_panels(a, shown)
    top, bottom = st.columns(2, gap="large"), st.columns(2, gap="large")
    show_panels(panels[:2], top)
    show_panels(panels[2:], bottom[:1])
    with bottom[1]:
        for title, sums in show.conv_neuron_sums(a, shown):
            st.markdown(title)
            code(sums)
    st.caption("Grey cells hang over the edge of the layer's input and read zero padding.")
    with st.expander(f"All {a.products.size:,} products"):
        ui.table(show.conv_products_frame(a))


def linear_neuron(a: lab.NeuronArithmetic) -> None:
    st.markdown(show.linear_description(a))
    frame = show.linear_products_frame(a)
    ui.table(frame, height=300)
    code(show.linear_text(a))


def pool_neuron(a: lab.NeuronArithmetic) -> None:
    table, words = st.columns([1, 2], gap="large")
    show_panels([show.pool_neuron_panel(a)], [table])
    with words:
        what, rule = show.pool_neuron_text(a)
        st.markdown(what)
        code(rule)


def classic_tab(selection: ui.Selection) -> None:
    """The "Classic kernels" tab: classic kernels on a test image beside the model's first
    layer."""
    loaded = model_and_data(selection)
    if loaded is None:
        return
    model, view, split, _ = loaded
    cells = st.columns([1, 3])
    with cells[0]:
        index = image_picker(split)
        pixels = split.images[index].numpy()
        plot(show.image(pixels, f"Test image {index}"), f"test-image-{index}")
    gray = typed.gray_image(pixels)
    with cells[1]:
        st.markdown(show.CLASSIC_INTRO)
        plot(classic_figure(ui.data_id(split), gray.shape[0], index, gray), "classic-kernels")
    with st.expander("The kernels' numbers"):
        show_panels(show.classic_kernel_panels(), st.columns(4))

    st.subheader(f"What {ui.plain(view.label)} learned in its first layer")
    if view.untrained:
        untrained_warning(
            "Untrained — random weights: these filters are noise, not edge detectors."
        )
    x = inputs.model_input(pixels, split.info)
    mtime = ui.mtime_of(selection.model_key)
    try:
        weights, responses, matches, raw = learned_figures(
            selection.model_key, mtime, ui.data_id(split), index, model, x
        )
    except LensError as err:
        ui.show_error(err)
        return
    left, right = st.columns([1.2, 1.5], gap="large")
    with left:
        plot(weights, "first-layer-filters")
        st.markdown("Each filter's closest classic kernel (cosine of the gray-equivalent kernel):")
        ui.table(matches, height=220, width="content")
    with right:
        plot(responses, "first-layer-responses")
    title, panels = show.learned_kernel_panels(raw)
    with st.expander(title):
        show_panels(panels, st.columns(4))
