"""The Shape flow page's graph view: the model's dataflow graph (traced once per model, input
size and checkpoint version, shared by every session), its figure, and the Graph / Blocks
switch beside the straight-line diagram."""

from __future__ import annotations

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.choices import Selection
from dashboard.ui.loaders import data_id, load_data, load_model, loaded_model, shape_flow
from dashboard.ui.navigation import clicked_customdata, open_in_activations
from dashboard.ui.show import figure, show_error
from dashboard.ui.state import held, kept

GRAPH, BLOCKS = "Graph", "Blocks"
VIEW_KEY = "shape_view"
CHART_KEY = "shape_graph"
OPEN_KEY = "shape_open_layer"  # a block was clicked: the layer to open on Activations
MAPS_KEY = "shape_graph_maps"  # draw one test image's feature maps beside the blocks


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
    image_id: tuple | None,
    _image,
):
    """(figure, plan) of the graph with containers folded as the page's controls say; with an
    image ((1, C, H, W), named by `image_id`), each main-path block's most active maps for it."""
    from dashboard.analysis import graph, summary
    from dashboard.figures.graph import dataflow_graph

    traced = model_graph(model_key, input_shape, mtime)
    plan = graph.graph_plan(traced, depth=depth, names=folded)
    title = f"Dataflow graph at {summary.shape_text(input_shape)}"
    if traced.broken:
        title += f" — stops at {traced.node(traced.broken).name}"
    how = "traced with torch.fx" if traced.traced else "the modules in the order they ran"
    maps = None
    if _image is not None and not traced.broken:
        model, _, _ = loaded_model(model_key, mtime)
        maps = graph.block_maps(traced, plan.graph, model, _image)
        how += f" · right: the {graph.BLOCK_CHANNELS} most active maps of {image_id[-1]}"
    fig = dataflow_graph(plan.graph, title=title, subtitle=f"{how} · hover a block", maps=maps)
    return fig, plan


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


def map_image(selection: Selection, input_shape: tuple[int, int, int]):
    """When the reader asks for maps in the graph: (its id, the test image as a (1, C, H, W)
    batch) picked with the Activations page's image; (None, None) otherwise or when the
    dataset's images do not fit the input size shown (said in the page)."""
    from dashboard import data
    from dashboard.analysis import inputs

    bar = st.container(horizontal=True, gap="large", vertical_alignment="bottom")
    with bar:
        wanted = st.toggle(
            "Feature maps in the graph",
            help="Beside each block of the main path, its four most active feature maps for "
            "one test image (CNN Explainer's overview); the same image as on Activations.",
            **held(MAPS_KEY, False),
        )
    if not wanted:
        return None, None
    try:
        _, view = load_model(selection)
        test = load_data(selection, view)
    except LensError as err:
        show_error(err)
        return None, None
    own = tuple(test.images.shape[1:])
    if own != tuple(input_shape):
        st.info(
            f"The maps need the test images' own size, {'×'.join(map(str, own))}: reset the "
            "input size above to see them.",
            icon=":material/info:",
        )
        return None, None
    last = len(test) - 1  # the Activations page's image, within this split
    stored = inputs.parse_index(st.session_state.get(inputs.IMAGE_INDEX_KEY, 0), len(test)) or 0
    st.session_state[inputs.IMAGE_INDEX_KEY] = stored
    index = bar.number_input(
        f"Test image (0 – {last:,})", 0, last, step=1, **held(inputs.IMAGE_INDEX_KEY, 0)
    )
    x = data.normalize(test.images[index : index + 1], test.info.mean, test.info.std)
    label = test.info.classes[int(test.labels[index])]
    return (data_id(test), index, f"test image {index} ({label})"), x


def graph_view(
    selection: Selection,
    input_shape: tuple[int, int, int],
    mtime: float,
    depth: int | None,
    folded: tuple[str, ...],
) -> None:
    """The graph figure with what it leaves out said under it."""
    model_key = selection.model_key
    traced = model_graph(model_key, input_shape, mtime)
    if traced.note:
        st.info(traced.note, icon=":material/info:")
    image_id, image = map_image(selection, input_shape)
    fig, plan = _graph_figure(model_key, input_shape, mtime, depth, folded, image_id, image)
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
