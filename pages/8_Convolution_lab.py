"""Convolution lab: the arithmetic of convolution and pooling, done by hand with real numbers —
first on small matrices, then on any neuron of the loaded model.

The tabs are lazy (`on_change="rerun"`): only the open tab runs. Every input is kept under a
permanent session-state key (widget keys vanish with a closed tab or a page switch), and the
neuron shown in "Any neuron" follows what the Activations page picked: `lens_neuron_layer`,
`lens_neuron_channel`, `lens_neuron_y`, `lens_neuron_x`, or its `inputs.NEURON_KEY` record, with
the test image `inputs.IMAGE_INDEX_KEY`. Another page can open a tab by setting `lens_lab_tab`.

Widgets and layout only: `analysis.lab_inputs` reads the kept inputs, `analysis.lab` does the
arithmetic, `dashboard.figures.lab` writes the grids, tables, sentences and figures;
`ui.lab_widgets` keeps the inputs, `ui.lab_channels` draws the channels tab and `ui.lab` the
tabs on the selected model.
"""

from functools import partial

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Convolution lab", icon=":material/calculate:")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
import torch  # noqa: E402

from dashboard.analysis import lab  # noqa: E402
from dashboard.analysis.lab import inputs as typed  # noqa: E402
from dashboard.figures import lab as show  # noqa: E402
from dashboard.ui import lab as lab_ui  # noqa: E402
from dashboard.ui import lab_channels  # noqa: E402
from dashboard.ui.lab_widgets import (  # noqa: E402
    code,
    kept,
    kernel_filled,
    number_row,
    output_size,
    position_slider,
    radio,
    show_panels,
    text,
    wide_panel,
)

TABS = (
    "Worked convolution",
    "Channels & 1×1",
    "Pooling",
    "im2col",
    "Any neuron",
    "Classic kernels",
)
TAB_KEY, TAB_REQUEST = "lab_tab", "lens_lab_tab"


# --------------------------------------------------------------------------- test images


def split_images() -> torch.Tensor:
    return ui.dataset_split(selection.dataset, "test").images


# --------------------------------------------------------------------------- tab: worked


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
            lab_ui.patch_controls(selection.dataset)
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
DRAW = (
    worked_tab,
    lab_channels.channels_tab,
    pooling_tab,
    im2col_tab,
    partial(lab_ui.neuron_tab, selection),
    partial(lab_ui.classic_tab, selection),
)
for tab, draw in zip(tabs, DRAW, strict=True):
    if tab.open:
        with tab:
            draw()
