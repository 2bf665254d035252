"""Shape flow: every layer's input and output shape, its parameters and multiply-adds, the
output-size formula with its numbers, and what breaks when the input size changes."""

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Shape flow")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
import pandas as pd  # noqa: E402

from dashboard import figures  # noqa: E402
from dashboard.analysis import summary  # noqa: E402

# Session-state keys: stable names, so a later URL binding can seed them.
C_KEY, H_KEY, W_KEY, FOR_KEY = "shape_c", "shape_h", "shape_w", "shape_model"
DETAIL_KEY, FOLD_KEY = "shape_detail", "shape_fold"
EVERY_LAYER = "every layer"
MAX_SIDE = 512  # larger inputs make the probing forward pass slow on a CPU
FLAG_LINES = 6
DIAGRAM_WIDTH = 900  # pixels: the main column of a wide page on a laptop screen


def reset_input_shape(shape: tuple[int, int, int]) -> None:
    for key, value in zip((C_KEY, H_KEY, W_KEY), shape, strict=True):
        st.session_state[key] = int(value)


# Shared, read only (no unpickling); a spinner shows only when drawing takes over 0.5 s.
@st.cache_resource(max_entries=32, show_spinner="Drawing the flow diagram…")
def diagram(
    model_key: str, shape: tuple[int, int, int], mtime: float, depth: int | None, folded: tuple
):
    """(figure, plan) of the flow diagram; cached so a table-only change costs nothing."""
    flow = ui.shape_flow(model_key, shape, mtime)
    plan = summary.diagram_layers(flow, depth=depth, folded=folded)
    title = f"Feature-map flow at {summary.shape_text(shape)}"
    if flow.broken is not None:
        title += f" — stops before {flow.broken.layer}"
    return figures.shape_flow_diagram(plan.layers, title=title, max_width=DIAGRAM_WIDTH), plan


def highlight(rows: list[dict], notes: set[str], columns: list[str] | None = None):
    """The table (or some of its `columns`) as a pandas Styler: the breaking layer red, layers
    with a flag amber (but not those whose flag is only a note on a standard design, `notes`)."""
    frame = pd.DataFrame(rows)
    tints = [
        "background-color: #fde2e2; color: #991b1b"
        if row["Output"] == summary.BROKEN_OUTPUT
        else "background-color: #fff4d6"
        if row["Flag"] and row["Layer"] not in notes
        else ""
        for row in rows
    ]
    shown = frame[columns] if columns else frame
    return shown.style.apply(lambda row: [tints[row.name]] * len(row), axis=1)


model, view = ui.model_or_stop(selection)

st.title("Shape flow")
untrained = " Untrained — random weights: shapes and counts do not depend on them."
st.caption(
    f"**{ui.plain(view.label)}** — one image on its way through the model: each layer's "
    "output shape, parameters, multiply-adds and receptive field."
    + (untrained if view.untrained else "")
)

# A new model starts at its own input size; sizes seeded before the first run are kept.
model_changed = st.session_state.get(FOR_KEY, selection.model_key) != selection.model_key
st.session_state[FOR_KEY] = selection.model_key
for key, value in zip((C_KEY, H_KEY, W_KEY), view.input_shape, strict=True):
    if model_changed or key not in st.session_state:
        st.session_state[key] = int(value)

size = st.columns([1, 1, 1, 1.4], vertical_alignment="bottom")
size[0].number_input("Input channels C", 1, 64, step=1, **ui.held(C_KEY, view.input_shape[0]))
size[1].number_input("Height H", 1, MAX_SIDE, step=1, **ui.held(H_KEY, view.input_shape[1]))
size[2].number_input("Width W", 1, MAX_SIDE, step=1, **ui.held(W_KEY, view.input_shape[2]))
default = summary.shape_text(view.input_shape)
size[3].button(
    f"Reset to {default}",
    on_click=reset_input_shape,
    args=(view.input_shape,),
    help="The input size the model was built or trained for.",
)
shape = (
    int(st.session_state[C_KEY]),
    int(st.session_state[H_KEY]),
    int(st.session_state[W_KEY]),
)
mtime = ui.mtime_of(selection.model_key)

try:
    flow = ui.shape_flow(selection.model_key, shape, mtime)
except LensError as err:
    ui.show_error(err)
    st.stop()

ui.metric_row(
    [
        ui.Metric("Input", summary.shape_text(flow.input_shape)),
        ui.Metric("Output", summary.shape_text(flow.output_shape)),
        ui.Metric("Parameters", f"{flow.params_total:,}"),
        ui.Metric("Trainable", f"{flow.params_trainable:,}"),
        ui.Metric(
            "Multiply-adds per image",
            summary.count_text(flow.mult_adds),
            help=f"{flow.mult_adds:,} multiply-accumulates for one image, bias excluded",
        ),
    ]
)

if flow.broken is not None:
    st.error(
        f"**{flow.broken.layer or 'The model'}** ({flow.broken.type}) breaks at input "
        f"{summary.shape_text(shape)}: {flow.broken.reason}. The model was built for {default}.",
        icon=":material/block:",
    )
shortcuts = [r for r in flow.leaves if r.flag and summary.is_shortcut_projection(r)]
flagged = [r for r in flow.leaves if r.flag and r not in shortcuts]
if flagged:
    lines = [f"- **{r.name}**: {r.flag}" for r in flagged[:FLAG_LINES]]
    if len(flagged) > FLAG_LINES:
        lines.append(f"- … and {len(flagged) - FLAG_LINES} more (the Flag column)")
    st.warning("**Flagged layers** (highlighted in the table):\n" + "\n".join(lines))
if shortcuts:
    names = ", ".join(r.name for r in shortcuts[:FLAG_LINES]) + (
        f" and {len(shortcuts) - FLAG_LINES} more" if len(shortcuts) > FLAG_LINES else ""
    )
    st.info(
        f"**{names}**: a 1×1 convolution with stride 2 reads every other row and column. "
        "That is ResNet's standard shortcut (He et al. 2016): it halves the map to match the "
        "block's output, while the 3×3 convolutions beside it read every pixel.",
        icon=":material/info:",
    )

deepest = summary.max_depth(flow)
depth: int | None = None
folded: list[str] = []
if deepest > 0:
    levels = [*range(deepest), EVERY_LAYER]
    containers = summary.container_names(flow)
    detail = st.columns([2, 3])
    chosen = detail[0].select_slider(
        "Detail",
        levels,
        **ui.kept(DETAIL_KEY, levels, EVERY_LAYER),
        format_func=lambda d: d if d == EVERY_LAYER else ("top level" if d == 0 else f"depth {d}"),
        help="Fold nested blocks into one row each: their rows carry the summed parameters "
        "and multiply-adds of everything inside.",
    )
    depth = None if chosen == EVERY_LAYER else int(chosen)
    folded = detail[1].multiselect(
        "Fold these blocks",
        containers,
        **ui.kept(FOLD_KEY, containers, []),
        placeholder="e.g. layer3",
        help="Each folded block becomes one row (and one block in the diagram).",
    )

# The graph (branches and merges) by default where the data forks or merges.
traced = ui.model_graph(selection.model_key, shape, mtime)
if ui.view_switch(traced.branches, model_changed) == ui.GRAPH:
    ui.graph_view(selection, shape, mtime, depth, tuple(folded))
else:
    figure, plan = diagram(selection.model_key, shape, mtime, depth, tuple(folded))
    ui.figure(figure, "shape-flow", width="content")
    if not plan.deepest:
        st.caption(
            f"The diagram folds blocks deeper than depth {plan.depth} so it stays readable; "
            "blocks that keep the shape (ReLU, BatchNorm) are left out."
        )

rows = summary.collapsed_rows(flow, depth=depth, folded=folded)
broken_row = summary.break_row(flow, model)
if broken_row is not None:
    rows.append(broken_row)
st.subheader("Layers")
notes = {r.name for r in shortcuts}
counts = st.column_config.NumberColumn(format="localized")
ui.table(
    highlight(rows, notes),
    height=min(38 + 35 * len(rows), 720),
    column_config={
        "Params": counts,
        "Mult-adds": st.column_config.NumberColumn(format="localized", help="per image"),
        "K/S/P": st.column_config.TextColumn(help="kernel / stride / padding"),
        "RF": st.column_config.TextColumn(help="receptive field on the input"),
        "Formula": None,  # in the table below: together they would not fit a laptop screen
        "Flag": None,
    },
)
worked = [row for row in rows if row["Formula"] or row["Flag"]]
if worked:
    st.subheader("Output sizes worked out")
    ui.table(
        highlight(worked, notes, ["Layer", "Formula", "Flag"]),
        height=min(38 + 35 * len(worked), 500),
        column_config={
            "Formula": st.column_config.TextColumn(
                help="output size = ⌊(n − k + 2p) / s⌋ + 1 with this layer's numbers"
            ),
            "Flag": st.column_config.TextColumn(help="what does not fit: shown in colour"),
        },
    )
st.download_button(
    "Download the table (CSV)",
    summary.rows_csv(rows),
    file_name=f"{view.architecture.replace(':', '-')}-{'x'.join(map(str, shape))}.csv",
    mime="text/csv",
    on_click="ignore",
)
