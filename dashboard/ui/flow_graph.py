"""The Shape flow page's graph view: the model's dataflow graph (traced once per model, input
size and checkpoint version, shared by every session), its figure, and the Graph / Blocks
switch beside the straight-line diagram."""

from __future__ import annotations

import streamlit as st

from dashboard.ui.loaders import loaded_model, shape_flow
from dashboard.ui.navigation import clicked_customdata, open_in_activations
from dashboard.ui.show import figure
from dashboard.ui.state import kept

GRAPH, BLOCKS = "Graph", "Blocks"
VIEW_KEY = "shape_view"
CHART_KEY = "shape_graph"
OPEN_KEY = "shape_open_layer"  # a block was clicked: the layer to open on Activations


@st.cache_resource(max_entries=16, show_spinner="Tracing the graph…")
def model_graph(model_key: str, input_shape: tuple[int, int, int], mtime: float):
    """The model's dataflow graph at `input_shape` (a frozen record: shared read-only)."""
    from dashboard.analysis import graph

    model, _, _ = loaded_model(model_key, mtime)
    return graph.model_graph(model, input_shape, shape_flow(model_key, input_shape, mtime))


@st.cache_resource(max_entries=32, show_spinner="Drawing the graph…")
def _graph_figure(
    model_key: str,
    input_shape: tuple[int, int, int],
    mtime: float,
    depth: int | None,
    folded: tuple[str, ...],
):
    """(figure, plan) of the graph with containers folded as the page's controls say."""
    from dashboard.analysis import graph, summary
    from dashboard.figures.graph import dataflow_graph

    traced = model_graph(model_key, input_shape, mtime)
    plan = graph.graph_plan(traced, depth=depth, names=folded)
    title = f"Dataflow graph at {summary.shape_text(input_shape)}"
    if traced.broken:
        title += f" — stops at {traced.node(traced.broken).name}"
    how = "traced with torch.fx" if traced.traced else "the modules in the order they ran"
    return dataflow_graph(plan.graph, title=title, subtitle=f"{how} · hover a block"), plan


def view_switch(branches: bool, model_changed: bool) -> str:
    """The Graph / Blocks choice: the graph by default for a model whose data forks or merges,
    the straight-line blocks otherwise; a new model starts at its own default."""
    default = GRAPH if branches else BLOCKS
    if model_changed:
        st.session_state[VIEW_KEY] = default
    return st.radio(
        "Diagram",
        [GRAPH, BLOCKS],
        horizontal=True,
        **kept(VIEW_KEY, [GRAPH, BLOCKS], default),
        help="Graph: every layer and every functional step (the residual add, concatenations) "
        "with the edges of the traced forward pass, skip connections included. Blocks: the "
        "feature maps in a line, sized by their shapes.",
    )


def graph_view(
    model_key: str,
    input_shape: tuple[int, int, int],
    mtime: float,
    depth: int | None,
    folded: tuple[str, ...],
) -> None:
    """The graph figure with what it leaves out said under it."""
    traced = model_graph(model_key, input_shape, mtime)
    if traced.note:
        st.info(traced.note, icon=":material/info:")
    fig, plan = _graph_figure(model_key, input_shape, mtime, depth, folded)
    layers = viewable_layers(model_key, input_shape, mtime)
    figure(
        fig,
        "dataflow-graph",
        width="content",
        key=CHART_KEY,
        on_select=lambda: block_clicked(layers),
        selection_mode=("points",),
    )
    folds = (
        f"It folds blocks at depth {plan.depth} and deeper so it stays readable; "
        if (depth is None and plan.depth is not None)
        else ""
    )
    st.caption(
        f"{folds}BatchNorm, activations and dropout are drawn inside the block before them "
        "(hover a block for its steps, parameters and multiply-adds). Click a layer's block to "
        "open its feature maps on Activations."
    )
    open_clicked_block()


def viewable_layers(model_key: str, input_shape: tuple[int, int, int], mtime: float) -> set:
    """The layers the Activations page can show for this model (its layer keys)."""
    from dashboard.analysis import inputs

    flow = shape_flow(model_key, input_shape, mtime)
    return {inputs.layer_key(r) for r in inputs.viewable_layers(flow)}


def block_clicked(layers: set) -> None:
    """A block was clicked: remember its layer, opened once the page has run (a page cannot be
    switched from inside a callback). Functional steps and the input have no maps to open."""
    custom = clicked_customdata(CHART_KEY)
    if custom and custom[0] in layers:
        st.session_state[OPEN_KEY] = custom[0]


def open_clicked_block() -> None:
    """Go to Activations at the clicked block's layer, with the image it last showed."""
    from dashboard.analysis import inputs

    layer = st.session_state.pop(OPEN_KEY, None)
    if layer is not None:
        open_in_activations(int(st.session_state.get(inputs.IMAGE_INDEX_KEY, 0)), layer)
