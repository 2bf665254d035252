"""CNN Lens — home page: `streamlit run app.py`."""

import streamlit as st

from dashboard import ui
from dashboard.errors import LensError

ui.setup_page("Home")
# Title and page map first: they need no torch, so they show while the sidebar's model list
# and the shape flow below load it (seconds on a cold start).
st.title("CNN Lens")
st.caption(
    "Train or load a convolutional network and look inside it: filters, activation maps, "
    "the shape of every feature map, and where it gets confused."
)
st.markdown(
    "**Where to start:** the sidebar has selected the best shipped MNIST model; open "
    "**Activations** to see what each of its layers makes of a test image, or **Train** to "
    "train your own."
)
ui.page_overview()
selection = ui.sidebar()

from dashboard import summary  # noqa: E402  (imports torch)

try:
    input_shape = ui.input_shape_for(selection)
    flow = ui.shape_flow(selection.model_key, input_shape, ui.mtime_of(selection.model_key))
except LensError as err:
    ui.show_error(err)
    st.stop()

st.subheader(f"Shape flow — {ui.plain(ui.model_label(selection.model_key))}")
ui.metric_row(
    [
        ui.Metric("Input", summary.shape_text(flow.input_shape)),
        ui.Metric("Output", summary.shape_text(flow.output_shape)),
        ui.Metric("Parameters", f"{flow.params_total:,}"),
        ui.Metric("Multiply-adds per image", f"{flow.mult_adds:,}"),
    ]
)

ui.layer_table(summary.display_rows(flow))
if flow.broken is not None:
    st.error(ui.plain(f"{flow.broken.layer} breaks: {flow.broken.reason}"))

st.subheader("Report")
ui.report_button(selection)
