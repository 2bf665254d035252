"""CNN Lens — home page: `streamlit run app.py`."""

import streamlit as st

from dashboard import ui
from dashboard.analysis import shipped_flows
from dashboard.base.errors import LensError

ui.setup_page("Home")
# Title, page map and the layer table come first: for a shipped checkpoint none of them needs
# torch (the table is stored beside the checkpoints, see analysis/shipped_flows.py), so the
# page is complete while the sidebar's model list imports it (seconds on a cold start).
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
flow_area = st.empty()


def draw(table: shipped_flows.FlowTable) -> None:
    with flow_area.container():
        st.subheader(f"Shape flow — {ui.plain(table.label)}")
        ui.metric_row(
            [
                ui.Metric("Input", table.input),
                ui.Metric("Output", table.output),
                ui.Metric("Parameters", f"{table.params:,}"),
                ui.Metric("Multiply-adds per image", f"{table.mult_adds:,}"),
            ]
        )
        ui.layer_table(table.rows)
        if table.broken:
            st.error(ui.plain(table.broken))


def likely_model() -> str | None:
    """The model the sidebar is about to select, as far as it can be told without torch: this
    session's choice, else a link's shipped checkpoint, else the first shipped one."""
    if ui.MODEL_KEY in st.session_state:
        return st.session_state[ui.MODEL_KEY]
    linked = st.query_params.get("model")
    return shipped_flows.key_for(linked) if linked else shipped_flows.default_key()


guess = likely_model()
stored = shipped_flows.stored_table(guess) if guess else None
if stored is not None:
    draw(stored)
with st.spinner("Loading PyTorch and the models…"):
    selection = ui.sidebar()

if stored is None or guess != selection.model_key:  # not known in advance: traced now
    try:
        input_shape = ui.input_shape_for(selection)
        flow = ui.shape_flow(selection.model_key, input_shape, ui.mtime_of(selection.model_key))
    except LensError as err:
        flow_area.empty()
        ui.show_error(err)
        st.stop()
    draw(shipped_flows.traced_table(flow, ui.model_label(selection.model_key)))

st.subheader("Report")
ui.report_button(selection)
