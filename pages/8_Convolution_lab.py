"""Convolution lab: the arithmetic of convolution and pooling, done by hand with real numbers —
first on small matrices, then on any neuron of the loaded model.

The tabs are lazy (`on_change="rerun"`): only the open tab runs. Every input is kept under a
permanent session-state key (widget keys vanish with a closed tab or a page switch), and the
neuron shown in "Any neuron" follows what the Activations page picked: `lens_neuron_layer`,
`lens_neuron_channel`, `lens_neuron_y`, `lens_neuron_x`, or its `inputs.NEURON_KEY` record, with
the test image `inputs.IMAGE_INDEX_KEY`. Another page can open a tab by setting `lens_lab_tab`.
"""

from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dashboard import figures, filters, inputs, lab, ui
from dashboard.errors import LensError

ui.setup_page("Convolution lab", icon="🧮")
selection = ui.sidebar()

TABS = (
    "Worked convolution",
    "Channels & 1×1",
    "Pooling",
    "im2col",
    "Any neuron",
    "Classic kernels",
)
TAB_KEY, TAB_REQUEST = "lab_tab", "lens_lab_tab"
NEURON_LAYER, NEURON_CHANNEL = "lens_neuron_layer", "lens_neuron_channel"
NEURON_Y, NEURON_X, NEURON_SEEN = "lens_neuron_y", "lens_neuron_x", "lab_neuron_seen"
SOURCE_EXAMPLE, SOURCE_TYPED, SOURCE_PATCH = (
    "the 5×5 example",
    "typed or pasted",
    "a patch of a test image",
)
PATCH = 8  # side of an image patch
MAX_LISTED_FILTERS = 16  # learned filters whose numbers are listed
WINDOW, SKIPPED, PADDING, CURRENT, WINNER = (
    "background-color: #fcd34d; font-weight: 700",  # cells the kernel reads
    "background-color: #fef3c7",  # inside the window's span, skipped by dilation
    "color: #9ca3af; background-color: #f3f4f6",  # padding
    "background-color: #93c5fd; font-weight: 700",  # the output cell being computed
    "background-color: #f87171; color: white; font-weight: 700",  # the max-pool winner
)
KERNEL_FILLS: dict[str, np.ndarray] = {
    "1 … 9 (the example)": lab.parse_matrix(lab.PRESET_KERNEL),
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "box blur (all ones)": np.ones((3, 3), dtype=np.int64),
    **{name: k.astype(np.int64) for name, k in figures.classic_kernels().items()},
}
CHANNEL_INPUT = (
    lab.PRESET_INPUT.replace(" / ", "\n")
    + "\n\n"
    + "\n".join(["1 0 0 0 1", "0 1 0 1 0", "0 0 1 0 0", "0 1 0 1 0", "1 0 0 0 1"])
)
CHANNEL_KERNELS = (
    "1 2 3\n4 5 6\n7 8 9\n\n1 0 -1\n1 0 -1\n1 0 -1",
    "0 0 0\n0 1 0\n0 0 0\n\n1 1 1\n1 1 1\n1 1 1",
    "1 0 0\n0 1 0\n0 0 1\n\n0 0 0\n0 -1 0\n0 0 0",
    "0 1 0\n1 1 1\n0 1 0\n\n1 0 1\n0 1 0\n1 0 1",
)
MAX_CHANNEL_OUT = len(CHANNEL_KERNELS)


# --------------------------------------------------------------------------- state and widgets


def store(permanent: str) -> None:
    st.session_state[permanent] = st.session_state["_" + permanent]


def kept(draw: Callable, label: str, permanent: str, default, **kwargs):
    """A widget whose value lives under `permanent` (its own key is "_" + permanent), so it
    survives closed tabs and page switches. Number inputs are clamped to their bounds."""
    value = st.session_state.get(permanent, default)
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    if "options" in kwargs and value not in kwargs["options"]:
        value = default
    st.session_state[permanent] = st.session_state["_" + permanent] = value
    draw(label, key="_" + permanent, on_change=store, args=(permanent,), **kwargs)
    return st.session_state[permanent]


def whole(value: float) -> int | float:
    """A typed number as int when it is whole: keeps the arithmetic exact."""
    return int(value) if float(value).is_integer() else float(value)


def cell_text(value) -> str:
    return lab.fmt(value, 4).replace(lab.MINUS, "-")


def grid(
    values: np.ndarray,
    styles: np.ndarray | None = None,
    rows: list | None = None,
    cols: list | None = None,
):
    """A matrix as a styled table: numbers a reader can copy, cells coloured by `styles`."""
    a = np.asarray(values)
    frame = pd.DataFrame(
        a,
        index=[str(r) for r in (rows if rows is not None else range(a.shape[0]))],
        columns=[str(c) for c in (cols if cols is not None else range(a.shape[1]))],
    )
    css = np.full(a.shape, "", dtype=object) if styles is None else styles
    return frame.style.apply(
        lambda d: pd.DataFrame(css, index=d.index, columns=d.columns), axis=None
    ).format(cell_text)


def styles_for(shape: tuple[int, int]) -> np.ndarray:
    return np.full(shape, "", dtype=object)


def window_styles(
    shape: tuple[int, int],
    rows: tuple[int, ...],
    cols: tuple[int, ...],
    pad: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """Padding grey, the window's span pale, the cells it reads strong."""
    css = styles_for(shape)
    for r in range(shape[0]):
        for c in range(shape[1]):
            if not (pad[0] <= r < pad[0] + size[0] and pad[1] <= c < pad[1] + size[1]):
                css[r, c] = PADDING
    css[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = SKIPPED
    css[np.ix_(rows, cols)] = WINDOW
    return css


def position_slider(label: str, permanent: str, shape: tuple[int, int]) -> tuple[int, int]:
    """Step through output positions in reading order; returns (row, column)."""
    out_h, out_w = shape
    index = kept(
        st.select_slider,
        label,
        permanent,
        0,
        options=list(range(out_h * out_w)),
        format_func=lambda i: f"({i // out_w}, {i % out_w})",
        help="Output position (row, column), in reading order. Arrow keys step once focused.",
    )
    return divmod(int(index), out_w)


def kernel_filled(permanent: str) -> None:
    choice = st.session_state[f"_{permanent}_fill"]
    if choice is not None:
        st.session_state[permanent] = lab.matrix_text(KERNEL_FILLS[choice])
    st.session_state[f"_{permanent}_fill"] = None


def show_problems(problems: list[str]) -> None:
    if problems:
        st.warning("**What goes wrong:** " + " · ".join(problems), icon=":material/content_cut:")


def formula_block(formula: str) -> None:
    st.markdown("**Output size** ⌊(n + 2·p − d·(k − 1) − 1) / s⌋ + 1, with your numbers:")
    st.code(formula, language=None, wrap_lines=True)


# --------------------------------------------------------------------------- cached model work


def model_and_data():
    """(model, view, split, flow) of the sidebar's choice; LensError when they don't fit."""
    model, view = ui.load_model(selection)
    split = ui.load_data(selection, view)
    flow = ui.shape_flow(selection.model_key, view.input_shape, ui.mtime_of(selection.model_key))
    if flow.broken is not None:
        raise LensError(f"{view.label} cannot take these images: {flow.broken.reason}")
    return model, view, split, flow


@st.cache_data(max_entries=64, show_spinner="Recomputing the neuron…")
def neuron(
    model_key: str,
    mtime: float,
    dataset: str,
    index: int,
    layer: str,
    channel: int,
    y: int,
    x: int,
    _model,
    _x: torch.Tensor,
    _flow,
) -> lab.NeuronArithmetic:
    return lab.neuron_arithmetic(_model, _x, layer, channel, y, x, flow=_flow)


@st.cache_data(max_entries=16, show_spinner=False)
def classic_figure(dataset: str, size: int, index: int, _gray: np.ndarray):
    responses = lab.classic_responses(_gray, filters.classic_kernels())
    return figures.labelled_grid(
        np.stack(list(responses.values())),
        list(responses),
        title="Classic edge detectors on this image",
        subtitle="each map on its own scale, red > 0 > blue",
        max_side=620,
    )


@st.cache_data(max_entries=16, show_spinner="Filtering the image…")
def learned_figures(model_key: str, mtime: float, dataset: str, index: int, _model, _x):
    """(the first layer's filters, their responses to the image, closest classic kernels)."""
    learned = lab.first_layer_responses(_model, _x)
    title = f"{learned.name} filters"
    count, channels, kh, kw = learned.weights.shape
    if channels == 1:  # drawn like the classic kernels
        weights = figures.labelled_grid(
            learned.weights[:, 0],
            [f"filter {k}" for k in range(count)],
            scale="shared",
            title=title,
            subtitle=f"{count} filters of {kh}×{kw} · one scale · red > 0 > blue",
            value_name="weight",
            max_side=420,
        )
    elif channels == 3:
        weights = figures.rgb_filters(learned.weights, title=title, max_side=420)
    else:
        weights = figures.filter_grid(learned.weights, title=title, max_side=420)
    responses = figures.labelled_grid(
        learned.responses,
        [f"filter {k}" for k in range(len(learned.responses))],
        title=f"Their responses ({learned.name} output)",
        subtitle="bias included · each map on its own scale",
        max_side=560,
    )
    matches = filters.classic_matches(learned.weights)
    table = pd.DataFrame(
        {
            "filter": [m.filter for m in matches],
            "most like": [m.kernel for m in matches],
            "cosine": [round(m.cosine, 3) for m in matches],
        }
    )
    return weights, responses, table, learned.weights


def image_picker(split) -> int:
    """The test image shared with the Activations page."""
    return int(
        kept(
            st.number_input,
            f"Test image (0 – {len(split) - 1:,})",
            inputs.IMAGE_INDEX_KEY,
            0,
            min_value=0,
            max_value=len(split) - 1,
            step=1,
        )
    )


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 → (H, W) or (H, W, 3) for figures."""
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def boxed_image(pixels: np.ndarray, box, title: str, caption: str = ""):
    fig = figures.image_figure(display_pixels(pixels), title=title, caption=caption)
    top, left, bottom, right = box
    fig.add_shape(
        type="rect",
        x0=left - 0.5,
        x1=right + 0.5,
        y0=top - 0.5,
        y1=bottom + 0.5,
        line={"color": "#f59e0b", "width": 3},
    )
    return fig


# --------------------------------------------------------------------------- tab: worked


def worked_input() -> np.ndarray:
    """The input matrix of the worked tab, from the permanent state its widgets keep."""
    source = st.session_state.get("lab_source", SOURCE_EXAMPLE)
    if source == SOURCE_TYPED:
        return lab.parse_matrix(st.session_state.get("lab_input", lab.PRESET_INPUT))
    if source == SOURCE_PATCH:
        split = ui.dataset_split(selection.dataset, "test")
        return lab.image_patch(
            split.images,
            int(st.session_state.get("lab_patch_index", 0)),
            int(st.session_state.get("lab_patch_top", 10)),
            int(st.session_state.get("lab_patch_left", 10)),
            PATCH,
            int(st.session_state.get("lab_patch_channel", 0)),
        )
    return lab.parse_matrix(lab.PRESET_INPUT)


def worked_settings() -> dict:
    return {
        "padding": int(st.session_state.get("lab_padding", lab.PRESET_PADDING)),
        "stride": int(st.session_state.get("lab_stride", 1)),
        "dilation": int(st.session_state.get("lab_dilation", 1)),
    }


def worked_kernel() -> np.ndarray:
    kernel = lab.parse_matrix(
        st.session_state.get("lab_kernel", lab.matrix_text(KERNEL_FILLS["1 … 9 (the example)"]))
    )
    if kernel.ndim != 2:
        raise LensError("the kernel is one matrix: no blank lines or | inside it")
    return kernel


def patch_controls() -> None:
    split = ui.dataset_split(selection.dataset, "test")
    _, c, h, w = split.images.shape
    cells = st.columns(3 if c == 1 else 4)
    with cells[0]:
        index = kept(
            st.number_input,
            "Test image",
            "lab_patch_index",
            0,
            min_value=0,
            max_value=len(split) - 1,
            step=1,
        )
    with cells[1]:
        top = kept(st.number_input, "Top", "lab_patch_top", 10, min_value=0, max_value=h - PATCH)
    with cells[2]:
        left = kept(st.number_input, "Left", "lab_patch_left", 10, min_value=0, max_value=w - PATCH)
    if c > 1:
        with cells[3]:
            kept(
                st.selectbox,
                "Channel",
                "lab_patch_channel",
                0,
                options=list(range(c)),
                format_func=lambda i: "RGB"[i] if c == 3 else str(i),
            )
    pixels = split.images[int(index)].numpy()
    box = (int(top), int(left), int(top) + PATCH - 1, int(left) + PATCH - 1)
    st.plotly_chart(
        boxed_image(pixels, box, f"{split.info.title} test image {index}", "raw 0–255 values"),
        theme=None,
        width="content",
    )


def worked_tab() -> None:
    controls, results = st.columns([1, 2.3], gap="large")
    with controls:
        st.subheader("Input")
        source = kept(
            st.radio,
            "Numbers from",
            "lab_source",
            SOURCE_EXAMPLE,
            options=[SOURCE_EXAMPLE, SOURCE_TYPED, SOURCE_PATCH],
        )
        if source == SOURCE_TYPED:
            kept(
                st.text_area,
                "Input rows (new line or / between rows; spaces or commas between values)",
                "lab_input",
                lab.matrix_text(lab.parse_matrix(lab.PRESET_INPUT)),
                height=150,
            )
        elif source == SOURCE_PATCH:
            try:
                patch_controls()
            except LensError as err:
                ui.show_error(err)
                return
        st.subheader("Kernel")
        kept(
            st.text_area,
            "Kernel rows",
            "lab_kernel",
            lab.matrix_text(KERNEL_FILLS["1 … 9 (the example)"]),
            height=120,
        )
        st.selectbox(
            "Fill the kernel with",
            list(KERNEL_FILLS),
            index=None,
            placeholder="a kernel to start from…",
            key="_lab_kernel_fill",
            on_change=kernel_filled,
            args=("lab_kernel",),
        )
        cells = st.columns(4)
        with cells[0]:
            kept(
                st.number_input,
                "Padding",
                "lab_padding",
                lab.PRESET_PADDING,
                min_value=0,
                max_value=10,
            )
        with cells[1]:
            kept(st.number_input, "Stride", "lab_stride", 1, min_value=1, max_value=10)
        with cells[2]:
            kept(st.number_input, "Dilation", "lab_dilation", 1, min_value=1, max_value=10)
        with cells[3]:
            bias = kept(st.number_input, "Bias", "lab_bias", 0.0, step=1.0, format="%g")

    with results:
        try:
            worked = lab.conv2d_worked(
                worked_input(), worked_kernel(), bias=whole(bias), **worked_settings()
            )
        except LensError as err:
            ui.show_error(err)
            return
        h, w = worked.input.shape
        kh, kw = worked.kernel.shape
        st.markdown(
            f"A **{h}×{w}** input, a **{kh}×{kw}** kernel, padding {worked.padding[0]}, "
            f"stride {worked.stride[0]}, dilation {worked.dilation[0]}"
            + (f", bias {lab.fmt(worked.bias)}" if worked.bias else "")
            + ". Cross-correlation, as PyTorch's `Conv2d` computes it: the kernel is laid on "
            "the input as written, **not flipped**."
        )
        formula_block(worked.formula)
        if worked.message:
            st.error(worked.message, icon=":material/block:")
            return
        show_problems(worked.problems)
        y, x = position_slider("Step through the output positions", "lab_step", worked.output.shape)
        step = lab.step_at(worked, y, x)
        ph, pw = worked.padding
        css = window_styles(worked.padded.shape, step.rows, step.cols, (ph, pw), (h, w))
        out_css = styles_for(worked.output.shape)
        out_css[y, x] = CURRENT
        left, middle, right = st.columns(
            [worked.padded.shape[1] + 1, kw + 1, worked.output.shape[1] + 1], gap="medium"
        )
        with left:
            name = "Padded input" if any(worked.padding) else "Input"
            st.markdown(f"**{name}** {worked.padded.shape[0]}×{worked.padded.shape[1]}")
            st.table(grid(worked.padded, css))
        with middle:
            st.markdown("**Kernel**")
            st.table(grid(worked.kernel))
        with right:
            st.markdown(f"**Output** {worked.output.shape[0]}×{worked.output.shape[1]}")
            st.table(grid(worked.output, out_css))
        st.markdown(
            f"**Output ({y}, {x})** — the window starts at padded row {step.top}, column "
            f"{step.left} (= {step.y}·{worked.stride[0]}, {step.x}·{worked.stride[1]}); "
            "each input value times the kernel weight on top of it"
            + (", plus the bias" if worked.bias else "")
            + ":"
        )
        st.code(step.text, language=None, wrap_lines=True)
        st.caption(
            "Yellow: the cells the kernel reads (pale: inside its span but skipped by dilation); "
            "grey: zero padding; blue: the output being computed. Row and column labels are "
            "padded coordinates."
        )


# --------------------------------------------------------------------------- tab: channels


def channel_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input (C_in, H, W), kernels (C_out, C_in, k, k), bias (C_out,)) of the channels tab."""
    x = lab.parse_matrix(st.session_state.get("lab_ch_input", CHANNEL_INPUT))
    x = x[None] if x.ndim == 2 else x
    c_out = int(st.session_state.get("lab_ch_out", 2))
    kernels = []
    for o in range(c_out):
        k = lab.parse_matrix(st.session_state.get(f"lab_ch_kernel{o}", CHANNEL_KERNELS[o]))
        k = k[None] if k.ndim == 2 else k
        if k.shape[0] != x.shape[0]:
            raise LensError(
                f"kernel {o} has {k.shape[0]} channel blocks but the input has {x.shape[0]} "
                "channels: one k×k block per input channel"
            )
        if kernels and k.shape != kernels[0].shape:
            raise LensError(
                f"kernel {o} is {k.shape[1]}×{k.shape[2]}, kernel 0 is "
                f"{kernels[0].shape[1]}×{kernels[0].shape[2]}"
            )
        kernels.append(k)
    bias = lab.parse_matrix(st.session_state.get("lab_ch_bias", " ".join(["0"] * c_out)))
    bias = bias.reshape(-1)
    if bias.size != c_out:
        raise LensError(f"{bias.size} biases for {c_out} output channels: one number each")
    return x, np.stack(kernels), bias


def channels_tab() -> None:
    controls, results = st.columns([1, 2.3], gap="large")
    with controls:
        st.subheader("Input channels")
        kept(
            st.text_area,
            "Input (a blank line or | between channels)",
            "lab_ch_input",
            CHANNEL_INPUT,
            height=300,
        )
        c_out = kept(
            st.number_input,
            "Output channels (kernels)",
            "lab_ch_out",
            2,
            min_value=1,
            max_value=MAX_CHANNEL_OUT,
        )
        for o in range(int(c_out)):
            kept(
                st.text_area,
                f"Kernel {o}: one block per input channel",
                f"lab_ch_kernel{o}",
                CHANNEL_KERNELS[o],
                height=200,
            )
        kept(st.text_input, "Biases (one per output channel)", "lab_ch_bias", "0 0")
        cells = st.columns(2)
        with cells[0]:
            kept(st.number_input, "Padding", "lab_ch_padding", 1, min_value=0, max_value=10)
        with cells[1]:
            kept(st.number_input, "Stride", "lab_ch_stride", 1, min_value=1, max_value=10)
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
        x, kernels, bias = channel_inputs()
        conv = lab.multichannel_worked(
            x,
            kernels,
            bias,
            padding=int(st.session_state["lab_ch_padding"]),
            stride=int(st.session_state["lab_ch_stride"]),
        )
    except LensError as err:
        ui.show_error(err)
        return None
    c_in, c_out = x.shape[0], kernels.shape[0]
    st.markdown(
        f"**{c_in} input channels × {c_out} kernels of {c_in}×{kernels.shape[2]}×"
        f"{kernels.shape[3]}.** Each output channel slides its own kernel over *every* input "
        "channel — kernel slice c on input channel c — and adds the partial results, then "
        "its bias. Weights: C_out·C_in·k·k = "
        f"{c_out}·{c_in}·{kernels.shape[2] * kernels.shape[3]} = {kernels.size}, "
        f"plus {c_out} biases."
    )
    st.code(conv.formula, language=None)
    if conv.message:
        st.error(conv.message, icon=":material/block:")
        return x
    o = kept(
        st.radio,
        "Output channel",
        "lab_ch_show",
        0,
        options=list(range(c_out)),
        horizontal=True,
    )
    y, x_pos = position_slider("Position", "lab_ch_step", conv.output.shape[1:])
    columns = st.columns(c_in + 1, gap="small")
    for c in range(c_in):
        css = styles_for(conv.partials.shape[2:])
        css[y, x_pos] = CURRENT
        with columns[c]:
            st.markdown(f"**Channel {c} ∗ kernel {o}[{c}]**")
            st.table(grid(conv.partials[o, c], css))
    css = styles_for(conv.output.shape[1:])
    css[y, x_pos] = CURRENT
    with columns[-1]:
        st.markdown(f"**Sum + bias = output {o}**")
        st.table(grid(conv.output[o], css))
    st.markdown(f"Output channel {o} at ({y}, {x_pos}): the partial results plus the bias")
    st.code(conv.sum_text(o, y, x_pos), language=None)
    return x


def pointwise_section(x: np.ndarray) -> None:
    st.subheader("1×1 convolution: mixing channels")
    c_in = x.shape[0]
    default = "\n".join(
        [" ".join(["1"] * c_in), " ".join(["1"] + ["-1"] * (c_in - 1))] if c_in > 1 else ["1", "2"]
    )
    left, right = st.columns([1, 2.3], gap="large")
    with left:
        kept(
            st.text_area,
            f"Weights W: one row per output channel, {c_in} columns",
            f"lab_pw_weights{c_in}",
            default,
            height=90,
        )
        cells = st.columns(2)
        with cells[0]:
            y = kept(st.number_input, "Row", "lab_pw_y", 0, min_value=0, max_value=x.shape[1] - 1)
        with cells[1]:
            x_pos = kept(
                st.number_input, "Column", "lab_pw_x", 0, min_value=0, max_value=x.shape[2] - 1
            )
    with right:
        try:
            weights = lab.parse_matrix(st.session_state[f"lab_pw_weights{c_in}"])
            weights = weights.reshape(1, -1) if weights.ndim == 1 else weights
            mixing = lab.pointwise_mixing(x, weights, y=int(y), x_pos=int(x_pos))
        except LensError as err:
            ui.show_error(err)
            return
        st.markdown(
            "A 1×1 kernel sees one pixel: across its channels. Every output pixel is the weight "
            f"matrix times the input's channel vector at that pixel — **out = W · v** — so a 1×1 "
            f"conv changes the number of channels ({c_in} → {len(mixing.mixed)}) without "
            "looking at neighbours."
        )
        cells = st.columns([1, 2, 1])
        with cells[0]:
            st.markdown(f"**v** = input at ({y}, {x_pos})")
            st.table(grid(mixing.pixel[:, None], rows=[f"c{c}" for c in range(c_in)], cols=["v"]))
        with cells[1]:
            st.markdown("**W**")
            st.table(
                grid(
                    mixing.weights,
                    rows=[f"out {o}" for o in range(len(mixing.mixed))],
                    cols=[f"c{c}" for c in range(c_in)],
                )
            )
        with cells[2]:
            st.markdown("**W · v**")
            st.table(
                grid(
                    mixing.mixed[:, None],
                    rows=[f"out {o}" for o in range(len(mixing.mixed))],
                    cols=["out"],
                )
            )
        st.code("\n".join(mixing.lines), language=None, wrap_lines=True)


def bottleneck_section() -> None:
    st.subheader("The bottleneck: why ResNet-50 squeezes channels first")
    cells = st.columns(4)
    with cells[0]:
        channels = kept(st.number_input, "Channels", "lab_bn_channels", 256, min_value=1)
    with cells[1]:
        reduced = kept(st.number_input, "Squeezed to", "lab_bn_reduced", 64, min_value=1)
    with cells[2]:
        height = kept(st.number_input, "Feature map H", "lab_bn_h", 56, min_value=1)
    with cells[3]:
        width = kept(st.number_input, "Feature map W", "lab_bn_w", 56, min_value=1)
    b = lab.bottleneck_params(int(channels), int(reduced), int(height), int(width))
    rows = []
    for design, costs in (("one 3×3 conv", b.plain), ("bottleneck", b.bottleneck)):
        for cost in costs:
            rows.append(
                {
                    "Design": design,
                    "Layer": cost.label,
                    "Weights = C_in·C_out·k²": cost.weight_formula,
                    "With biases": cost.bias_formula,
                    f"Multiply-adds at {height}×{width}": cost.mult_add_formula,
                }
            )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.code(
        "\n".join(
            [
                f"one 3×3 conv:  {b.total_formula('plain')} weights",
                f"bottleneck:    {b.total_formula('bottleneck')} weights",
                f"with biases:   {b.total_formula('plain', 'with biases')} vs "
                f"{b.total_formula('bottleneck', 'with biases')}",
                f"multiply-adds: {b.total_formula('plain', 'mult_adds')} vs "
                f"{b.total_formula('bottleneck', 'mult_adds')}",
                f"the bottleneck needs {b.ratio():.2f}× fewer weights "
                f"({b.total('plain'):,} / {b.total('bottleneck'):,})",
            ]
        ),
        language=None,
        wrap_lines=True,
    )


# --------------------------------------------------------------------------- tab: pooling


def pooling_tab() -> None:
    controls, results = st.columns([1, 2.3], gap="large")
    with controls:
        kept(
            st.text_area,
            "Input rows",
            "lab_pool_input",
            lab.matrix_text(lab.parse_matrix(lab.PRESET_POOL)),
            height=130,
        )
        kind = kept(
            st.radio,
            "Pooling",
            "lab_pool_kind",
            "max",
            options=["max", "avg"],
            format_func=lambda k: {"max": "max", "avg": "average"}[k],
            horizontal=True,
        )
        cells = st.columns(3)
        with cells[0]:
            window = kept(
                st.number_input, "Window", "lab_pool_window", 2, min_value=1, max_value=10
            )
        with cells[1]:
            stride = kept(
                st.number_input, "Stride", "lab_pool_stride", 2, min_value=1, max_value=10
            )
        with cells[2]:
            padding = kept(
                st.number_input, "Padding", "lab_pool_padding", 0, min_value=0, max_value=5
            )
        include = kept(
            st.checkbox,
            "Average: padding counts in the divisor",
            "lab_pool_include",
            True,
            help="count_include_pad, PyTorch's default (True): a window that hangs over the "
            "edge divides by k·k; without it, by the number of real cells.",
        )
    with results:
        try:
            x = lab.parse_matrix(st.session_state["lab_pool_input"])
            if x.ndim != 2:
                raise LensError("pooling here takes one channel: no blank lines or | inside")
            pools = {
                k: lab.pool_worked(
                    x, k, int(window), int(stride), int(padding), count_include_pad=bool(include)
                )
                for k in ("max", "avg")
            }
        except LensError as err:
            ui.show_error(err)
            return
        worked = pools[kind]
        if kind == "max":
            edge = "Padding counts as −∞: it never wins."
        elif include:
            edge = "Padding counts as 0, and in the divisor (k·k)."
        else:
            edge = "Padding counts as 0; the divisor counts only real cells."
        st.markdown(
            f"**{'Max' if kind == 'max' else 'Average'} pooling**, {window}×{window} window, "
            f"stride {stride}, padding {padding}: each channel on its own, no weights. {edge}"
        )
        st.markdown("**Output size** ⌊(n + 2·p − k) / s⌋ + 1, with your numbers:")
        st.code(worked.formula, language=None)
        if worked.message:
            st.error(worked.message, icon=":material/block:")
            return
        show_problems(worked.problems)
        y, x_pos = position_slider(
            "Step through the output positions", "lab_pool_step", worked.output.shape
        )
        step = lab.pool_step_at(worked, y, x_pos)
        p = worked.padding
        css = window_styles(worked.padded.shape, step.rows, step.cols, p, x.shape)
        if step.chosen is not None:
            css[step.chosen] = WINNER
        columns = st.columns([worked.padded.shape[1] + 1] + [worked.output.shape[1] + 1] * 2)
        with columns[0]:
            st.markdown("**Input**" + (" (padded)" if any(p) else ""))
            st.table(grid(worked.padded, css))
        for column, k in zip(columns[1:], ("max", "avg"), strict=True):
            out_css = styles_for(pools[k].output.shape)
            if k == kind:
                out_css[y, x_pos] = CURRENT
            with column:
                st.markdown(f"**{'Max' if k == 'max' else 'Average'} pooling**")
                st.table(grid(pools[k].output, out_css))
        st.code(step.text, language=None, wrap_lines=True)
        st.caption(
            "Yellow: the window; red: the maximum it keeps (the first one in reading order on "
            "a tie, as PyTorch); blue: the output being computed; grey: padding."
        )


# --------------------------------------------------------------------------- tab: im2col


def im2col_tab() -> None:
    source = kept(
        st.radio,
        "Convolve",
        "lab_im2col_source",
        "worked",
        options=["worked", "channels"],
        format_func=lambda s: {
            "worked": "the Worked-convolution input and kernel",
            "channels": "the Channels input and kernels",
        }[s],
        horizontal=True,
    )
    try:
        if source == "worked":
            x, kernels = worked_input()[None], worked_kernel()[None, None]
            bias = np.array([whole(st.session_state.get("lab_bias", 0))])
            settings = worked_settings()
        else:
            x, kernels, bias = channel_inputs()
            settings = {
                "padding": int(st.session_state.get("lab_ch_padding", 1)),
                "stride": int(st.session_state.get("lab_ch_stride", 1)),
                "dilation": 1,
            }
        unrolled = lab.im2col_worked(x, kernels, bias, **settings)
        reference = lab.torch_conv2d(x, kernels, bias, **settings)
    except LensError as err:
        ui.show_error(err)
        return
    c_out, c_in, kh, kw = kernels.shape
    out_h, out_w = unrolled.output.shape[1:]
    length = out_h * out_w
    st.markdown(
        f"**im2col** copies every window the kernel visits into one column: {c_in}·{kh}·{kw} = "
        f"**{unrolled.columns.shape[0]} rows** (channel, kernel row, kernel column) × "
        f"{out_h}·{out_w} = **{length} columns** (output positions). The kernels, flattened "
        f"the same way, are the rows of a {c_out}×{unrolled.columns.shape[0]} matrix. One "
        f"matrix product gives all {c_out}×{length} outputs; a reshape puts them back as "
        f"{c_out}×{out_h}×{out_w} maps."
    )
    y, x_pos = position_slider(
        "Highlight the column of output position", "lab_im2col_step", (out_h, out_w)
    )
    column = y * out_w + x_pos
    css = styles_for(unrolled.columns.shape)
    css[:, column] = WINDOW
    st.markdown(f"**Unrolled input** ({unrolled.columns.shape[0]}×{length})")
    st.dataframe(
        grid(
            unrolled.columns, css, rows=list(unrolled.row_labels), cols=list(unrolled.column_labels)
        ),
        width="stretch",
    )
    left, right = st.columns([1, 1.4], gap="large")
    with left:
        st.markdown(f"**Kernel matrix** ({c_out}×{unrolled.columns.shape[0]})")
        st.dataframe(
            grid(
                unrolled.kernel_matrix,
                rows=[f"kernel {o}" for o in range(c_out)],
                cols=list(unrolled.row_labels),
            ),
            width="stretch",
        )
        st.markdown(
            f"Column ({y}, {x_pos}) times kernel 0's row"
            + (" plus its bias" if bias[0] else "")
            + ":"
        )
        st.code(
            lab.multiply_add(unrolled.column(y, x_pos), unrolled.kernel_matrix[0], bias[0].item()),
            language=None,
            wrap_lines=True,
        )
    with right:
        st.markdown(f"**Product + bias** ({c_out}×{length})")
        css = styles_for(unrolled.product.shape)
        css[:, column] = CURRENT
        st.dataframe(
            grid(
                unrolled.product,
                css,
                rows=[f"out {o}" for o in range(c_out)],
                cols=list(unrolled.column_labels),
            ),
            width="stretch",
        )
        st.markdown(f"**Reshaped** to {c_out}×{out_h}×{out_w}")
        maps = st.columns(max(2, min(c_out, 4)))
        for o in range(c_out):
            with maps[o % len(maps)]:
                css = styles_for((out_h, out_w))
                css[y, x_pos] = CURRENT
                st.table(grid(unrolled.output[o], css))
    difference = float(np.abs(unrolled.output - reference).max())
    if difference < 1e-9:
        st.success(
            f"Equal to PyTorch's `F.conv2d` on the same numbers ✓ (largest difference "
            f"{difference:g})",
            icon=":material/check_circle:",
        )
    else:
        st.error(f"differs from F.conv2d by up to {difference:g}")


# --------------------------------------------------------------------------- tab: any neuron


def adopt_activations_neuron() -> None:
    """Follow the neuron the Activations page picked last (its NEURON_KEY record)."""
    record = st.session_state.get(inputs.NEURON_KEY)
    if isinstance(record, dict) and record != st.session_state.get(NEURON_SEEN):
        st.session_state[NEURON_SEEN] = dict(record)
        for key, field in (
            (NEURON_LAYER, "layer"),
            (NEURON_CHANNEL, "channel"),
            (NEURON_Y, "y"),
            (NEURON_X, "x"),
        ):
            if field in record:
                st.session_state[key] = record[field]


def neuron_tab() -> None:
    try:
        model, view, split, flow = model_and_data()
    except LensError as err:
        ui.show_error(err)
        return
    if view.untrained:
        st.warning(
            f"**{view.label}: untrained — random weights.** The arithmetic still holds: every "
            "activation is the same sum of products, only of random weights.",
            icon=":material/casino:",
        )
    adopt_activations_neuron()
    records = lab.neuron_layers(model, flow)
    if not records:
        st.info("This model has no conv, linear or pooling layer to take apart.")
        return
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
            format_func=lambda k: (
                f"{k} · {by_key[k].type} · " + "×".join(map(str, by_key[k].output_shape))
            ),
        )
    record = by_key[layer]
    shape = record.output_shape
    with cells[2]:
        channel = kept(
            st.number_input,
            "Channel" if len(shape) == 3 else "Unit",
            NEURON_CHANNEL,
            0,
            min_value=0,
            max_value=shape[0] - 1,
        )
    y = x_pos = 0
    if len(shape) == 3:
        with cells[3]:
            y = kept(
                st.number_input,
                "Row y",
                NEURON_Y,
                shape[1] // 2,
                min_value=0,
                max_value=shape[1] - 1,
            )
        with cells[4]:
            x_pos = kept(
                st.number_input,
                "Column x",
                NEURON_X,
                shape[2] // 2,
                min_value=0,
                max_value=shape[2] - 1,
            )
    pixels = split.images[index].numpy()
    x = inputs.model_input(pixels, split.info)
    mtime = ui.mtime_of(selection.model_key)
    try:
        a = neuron(
            selection.model_key,
            mtime,
            selection.dataset,
            index,
            layer,
            int(channel),
            int(y),
            int(x_pos),
            model,
            x,
            flow,
        )
    except LensError as err:
        ui.show_error(err)
        return

    first = flow.leaves[0].name == record.name
    where = "the normalized image" if first else "what the layers before it computed"
    position = (
        f"channel {a.channel} at ({a.y}, {a.x})" if a.kind != "linear" else f"unit {a.channel}"
    )
    picture, summary = st.columns([1, 2.3], gap="large")
    with picture:
        top, left, bottom, right = a.source_box
        caption = (
            f"input rows {top}–{bottom}, columns {left}–{right} "
            f"({bottom - top + 1}×{right - left + 1} pixels)"
        )
        st.plotly_chart(
            boxed_image(pixels, a.source_box, "What this neuron sees", caption),
            theme=None,
            width="content",
        )
    with summary:
        st.markdown(
            f"**{layer}** ({a.type}), {position}. Its input is {where}, captured by a hook: "
            f"{'×'.join(map(str, a.input_shape))}."
        )
        verdict = "✓" if a.matches() else "✗"
        st.code(
            f"computed by hand    {a.computed:.8g}\n"
            f"model's activation  {a.model_value:.8g}\n"
            f"|difference|        {a.difference:.2g}   {verdict}",
            language=None,
        )
        if a.matches():
            st.success(
                f"= model's activation ✓ — the sum by hand, {lab.fmt(a.computed, 8)}, is the "
                f"value the model computed, {lab.fmt(a.model_value, 8)}.",
                icon=":material/check_circle:",
            )
        else:
            st.error(
                f"≠ model's activation: {lab.fmt(a.computed, 8)} by hand, "
                f"{lab.fmt(a.model_value, 8)} in the model",
                icon=":material/error:",
            )
        st.markdown(f"**How:** {a.sum_text}.")
    if a.kind == "conv":
        conv_neuron(a)
    elif a.kind == "linear":
        linear_neuron(a)
    else:
        pool_neuron(a)


def neuron_styles(a: lab.NeuronArithmetic, shape: tuple[int, int]) -> np.ndarray:
    css = styles_for(shape)
    css[a.padding.reshape(-1, *shape)[0]] = PADDING
    return css


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
    i = channels.index(shown)
    kh, kw = a.window.shape[1:]
    rows = [str(r) for r in a.rows]
    cols = [str(c) for c in a.cols]
    css = neuron_styles(a, (kh, kw))
    top, bottom = st.columns(2, gap="large"), st.columns(2, gap="large")
    with top[0]:
        st.markdown(f"**Input window**, channel {shown} (rows, columns of the layer's input)")
        st.table(grid(a.window[i], css, rows, cols))
    with top[1]:
        st.markdown(f"**Weights** of filter {a.channel}, slice {i}")
        st.table(grid(a.weights[i]))
    with bottom[0]:
        st.markdown("**Products** input · weight")
        st.table(grid(a.products[i], css, rows, cols))
    with bottom[1]:
        st.markdown(f"Channel {shown}: the products, summed")
        st.code(
            lab.multiply_add(a.window[i], a.weights[i], digits=4), language=None, wrap_lines=True
        )
        partial = a.products.reshape(len(channels), -1).sum(axis=1)
        many = len(channels) > 1
        st.markdown(
            f"The sums of all {len(channels)} input channels, then the bias"
            if many
            else "Its sum, then the bias"
        )
        st.code(lab.written_sum(partial, a.bias, digits=4), language=None, wrap_lines=True)
    st.caption("Grey cells hang over the edge of the layer's input and read zero padding.")
    with st.expander(f"All {a.products.size:,} products"):
        c, r, col = np.indices(a.window.shape).reshape(3, -1)
        st.dataframe(
            pd.DataFrame(
                {
                    "input channel": np.asarray(channels)[c],
                    "row": np.asarray(a.rows)[r],
                    "column": np.asarray(a.cols)[col],
                    "input": a.window.ravel(),
                    "weight": a.weights.ravel(),
                    "product": a.products.ravel(),
                }
            ),
            hide_index=True,
            width="stretch",
        )


def linear_neuron(a: lab.NeuronArithmetic) -> None:
    st.markdown(
        f"A fully connected unit: the dot product of all **{a.window.size:,}** inputs with its "
        "weight row, plus the bias. Largest contributions first:"
    )
    order = np.argsort(-np.abs(a.products))
    st.dataframe(
        pd.DataFrame(
            {
                "input feature": order,
                "input": a.window[order],
                "weight": a.weights[order],
                "product": a.products[order],
            }
        ),
        hide_index=True,
        width="stretch",
        height=300,
    )
    st.code(
        f"{a.sum_text}\n(the first terms: {lab.multiply_add(a.window[:4], a.weights[:4], digits=4)}"
        " …)",
        language=None,
        wrap_lines=True,
    )


def pool_neuron(a: lab.NeuronArithmetic) -> None:
    css = neuron_styles(a, a.window.shape)
    if a.chosen is not None:
        css[a.chosen] = WINNER
    table, text = st.columns([1, 2], gap="large")
    with table:
        st.markdown(f"**Window** of input channel {a.channel}")
        st.table(grid(a.window, css, [str(r) for r in a.rows], [str(c) for c in a.cols]))
    with text:
        shown = [lab.fmt(v, 4) for v in a.window.ravel().tolist()]
        if a.kind == "max pool":
            rule, what = f"max({', '.join(shown)})", "largest value (red) passes on"
        else:
            rule, what = f"({' + '.join(shown)}) / {a.count}", "mean passes on"
        st.markdown(f"Pooling has no weights: the window's {what}.")
        st.code(f"{rule} = {lab.fmt(a.computed, 6)}", language=None, wrap_lines=True)


# --------------------------------------------------------------------------- tab: classic kernels


def classic_tab() -> None:
    try:
        model, view, split, _ = model_and_data()
    except LensError as err:
        ui.show_error(err)
        return
    cells = st.columns([1, 3])
    with cells[0]:
        index = image_picker(split)
        pixels = split.images[index].numpy()
        st.plotly_chart(
            figures.image_figure(display_pixels(pixels), title=f"Test image {index}"),
            theme=None,
            width="content",
        )
    gray = pixels.astype(np.float64).mean(axis=0) / 255.0
    with cells[1]:
        st.markdown(
            "**Prewitt and Sobel** kernels slid over the gray image (0–1, zero padding 1, so "
            "each map has the image's size); the magnitude is √(x² + y²) of the horizontal and "
            "vertical responses."
        )
        st.plotly_chart(
            classic_figure(selection.dataset, gray.shape[0], index, gray),
            theme=None,
            width="content",
        )
    with st.expander("The kernels' numbers"):
        columns = st.columns(4)
        for k, (name, kernel) in enumerate(filters.classic_kernels().items()):
            with columns[k % 4]:
                st.markdown(f"**{name}**")
                st.table(grid(kernel.astype(np.int64)))

    st.subheader(f"What {view.label} learned in its first layer")
    if view.untrained:
        st.warning(
            "Untrained — random weights: these filters are noise, not edge detectors.",
            icon=":material/casino:",
        )
    x = inputs.model_input(pixels, split.info)
    mtime = ui.mtime_of(selection.model_key)
    try:
        weights, responses, matches, raw = learned_figures(
            selection.model_key, mtime, selection.dataset, index, model, x
        )
    except LensError as err:
        ui.show_error(err)
        return
    left, right = st.columns([1.2, 1.5], gap="large")
    with left:
        st.plotly_chart(weights, theme=None, width="content")
        st.markdown("Each filter's closest classic kernel (cosine of the gray-equivalent kernel):")
        st.dataframe(matches, hide_index=True, height=220)
    with right:
        st.plotly_chart(responses, theme=None, width="content")
    shown = min(len(raw), MAX_LISTED_FILTERS)
    averaged = raw.shape[1] > 1
    label = f"The learned filters' numbers ({'first ' if shown < len(raw) else ''}{shown})"
    with st.expander(label + (", mean over the input channels" if averaged else "")):
        columns = st.columns(4)
        for k, kernel in enumerate(raw[:shown].mean(axis=1)):
            with columns[k % 4]:
                st.markdown(f"**filter {k}**")
                st.table(grid(kernel))


# --------------------------------------------------------------------------- the page

st.title("Convolution lab")
st.caption(
    "The arithmetic of convolution and pooling with real numbers: by hand on small matrices, "
    "then on any neuron of the selected model."
)
requested = st.session_state.pop(TAB_REQUEST, None)
if requested in TABS:
    st.session_state[TAB_KEY] = requested
tabs = st.tabs(TABS, key=TAB_KEY, on_change="rerun")
DRAW = (worked_tab, channels_tab, pooling_tab, im2col_tab, neuron_tab, classic_tab)
for tab, draw in zip(tabs, DRAW, strict=True):
    if tab.open:
        with tab:
            draw()
