"""Representations: how each layer of the selected model arranges the test images.

Projector: one layer's features of N test images placed in 2-D or 3-D by PCA, t-SNE or UMAP,
coloured by true class, prediction or correctness; a clicked (or chosen) image shows with its
nearest neighbours in that layer. Probes: how separable the classes are at each depth (linear
probe, k-NN, silhouette). Layer similarity: linear CKA between the model's layers, or against
a second checkpoint of the same dataset. Every result is kept in the result cache by model
content, split, images and layer (analysis.representations, analysis.projections).
"""

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Representations", icon=":material/scatter_plot:")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.

from dashboard import data  # noqa: E402
from dashboard.analysis import projections, representations  # noqa: E402
from dashboard.figures import representations as rfig  # noqa: E402

COUNTS = (500, 1_000, 2_000, 5_000, 10_000)  # test images shown (a seeded sample)
TRAIN_COUNTS = (1_000, 2_000, 5_000, 10_000)  # training images the probes learn from
DIMS = (2, 3)
COUNT_KEY, LAYER_KEY, METHOD_KEY = "repr_count", "repr_layer", "repr_method"
DIMS_KEY, COLOUR_KEY, IMAGE_KEY = "repr_dims", "repr_colour", "repr_image"
TRAIN_KEY, PROBE_ASKED_KEY, OTHER_KEY = "repr_train", "repr_probe_asked", "repr_other"
TAB_KEY, TABS = "repr_tab", ("Projector", "Probes", "Layer similarity")
CHART_KEY, NONE = "repr_chart", "(none)"

# --------------------------------------------------------------------------- model and data

st.title("Representations")
try:
    model, view = ui.load_model(selection)
    info = data.dataset_info(selection.dataset, data_root=ui.data_root())
    ui.require_made_for(selection, view, info)
    test = ui.load_data(selection, view)
    blocks, default_layer = ui.representation_layers(selection)
except LensError as err:
    ui.show_error(err)
    st.stop()

classes = list(view.classes) if len(view.classes) == info.num_classes else list(info.classes)
st.caption(
    f"**{ui.plain(view.label)}** on {ui.plain(test.info.title)} — how each layer arranges the "
    "test images: which images it puts together, at which depth the classes come apart, and "
    "which layers see alike."
)
ui.untrained_warning(
    view,
    "These maps show what random features keep of the "
    "pixels. Train the model or pick a checkpoint.",
)

top = ui.controls().container(horizontal=True, vertical_alignment="bottom", gap="large")
count = ui.image_count(
    top,
    "Test images",
    COUNTS,
    len(test),
    1_000,
    COUNT_KEY,
    "A seeded random sample of the test split (the same images every time); the projector, "
    "the probes' scores and the layer similarity all use them.",
)
ui.report_map_toggle(
    top,
    selection.model_key,
    layer=st.session_state.get(LAYER_KEY, default_layer),
    method=st.session_state.get(METHOD_KEY, "pca"),
    colour=st.session_state.get(COLOUR_KEY, "true"),
    images=count,
    train=st.session_state.get(TRAIN_KEY, 2_000),
)
try:
    features, features_key = ui.layer_features(selection, blocks, count)
except LensError as err:
    ui.show_error(err)
    st.stop()

names = [b.name for b in blocks]
labels = {b.name: b.label for b in blocks}

# --------------------------------------------------------------------------- projector


def projector() -> None:
    """One layer's features in 2-D or 3-D; a chosen image and its nearest neighbours."""
    bar = ui.controls("Projector").container(horizontal=True, gap="medium")
    layer = bar.selectbox(
        "Layer",
        names,
        format_func=labels.get,
        help="The model's blocks in forward order; the default is what the last linear layer "
        "reads. Conv maps are averaged over their positions: one number per channel.",
        **ui.kept(LAYER_KEY, names, default_layer),
    )
    method = bar.segmented_control(
        "Method",
        list(projections.METHODS),
        format_func=projections.METHODS.get,
        required=True,
        help="PCA is instant and linear; t-SNE and UMAP keep neighbours together (seconds; "
        "distances between far clusters mean little).",
        **ui.kept(METHOD_KEY, list(projections.METHODS), "pca"),
    )
    dims = bar.segmented_control(
        "Dimensions",
        DIMS,
        format_func=lambda d: f"{d}-D",
        required=True,
        **ui.kept(DIMS_KEY, list(DIMS), 2),
    )
    colour_by = bar.segmented_control(
        "Colour by",
        list(rfig.COLOUR_BY),
        format_func=rfig.COLOUR_BY.get,
        required=True,
        **ui.kept(COLOUR_KEY, list(rfig.COLOUR_BY), "true"),
    )
    shown = [int(i) for i in features.indices]
    if st.session_state.get(IMAGE_KEY) not in shown:  # an image of another sample: none
        st.session_state[IMAGE_KEY] = None
    image = bar.selectbox(
        "Image",
        shown,
        format_func=lambda i: f"{i:,}",
        placeholder="click a point, or type an image's index",
        help="One of the shown test images (by its index in the split): it is ringed in the "
        "map, and its nearest neighbours in this layer show below.",
        **ui.held(IMAGE_KEY, None),
    )
    values = features.layers[layer]
    key = {**features_key, "layer": layer}
    try:
        with ui.work_bar(f"{projections.METHODS[method]} of {len(values):,} images") as progress:
            projection = projections.cached_project(method, values, key, dims, on_progress=progress)
    except LensError as err:
        ui.show_error(err)
        st.stop()
    focus = shown.index(image) if image in shown else None
    context = f"{ui.data_id(test)}|{features_key['model']}|{features_key['images']}|{layer}|"
    context += f"{method}|{dims}"  # a box or lasso selection belongs to this projection
    chart_area = st.container()
    near = ui.focus_panel(features, test, classes, labels[layer], layer, focus)
    if picked := ui.gallery_rows(features, context):
        ui.picked_gallery(features, test, classes, picked)
    axes = rfig.pca_axis_titles(projection.explained, dims) if method == "pca" else None
    figure_key = (
        "projection", ui.data_id(test), features_key["images"], features_key["model"], layer,
        method, dims, colour_by, focus, tuple(classes),
    )  # fmt: skip
    fig = ui.cached_figure(
        figure_key,
        lambda: rfig.embedding_scatter(
            projection.coords,
            features.labels,
            features.predicted,
            classes,
            colour_by=colour_by,
            indices=features.indices,
            axis_titles=axes,
            focus=focus,
            neighbours=near,
            title=f"{projection.title} of {labels[layer]}",
        ),
    )
    with chart_area:
        ui.figure(
            fig,
            f"projection-{layer}-{method}",
            key=CHART_KEY,
            on_select=lambda: ui.chart_picked(CHART_KEY, IMAGE_KEY, context, features.indices),
            selection_mode=("points", "box", "lasso"),
        )
        area = "; with the toolbar's box or lasso tool, draw around points to see them all"
        st.caption(
            f"{len(values):,} test images, {values.shape[1]:,} numbers each at this layer. Click "
            f"a point (or choose an image above) to see it and its nearest neighbours"
            f"{area if dims == 2 else ''}."
        )
    if method == "pca" and len(projection.explained):
        ui.figure(
            rfig.explained_variance_bars(projection.explained),
            f"explained-variance-{layer}",
            key="repr_variance",
            width="content",
        )


# --------------------------------------------------------------------------- probes


def probes() -> None:
    """Linear probe, k-NN and silhouette per layer, once asked for."""
    st.caption(
        "For every layer, a logistic regression (a *linear probe*) learns the classes from the "
        "layer's features of training images and is scored on the test images above; k-NN "
        f"votes among the {representations.KNN_K} most similar training images; the "
        "silhouette says how far apart the classes lie (−1..1)."
    )
    try:
        train_total = len(ui.load_data(selection, view, "train"))
    except LensError as err:
        ui.show_error(err)
        return
    probes_bar = ui.controls("Probes").container(horizontal=True, gap="medium")
    train_count = ui.image_count(
        probes_bar,
        "Training images",
        TRAIN_COUNTS,
        train_total,
        2_000,
        TRAIN_KEY,
        "A seeded random sample of the training split the probes learn from; the last choice "
        "is the whole split.",
    )
    context = f"{features_key['model']}|{features_key['images']}|{train_count}"
    asked = st.session_state.get(PROBE_ASKED_KEY) == context
    if probes_bar.button("Run the probes", icon=":material/play_arrow:", type="primary"):
        st.session_state[PROBE_ASKED_KEY] = context
        asked = True
    if asked:
        try:
            train, train_key = ui.layer_features(selection, blocks, train_count, "train")
            with ui.work_bar("Training a probe per layer") as progress:
                report = representations.cached_probes(
                    train, features, train_key, features_key, on_progress=progress
                )
        except LensError as err:
            ui.show_error(err)
            report = None
        if report is not None:
            ui.probe_results(report, labels)
    else:
        st.info(
            "Training one probe per layer takes seconds to a minute: press Run the probes.",
            icon=":material/info:",
        )


# --------------------------------------------------------------------------- layer similarity


def similarity() -> None:
    """Linear CKA between this model's layers, or against a second checkpoint's."""
    cards = [
        card
        for card in ui.saved_checkpoints()[0]
        if card.dataset == selection.dataset and ui.checkpoint_key(card.path) != view.key
    ]
    others = {ui.checkpoint_key(card.path): card for card in cards}
    options = [NONE, *others]
    other = (
        ui.controls("Layer similarity")
        .columns([1, 1])[0]
        .selectbox(
            "Compare with",
            options,
            format_func=lambda k: k if k == NONE else ui.model_label(k),
            help="A second checkpoint of the same dataset: CKA between its layers and this "
            "model's, on the same test images.",
            **ui.kept(OTHER_KEY, options, NONE),
        )
    )
    row_names = [labels[n] for n in names]
    try:
        if other == NONE:
            matrix = representations.cached_cka(features, features_key)
            fig = rfig.cka_heatmap(matrix, row_names)
            name = "cka"
        else:
            second = ui.Selection(other, selection.dataset)
            other_blocks, _ = ui.representation_layers(second)
            other_features, other_key = ui.layer_features(second, other_blocks, count)
            matrix = representations.cached_cka(features, features_key, other_features, other_key)
            fig = rfig.cka_heatmap(
                matrix,
                row_names,
                [b.label for b in other_blocks],
                row_title=view.label.split(" — ")[0],
                column_title=ui.model_label(other).split(" — ")[0],
            )
            name = "cka-two-models"
    except LensError as err:
        ui.show_error(err)
        st.stop()
    ui.figure(fig, name, key="repr_cka", width="content")
    st.caption(
        f"Linear CKA of the layers' features on the same {len(features):,} test images: "
        "1 = the same representation up to rotation and scale, 0 = unrelated."
    )


ui.lazy_tabs(TAB_KEY, TABS, (projector, probes, similarity))
