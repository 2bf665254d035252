"""Convolution lab: the arithmetic of convolution and pooling, done by hand with real numbers —
first on small matrices, then on any neuron of the loaded model.

The tabs are lazy (`on_change="rerun"`): only the open tab runs. Every input is kept under a
permanent session-state key (widget keys vanish with a closed tab or a page switch), and the
neuron shown in "Any neuron" follows what the Activations page picked: `lens_neuron_layer`,
`lens_neuron_channel`, `lens_neuron_y`, `lens_neuron_x`, or its `inputs.NEURON_KEY` record, with
the test image `inputs.IMAGE_INDEX_KEY`. Another page can open a tab by setting `lens_lab_tab`.

Widgets and layout only: `analysis.lab_inputs` reads the kept inputs, `analysis.lab` does the
arithmetic, `dashboard.figures.lab` writes the grids, tables, sentences and figures.
"""

from collections.abc import Callable, Sequence

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Convolution lab", icon=":material/calculate:")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dashboard.analysis import inputs, lab, probe  # noqa: E402
from dashboard.analysis import lab_inputs as typed  # noqa: E402
from dashboard.analysis.lab_inputs import NEURON_CHANNEL, NEURON_LAYER, NEURON_X, NEURON_Y  # noqa: E402
from dashboard.figures import lab as show  # noqa: E402

TABS = (
    "Worked convolution",
    "Channels & 1×1",
    "Pooling",
    "im2col",
    "Any neuron",
    "Classic kernels",
)
TAB_KEY, TAB_REQUEST = "lab_tab", "lens_lab_tab"


# --------------------------------------------------------------------------- state and widgets


def kept(draw: Callable, label: str, permanent: str, default, **kwargs):
    """A widget whose value lives under `permanent` (its own key is "_" + permanent), so it
    survives closed tabs and page switches. Number inputs are clamped to their bounds."""
    low, high, options = (kwargs.get(k) for k in ("min_value", "max_value", "options"))
    value = typed.clamped(st.session_state.get(permanent, default), default, low, high, options)
    st.session_state[permanent] = st.session_state["_" + permanent] = value
    draw(label, key="_" + permanent, on_change=ui.store, args=(permanent,), **kwargs)
    return st.session_state[permanent]


def number(label: str, permanent: str, default, low=0, high=None, step=None, pattern=None):
    kwargs = {"min_value": low, "max_value": high, "step": step, "format": pattern}
    return kept(st.number_input, label, permanent, default, **kwargs)


def number_row(*specs: tuple) -> list:
    """Number inputs side by side, each spec the arguments of `number`."""
    values = []
    for cell, spec in zip(st.columns(len(specs)), specs, strict=True):
        with cell:
            values.append(number(*spec))
    return values


def text(label: str, permanent: str, default: str, height: int) -> str:
    return kept(st.text_area, label, permanent, default, height=height)


def radio(label: str, permanent: str, labels: dict[str, str], default: str) -> str:
    """Options side by side, shown by their labels."""
    options = list(labels)
    return kept(
        st.radio,
        label,
        permanent,
        default,
        options=options,
        format_func=labels.get,
        horizontal=True,
    )


def position_slider(label: str, permanent: str, shape: tuple[int, int]) -> tuple[int, int]:
    """Step through output positions in reading order; returns (row, column)."""
    out_h, out_w = shape
    index = kept(
        st.select_slider,
        label,
        permanent,
        0,
        options=list(range(out_h * out_w)),
        format_func=lambda i: show.position_label(i, out_w),
        help="Output position (row, column), in reading order. Arrow keys step once focused.",
    )
    return divmod(int(index), out_w)


def kernel_filled(permanent: str) -> None:
    choice = st.session_state[f"_{permanent}_fill"]
    if choice is not None:
        st.session_state[permanent] = typed.matrix_text(typed.KERNEL_FILLS[choice])
    st.session_state[f"_{permanent}_fill"] = None


def code(text: str, wrap: bool = True) -> None:
    st.code(text, language=None, wrap_lines=wrap)


def show_panels(panels: Sequence[show.Panel], columns: Sequence) -> None:
    """Each panel (its title over its table) in the next column, wrapping around."""
    for k, panel in enumerate(panels):
        with columns[k % len(columns)]:
            if panel.title:
                st.markdown(panel.title)
            st.table(panel.grid)


def wide_panel(panel: show.Panel) -> None:
    """A panel too wide for a table: a scrolling grid."""
    st.markdown(panel.title)
    ui.table(panel.grid, hide_index=False)


def no_output(message: str) -> bool:
    """Say why there is no output (a kernel or window larger than the padded input)."""
    if message:
        st.error(message, icon=":material/block:")
    return bool(message)


def output_size(heading: str, worked: lab.WorkedConv | lab.WorkedPool, wrap: bool) -> bool:
    """The output-size formula with the numbers and what it leaves out; False when there is
    no output."""
    st.markdown(heading)
    code(worked.formula, wrap)
    if no_output(worked.message):
        return False
    if worked.problems:
        text = "**What goes wrong:** " + " · ".join(worked.problems)
        st.warning(text, icon=":material/content_cut:")
    return True


def split_images() -> torch.Tensor:
    return ui.dataset_split(selection.dataset, "test").images


# --------------------------------------------------------------------------- cached model work


def model_and_data():
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


def plot(fig, name: str) -> None:
    ui.figure(fig, name, width="content")


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


# --------------------------------------------------------------------------- tab: worked


def patch_controls() -> None:
    split = ui.dataset_split(selection.dataset, "test")
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


def worked_controls() -> bool:
    """The worked tab's inputs; False when the image patch cannot be read."""
    st.subheader("Input")
    source = kept(
        st.radio, "Numbers from", "lab_source", typed.SOURCE_EXAMPLE, options=list(typed.SOURCES)
    )
    if source == typed.SOURCE_TYPED:
        label = "Input rows (new line or / between rows; spaces or commas between values)"
        text(label, "lab_input", typed.DEFAULT_INPUT_TEXT, 150)
    elif source == typed.SOURCE_PATCH:
        try:
            patch_controls()
        except LensError as err:
            ui.show_error(err)
            return False
    st.subheader("Kernel")
    text("Kernel rows", "lab_kernel", typed.DEFAULT_KERNEL_TEXT, 120)
    st.selectbox(
        "Fill the kernel with",
        list(typed.KERNEL_FILLS),
        index=None,
        placeholder="a kernel to start from…",
        key="_lab_kernel_fill",
        on_change=kernel_filled,
        args=("lab_kernel",),
    )
    number_row(
        ("Padding", "lab_padding", typed.PRESET_PADDING, 0, 10),
        ("Stride", "lab_stride", 1, 1, 10),
        ("Dilation", "lab_dilation", 1, 1, 10),
        ("Bias", "lab_bias", 0.0, None, None, 1.0, "%g"),
    )
    return True


def worked_tab() -> None:
    controls, results = st.columns([1, 2.3], gap="large")
    with controls:
        if not worked_controls():
            return
    with results:
        state = st.session_state
        try:
            worked = lab.conv2d_worked(
                typed.worked_input(state, split_images),
                typed.worked_kernel(state),
                bias=typed.whole(state["lab_bias"]),
                **typed.worked_settings(state),
            )
        except LensError as err:
            ui.show_error(err)
            return
        st.markdown(show.worked_description(worked))
        if not output_size(show.CONV_SIZE, worked, wrap=True):
            return
        y, x = position_slider("Step through the output positions", "lab_step", worked.output.shape)
        step = lab.step_at(worked, y, x)
        widths = [
            worked.padded.shape[1] + 1,
            worked.kernel.shape[1] + 1,
            worked.output.shape[1] + 1,
        ]
        show_panels(show.worked_panels(worked, step), st.columns(widths, gap="medium"))
        st.markdown(show.step_description(worked, step))
        code(step.text)
        st.caption(show.WORKED_CAPTION)


# --------------------------------------------------------------------------- tab: channels


def channels_tab() -> None:
    controls, results = st.columns([1, 2.3], gap="large")
    with controls:
        st.subheader("Input channels")
        text("Input (a blank line or | between channels)", "lab_ch_input", typed.CHANNEL_INPUT, 300)
        c_out = number("Output channels (kernels)", "lab_ch_out", 2, 1, typed.MAX_CHANNEL_OUT)
        for o in range(int(c_out)):
            label = f"Kernel {o}: one block per input channel"
            text(label, f"lab_ch_kernel{o}", typed.CHANNEL_KERNELS[o], 200)
        kept(st.text_input, "Biases (one per output channel)", "lab_ch_bias", "0 0")
        number_row(("Padding", "lab_ch_padding", 1, 0, 10), ("Stride", "lab_ch_stride", 1, 1, 10))
    with results:
        x = channel_results()
    st.divider()
    if x is not None:
        pointwise_section(x)
        st.divider()
    bottleneck_section()


def channel_results() -> np.ndarray | None:
    """The partial results of the channels tab; returns the input when it parsed."""
    try:
        x, kernels, bias = typed.channel_arrays(st.session_state)
        conv = lab.multichannel_worked(x, kernels, bias, **typed.channel_settings(st.session_state))
    except LensError as err:
        ui.show_error(err)
        return None
    st.markdown(show.channels_description(kernels))
    code(conv.formula, wrap=False)
    if no_output(conv.message):
        return x
    options = list(range(kernels.shape[0]))
    o = kept(st.radio, "Output channel", "lab_ch_show", 0, options=options, horizontal=True)
    y, x_pos = position_slider("Position", "lab_ch_step", conv.output.shape[1:])
    show_panels(show.channel_panels(conv, o, y, x_pos), st.columns(x.shape[0] + 1, gap="small"))
    st.markdown(f"Output channel {o} at ({y}, {x_pos}): the partial results plus the bias")
    code(conv.sum_text(o, y, x_pos), wrap=False)
    return x


def pointwise_section(x: np.ndarray) -> None:
    st.subheader("1×1 convolution: mixing channels")
    c_in = x.shape[0]
    left, right = st.columns([1, 2.3], gap="large")
    with left:
        label = f"Weights W: one row per output channel, {c_in} columns"
        text(label, f"lab_pw_weights{c_in}", typed.pointwise_default(c_in), 90)
        y, x_pos = number_row(
            ("Row", "lab_pw_y", 0, 0, x.shape[1] - 1), ("Column", "lab_pw_x", 0, 0, x.shape[2] - 1)
        )
    with right:
        try:
            weights = typed.pointwise_weights(st.session_state[f"lab_pw_weights{c_in}"])
            mixing = lab.pointwise_mixing(x, weights, y=int(y), x_pos=int(x_pos))
        except LensError as err:
            ui.show_error(err)
            return
        st.markdown(show.pointwise_description(mixing))
        show_panels(show.pointwise_panels(mixing), st.columns([1, 2, 1]))
        code("\n".join(mixing.lines))


def bottleneck_section() -> None:
    st.subheader("The bottleneck: why ResNet-50 squeezes channels first")
    sizes = number_row(
        ("Channels", "lab_bn_channels", 256, 1),
        ("Squeezed to", "lab_bn_reduced", 64, 1),
        ("Feature map H", "lab_bn_h", 56, 1),
        ("Feature map W", "lab_bn_w", 56, 1),
    )
    b = lab.bottleneck_params(*map(int, sizes))
    ui.table(show.bottleneck_frame(b))
    code(show.bottleneck_summary(b))


# --------------------------------------------------------------------------- tab: pooling


def pooling_controls() -> tuple[str, list[int], bool]:
    """The pooling tab's inputs: (kind shown "max" | "avg", [window, stride, padding],
    whether padding counts in the average's divisor)."""
    text("Input rows", "lab_pool_input", typed.DEFAULT_POOL_TEXT, 130)
    kind = radio("Pooling", "lab_pool_kind", show.POOL_KINDS, "max")
    sizes = number_row(
        ("Window", "lab_pool_window", 2, 1, 10),
        ("Stride", "lab_pool_stride", 2, 1, 10),
        ("Padding", "lab_pool_padding", 0, 0, 5),
    )
    include = kept(
        st.checkbox,
        "Average: padding counts in the divisor",
        "lab_pool_include",
        True,
        help="count_include_pad, PyTorch's default (True): a window that hangs over the "
        "edge divides by k·k; without it, by the number of real cells.",
    )
    return kind, [int(v) for v in sizes], bool(include)


def pooling_tab() -> None:
    controls, results = st.columns([1, 2.3], gap="large")
    with controls:
        kind, sizes, include = pooling_controls()
    with results:
        try:
            x = typed.pool_matrix(st.session_state["lab_pool_input"])
            pools = {
                k: lab.pool_worked(x, k, *sizes, count_include_pad=include) for k in ("max", "avg")
            }
        except LensError as err:
            ui.show_error(err)
            return
        worked = pools[kind]
        st.markdown(show.pool_description(worked))
        if not output_size(show.POOL_SIZE, worked, wrap=False):
            return
        y, x_pos = position_slider(
            "Step through the output positions", "lab_pool_step", worked.output.shape
        )
        step = lab.pool_step_at(worked, y, x_pos)
        widths = [worked.padded.shape[1] + 1] + [worked.output.shape[1] + 1] * 2
        show_panels(show.pool_panels(pools, kind, step), st.columns(widths))
        code(step.text)
        st.caption(show.POOL_CAPTION)


# --------------------------------------------------------------------------- tab: im2col


def im2col_tab() -> None:
    source = radio("Convolve", "lab_im2col_source", show.IM2COL_SOURCES, "worked")
    try:
        x, kernels, bias, settings = typed.im2col_arrays(st.session_state, source, split_images)
        unrolled = lab.im2col_worked(x, kernels, bias, **settings)
        reference = lab.torch_conv2d(x, kernels, bias, **settings)
    except LensError as err:
        ui.show_error(err)
        return
    st.markdown(show.im2col_description(unrolled, kernels))
    y, x_pos = position_slider(
        "Highlight the column of output position", "lab_im2col_step", unrolled.output.shape[1:]
    )
    panels = show.im2col_panels(unrolled, y, x_pos)
    wide_panel(panels.columns)
    left, right = st.columns([1, 1.4], gap="large")
    with left:
        wide_panel(panels.kernel_matrix)
        st.markdown(panels.column_sum)
        code(panels.column_text)
    with right:
        wide_panel(panels.product)
        st.markdown(panels.reshaped)
        show_panels(panels.maps, st.columns(max(2, min(len(panels.maps), 4))))
    equal, message = show.conv2d_agreement(unrolled.output, reference)
    if equal:
        st.success(message, icon=":material/check_circle:")
    else:
        st.error(message)


# --------------------------------------------------------------------------- tab: any neuron


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


def neuron_tab() -> None:
    loaded = model_and_data()
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


# --------------------------------------------------------------------------- tab: classic kernels


def classic_tab() -> None:
    loaded = model_and_data()
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


# --------------------------------------------------------------------------- the page

st.title("Convolution lab")
st.caption(
    "The arithmetic of convolution and pooling with real numbers: by hand on small matrices, "
    "then on any neuron of the selected model."
)
requested = st.session_state.pop(TAB_REQUEST, None)
if requested in TABS:
    st.session_state[TAB_KEY] = requested
if st.session_state.get(TAB_KEY) not in TABS:
    st.session_state[TAB_KEY] = TABS[0]
tabs = st.tabs(TABS, **ui.held(TAB_KEY, TABS[0]))  # a callback: the open tab reruns alone
DRAW = (worked_tab, channels_tab, pooling_tab, im2col_tab, neuron_tab, classic_tab)
for tab, draw in zip(tabs, DRAW, strict=True):
    if tab.open:
        with tab:
            draw()
