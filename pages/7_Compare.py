"""Compare: training curves of several runs overlaid beside their hyper-parameters, then two
checkpoints of one architecture side by side — how far apart each layer's weights are, their
filters on one colour scale, and what each makes of the same test image.

Model A is the sidebar's; model B is picked here among checkpoints whose tensors have the same
shapes (another option of the architecture, such as a sigmoid LeNet-5, still qualifies).
"""

from functools import partial
from pathlib import Path

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Compare", icon=":material/compare:")
selection = ui.sidebar()

from dashboard import figures  # noqa: E402
from dashboard.analysis import filters, inputs, probe  # noqa: E402
from dashboard.training import compare  # noqa: E402

B_KEY = "compare_b"  # the overlay keeps its choices under compare_runs, compare_curve
FILTER_KEY, CHANNEL_KEY = "compare_filter_layer", "compare_channel"
IMAGE_KEY, LAYER_KEY = "compare_image", "compare_layer"
MEAN = "mean"  # the channel choice: the mean over the layer's input channels
GRID_SIDE = 220  # pixels: the two filter grids share a row (half of a laptop's page)
MAPS_SIDE = 220  # and so do the two activation mosaics
THUMBNAIL = 112  # pixels of the test image shown beside its controls


# --------------------------------------------------------------------------- training curves


def curves_section() -> None:
    st.header("Training curves", divider="gray")
    session_runs = st.session_state.get(ui.TRAIN_RUNS_KEY, [])  # the Train page's
    ui.runs_overlay(session_runs, "compare", default_keys=compare.default_keys)


# --------------------------------------------------------------------------- two checkpoints


def pick_b(model_a, view_a) -> tuple[str, compare.Match] | None:
    """Model B among the checkpoints that fit A's shapes, or None after saying why none does."""
    key_a, name_a = selection.model_key, ui.short_name(view_a)
    keys = ui.partner_candidates(key_a)
    found, architectures, labels = ui.partners_of(key_a, view_a.architecture, model_a, keys)
    comparable, refused = list(found.comparable), found.refused
    shown = {k: compare.shown_path(ui.checkpoint_path(k)) for k in keys}
    links = {k: ui.model_link(k) for k in keys}  # never a server path in the address
    by_link = {link: k for k, link in links.items() if link}
    ui.url_bound("b", B_KEY, by_link.get, links.get)
    wanted = st.session_state.get(B_KEY)
    # A B that does not fit: say why, unless A just changed to a model that has no partner
    # at all (the box below says so).
    if wanted in refused or (wanted in shown and wanted not in comparable and comparable):
        why = refused.get(wanted) or (
            f"it is a {architectures[wanted] or 'model of unknown architecture'}, "
            f"A is a {view_a.architecture}"
        )
        st.warning(
            ui.plain(f"{shown[wanted]} cannot stand beside {name_a} as B: {why}."),
            icon=":material/warning:",
        )
    if not comparable:
        reasons = "".join(f"\n- {ui.plain(f'{shown[k]}: {why}')}" for k, why in refused.items())
        arch = ui.plain(view_a.architecture)
        st.info(
            f"No other checkpoint is a **{arch}** with weights of the same shapes, so nothing "
            f"can stand beside {ui.plain(name_a)}. Pick a LeNet-5 in the sidebar (the "
            f"seed study has six), or train and save another {arch} on the Train page." + reasons,
            icon=":material/compare:",
        )
        return None
    default = compare.default_partner(
        ui.short_name(view_a), {k: Path(shown[k]).name for k in comparable}
    )
    with ui.controls("Model B"):
        row = st.columns([2, 3], gap="medium", vertical_alignment="bottom")
        row[0].markdown(f"**A** (the sidebar's model)  \n{ui.plain(view_a.label)}")
        b_key = row[1].selectbox(
            "Model B",
            comparable,
            format_func=labels.get,
            help=f"Checkpoints of {view_a.architecture} whose tensors have A's shapes "
            f"({len(comparable)} of them).",
            **ui.kept(B_KEY, comparable, default),
        )
    return b_key, found.matches[b_key]


def filters_section(model_a, model_b, names: tuple[str, str], source: tuple, found) -> None:
    st.subheader("Filters side by side")
    layers = [
        layer
        for layer in filters.conv_layer_list(model_a)
        if f"{layer.name}.weight" in found.shared_filters
    ]
    by_name = {layer.name: layer for layer in layers}
    ui.url_bound("filters", FILTER_KEY, ui.one_of(by_name))
    with ui.controls("Filters"):
        row = st.columns([3, 2], gap="medium")
        name = row[0].selectbox(
            "Conv layer",
            list(by_name),
            format_func=lambda n: by_name[n].label,
            **ui.kept(FILTER_KEY, list(by_name), layers[0].name),
        )
        layer = by_name[name]
        channels = [MEAN, *range(layer.in_channels)]
        choice = row[1].selectbox(
            "Input channel",
            channels,
            format_func=lambda c: "mean of all input channels" if c == MEAN else f"channel {c}",
            disabled=layer.in_channels == 1,
            help="Each filter has one kernel per input channel: their mean, or one of them.",
            **ui.kept(CHANNEL_KEY, channels, MEAN),
        )
    channel = None if choice == MEAN else int(choice)
    weights_a = filters.layer_weights(model_a, name).numpy()
    weights_b = filters.layer_weights(model_b, name).numpy()
    limit = compare.shared_limit(weights_a, weights_b, channel)
    cosines, changes = compare.filter_similarity(weights_a, weights_b)
    columns = st.columns(2, gap="medium")
    for column, side, weights, model_name in zip(
        columns, "AB", (weights_a, weights_b), names, strict=True
    ):
        with column:
            key = ("filters", side, *source, name, channel)
            build = partial(
                figures.filter_grid,
                weights,
                channel=channel,
                title=f"{side} · {model_name} · filters of {name}",
                max_side=GRID_SIDE,
                limit=limit,
            )
            ui.figure(ui.cached_figure(key, build), f"filters-{side}-{name}", key=f"filters_{side}")
    below = st.columns([1, 1], gap="medium")
    with below[0]:
        ui.table(
            {"Filter": range(len(cosines)), "cos(A, B)": cosines, "Change": 100 * changes},
            height=min(38 + 35 * len(cosines), 320),
            column_config={
                "cos(A, B)": st.column_config.ProgressColumn(
                    min_value=-1.0, max_value=1.0, format="%.3f"
                ),
                "Change": st.column_config.NumberColumn(
                    "‖B − A‖ / ‖A‖",
                    format="%.0f %%",
                    help="per filter, over all its input channels",
                ),
            },
        )
    below[1].caption(
        f"Both grids share one colour scale (±{limit:.3g}): the same colour is the same weight. "
        "The table pairs filter k of A with filter k of B."
    )


def activations_section(model_a, model_b, view_a, view_b, names: tuple[str, str]) -> None:
    st.subheader("One test image through both")
    try:
        split = ui.load_data(selection, view_a)
    except LensError as err:
        ui.show_error(err)
        return
    if view_b.input_shape != view_a.input_shape:
        st.info(
            f"A takes {'×'.join(map(str, view_a.input_shape))} images, B "
            f"{'×'.join(map(str, view_b.input_shape))}: one image cannot go through both."
        )
        return
    info = split.info
    ui.url_bound("image", IMAGE_KEY, ui.index_below(len(split)))
    with ui.controls("Test image and layer"):
        row = st.columns([1.2, 0.6, 2.2], gap="medium", vertical_alignment="center")
        index = row[0].number_input(
            f"Test image (0 – {len(split) - 1:,})",
            min_value=0,
            max_value=len(split) - 1,
            step=1,
            **ui.kept(IMAGE_KEY, range(len(split)), 0),
        )
    item = inputs.test_image(split, int(index))
    x = inputs.model_input(item.pixels, info)
    x_key = inputs.input_key(x.numpy())  # the pixels as normalized for this dataset
    key_a, key_b = selection.model_key, st.session_state[B_KEY]
    try:
        first = ui.passed(key_a, ui.mtime_of(key_a), x_key, model_a, x)
        second = ui.passed(key_b, ui.mtime_of(key_b), x_key, model_b, x)
    except LensError as err:
        ui.show_error(err)
        return
    common = compare.common_layers(first, second)
    if not common:
        st.info("A and B have no layer with outputs of the same shape to set side by side.")
        return
    convs = {name for name, _ in probe.conv_layers(model_a)}
    default = next((k for k in common if k in convs), common[0])
    ui.url_bound("layer", LAYER_KEY, ui.one_of(common))
    layer = row[2].selectbox(
        "Layer",
        common,
        format_func=lambda k: f"{k} · {'×'.join(map(str, first.maps[k].shape))}",
        help="Layers both models have with outputs of the same shape.",
        **ui.kept(LAYER_KEY, common, default),
    )
    pixels = item.pixels[0] if item.pixels.shape[0] == 1 else item.pixels.transpose(1, 2, 0)
    k = max(1, THUMBNAIL // pixels.shape[0])
    label = ui.classes_for(view_a, len(first.probabilities), info)[item.label]
    row[1].image(
        pixels.repeat(k, axis=0).repeat(k, axis=1), caption=f"#{int(index):,}: {ui.plain(label)}"
    )
    maps_a, maps_b = first.maps[layer], second.maps[layer]
    low, high = compare.shared_range(maps_a, maps_b)
    similarity = compare.cosine(maps_a, maps_b)
    columns = st.columns(2, gap="large")
    passes = ((first, view_a, maps_a, key_a), (second, view_b, maps_b, key_b))
    for column, side, name, (result, view, maps, model_key) in zip(
        columns, "AB", names, passes, strict=True
    ):
        # Everything the two figures show: the model, its input, the true class, the side.
        model_id = (model_key, ui.mtime_of(model_key), x_key, item.label, side, name)
        classes = ui.classes_for(view, len(result.probabilities), info)
        with column:
            bars = partial(
                figures.probability_bars,
                result.probabilities,
                classes,
                true_class=item.label,
                top=5,
                title=f"{side} · {name} · prediction",
            )
            ui.figure(
                ui.cached_figure(("bars", *model_id, tuple(classes)), bars),
                f"prediction-{side}",
                key=f"bars_{side}",
            )
            grid = partial(
                figures.activation_grid,
                maps,
                scale="global",
                global_range=(low, high),
                title=f"{side} · {name} · maps of {layer}",
                max_side=MAPS_SIDE,
            )
            key = ("maps", *model_id, layer, low, high, names)
            ui.figure(ui.cached_figure(key, grid), f"maps-{side}-{layer}", key=f"maps_{side}")
    st.caption(
        f"One colour scale for both ({low:.3g} … {high:.3g}); cosine between A's and B's maps "
        f"of {layer}: {similarity:.3f}."
    )


def checkpoints_section() -> None:
    st.header("Two checkpoints", divider="gray")
    try:
        model_a, view_a = ui.load_model(selection)
    except LensError as err:
        ui.show_error(err)
        return
    picked = pick_b(model_a, view_a)
    if picked is None:
        return
    b_key, found = picked
    try:
        model_b, view_b = ui.load_model(ui.Selection(b_key, selection.dataset))
    except LensError as err:
        ui.show_error(err)
        return
    if found.left_out():
        st.caption(f"Not compared — {ui.plain(found.left_out())}.")
    key_a = selection.model_key
    source = (key_a, ui.mtime_of(key_a), b_key, ui.mtime_of(b_key))
    names = (ui.short_name(view_a), ui.short_name(view_b))
    ui.weights_table(
        ui.distances(*source, model_a, model_b), compare.start_note(view_a.card, view_b.card)
    )
    filters_section(model_a, model_b, names, source, found)
    activations_section(model_a, model_b, view_a, view_b, names)


st.title("Compare")
st.caption(
    "Several runs' training curves overlaid with the hyper-parameters that set them apart; then "
    "two checkpoints of one architecture side by side: weights, filters and what each makes of "
    "the same image."
)
curves_section()
checkpoints_section()
