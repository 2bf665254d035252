"""The Convolution lab's "Channels & 1×1" tab: a convolution over several input channels
summed channel by channel, a 1×1 convolution mixing channels at one position, and the
parameter and multiply-add counts of a ResNet bottleneck."""

import numpy as np
import streamlit as st

from dashboard import ui
from dashboard.analysis import lab
from dashboard.analysis.lab import inputs as typed
from dashboard.base.errors import LensError
from dashboard.figures import lab as show
from dashboard.ui.lab_widgets import (
    code,
    kept,
    no_output,
    number,
    number_row,
    position_slider,
    show_panels,
    text,
)


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
