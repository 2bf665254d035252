"""What the Representations page computes and shows: the layers a model's representations are
read at, their features for a sample of a split (kept in the result cache by content), an image
with its nearest neighbours in a layer, the images picked with a box or lasso, and the probes'
scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.choices import Selection
from dashboard.ui.loaders import (
    ModelView,
    load_data,
    load_model,
    loaded_model,
    model_id,
    mtime_of,
    shape_flow,
)
from dashboard.ui.navigation import open_in_activations
from dashboard.ui.show import figure, plain, progress_bar, table
from dashboard.ui.state import kept

if TYPE_CHECKING:
    from dashboard import data

NEIGHBOURS, THUMB_SIDE, GALLERY_COLUMNS = 8, 84, 5  # the neighbours' gallery
PICKED_KEY = "repr_picked"  # {"for": the projection's context, "indices": split indices}
PICKED_SHOWN, PICKED_COLUMNS = 48, 6  # a box or lasso selection's thumbnails; the rest are counted
REPORT_KEY = "lens_report_representations"  # {model key: what the HTML report shows of the page}


@st.cache_resource(max_entries=8, show_spinner="Finding the layers…")
def _representation_layers(model_key: str, mtime: float, input_shape: tuple[int, ...]):
    from dashboard.analysis import representations

    model, _, _ = loaded_model(model_key, mtime)
    return representations.projector_layers(model, input_shape)


def representation_layers(selection: Selection):  # -> (list[representations.Block], str)
    """The selected model's blocks in forward order (plus the last linear layer's input) and
    the projector's default layer; traced once per checkpoint and input shape."""
    _, view = load_model(selection)
    key = selection.model_key
    return _representation_layers(key, mtime_of(key), tuple(view.input_shape))


def layer_features(
    selection: Selection, blocks: Sequence, count: int | None, split: str = "test"
):  # -> (representations.Features, features key)
    """The selected model's features at `blocks` for a seeded sample of `count` images of the
    split (all when None), in one forward pass: computed once per model content, split,
    blocks and images, ever (the result cache); a bar with counts shows while they run."""
    from dashboard.analysis import representations

    model, view = load_model(selection)
    images = load_data(selection, view, split)
    chosen = representations.sample_indices(len(images), count)
    key = representations.features_key(model_id(selection), images, blocks, chosen, False)
    n = len(chosen)
    with progress_bar(f"Reading every layer of {n:,} {split} images") as progress:
        found = representations.cached_features(
            model,
            key["model"],
            images,
            blocks,
            indices=chosen,
            on_progress=lambda fraction, _: progress(round(fraction * n), n),
        )
    return found, key


def image_count(
    where, label: str, steps: Sequence[int], total: int, default: int, key: str, help: str
) -> int:
    """How many images of a split of `total`: a slider over `steps` below it and then `total`
    (the whole split), kept under `key`; no slider when the split is no larger than them."""
    counts = [c for c in steps if c < total] + [total]
    if len(counts) == 1:
        return total
    return where.select_slider(
        label,
        counts,
        format_func=lambda c: f"{c:,}",
        help=help,
        **kept(key, counts, min(default, total)),
    )


def report_map_toggle(where, model_key: str, **shown: object) -> None:
    """A toggle putting the page's map (`shown`: layer, method, colour, images, train — the
    choices it is drawn with) and its probes, once run, into the model's HTML report, which the
    Model page builds; the choices are refreshed on every run while it is on."""
    chosen = st.session_state.setdefault(REPORT_KEY, {})
    if where.toggle(
        "In the HTML report",
        value=model_key in chosen,
        key=f"repr_report_{model_key}",
        help="Adds the map you are looking at (in 2-D) and the probes, once run, to the report "
        "the Model page builds.",
    ):
        chosen[model_key] = shown
    else:
        chosen.pop(model_key, None)


def report_representations(model_key: str) -> dict | None:
    """What the model's HTML report shows of the Representations page (None: nothing)."""
    return st.session_state.get(REPORT_KEY, {}).get(model_key)


def require_made_for(selection: Selection, view: ModelView, info: data.DatasetInfo) -> None:
    """A LensError unless the dataset's images and classes fit the model's input and outputs."""
    flow = shape_flow(selection.model_key, view.input_shape, mtime_of(selection.model_key))
    outputs = flow.output_shape[-1] if flow.output_shape else len(view.classes)
    if view.input_shape[0] != info.channels:
        raise LensError(
            f"{view.label} takes {view.input_shape[0]}-channel images, {info.title} has "
            f"{info.channels}: pick a dataset the model was made for"
        )
    if outputs != info.num_classes:
        raise LensError(
            f"{view.label} has {outputs:,} outputs, {info.title} {info.num_classes:,} classes: "
            "pick a dataset the model was made for"
        )


def thumbnail_card(
    features, test: data.Split, row: int, caption: str, key_prefix: str = "repr_open"
) -> None:
    """One shown image (a row of the features): its picture, caption and a link to Activations."""
    from dashboard.analysis import confusion

    index = int(features.indices[row])
    st.image(confusion.thumbnail(test.images[index].numpy(), THUMB_SIDE))
    st.caption(caption)
    if st.button(
        f"#{index}",
        key=f"{key_prefix}_{row}",
        icon=":material/open_in_new:",
        help=f"Open test image {index} on the Activations page",
    ):
        open_in_activations(index)


def focus_panel(
    features, test: data.Split, classes: list[str], layer_label: str, layer: str, row: int | None
) -> list[int]:
    """The chosen image (a row of `features`) and its nearest neighbours in `layer`; → the
    neighbours' rows (none when no image is chosen)."""
    from dashboard.analysis import projections

    if row is None:
        return []
    found = projections.nearest_neighbours(features.layers[layer], row, NEIGHBOURS)
    true, guess = classes[features.labels[row]], classes[features.predicted[row]]
    mark = "✓" if true == guess else "✗"
    st.markdown(
        f"**Image {int(features.indices[row])}** · true **{plain(true)}** · predicted "
        f"**{plain(guess)}** {mark}. Its {len(found.indices)} nearest neighbours in "
        f"{plain(layer_label)} (cosine similarity of the features):"
    )
    cards = [(row, "the image")] + [
        (int(near), f"{plain(classes[features.labels[near]])} · {similarity:.3f}")
        for near, similarity in zip(found.indices, found.similarity, strict=True)
    ]
    _card_rows(features, test, cards, "repr_open", GALLERY_COLUMNS)
    return [int(n) for n in found.indices]


def _card_rows(
    features, test: data.Split, cards: Sequence[tuple[int, str]], key: str, columns: int
) -> None:
    """Thumbnail cards (row, caption) in rows of `columns`, wide enough for every button."""
    for start in range(0, len(cards), columns):
        shown = cards[start : start + columns]
        for cell, (row, caption) in zip(st.columns(columns), shown, strict=False):
            with cell:
                thumbnail_card(features, test, row, caption, key)


def chart_picked(chart_key: str, image_key: str, context: str, indices) -> None:
    """The projector's on_select: a click makes its image the chosen one (and ends a gallery);
    a box or lasso keeps the images inside as this projection's gallery (`context`: the
    model, images, layer, method and dimensions it was drawn on); an empty event clears it."""
    from dashboard.analysis import picks

    pick = picks.picked_rows(st.session_state.get(chart_key))
    rows = [r for r in pick.rows if 0 <= r < len(indices)]
    if pick.area and rows:
        st.session_state[PICKED_KEY] = {"for": context, "indices": [int(indices[r]) for r in rows]}
        st.session_state[image_key] = None
        return
    st.session_state.pop(PICKED_KEY, None)
    if rows and not pick.area:
        st.session_state[image_key] = int(indices[rows[0]])


def gallery_rows(features, context: str) -> list[int]:
    """The rows of `features` the reader picked with a box or lasso on this projection (none
    when the kept pick was made on another model, sample, layer, method or dimensions). A pick
    made for "the next projection drawn" ("for": None) becomes this one's."""
    picked = st.session_state.get(PICKED_KEY)
    if not picked:
        return []
    if picked.get("for") is None:
        picked["for"] = context
    if picked["for"] != context:
        return []
    row_of = {int(index): row for row, index in enumerate(features.indices)}
    return [row_of[i] for i in picked["indices"] if i in row_of]


def picked_gallery(features, test: data.Split, classes: list[str], rows: Sequence[int]) -> None:
    """The images of a box or lasso selection: how many, right and wrong, by class; the first
    PICKED_SHOWN as cards (mistakes first), each opening on Activations; a button clearing it."""
    from dashboard.analysis import picks

    summary = picks.summarize(rows, features.labels, features.predicted, classes)
    head, clear = st.columns([5, 1], vertical_alignment="center")
    head.markdown(f"**{plain(summary.text())}**")
    clear.button(
        "Clear",
        key="repr_picked_clear",
        icon=":material/close:",
        on_click=lambda: st.session_state.pop(PICKED_KEY, None),
        help="Forget this selection (a double-click on the map clears it and its outline)",
    )
    order = picks.gallery_order(rows, features.labels, features.predicted)
    cards = []
    for row in order[:PICKED_SHOWN]:
        true, guess = classes[features.labels[row]], classes[features.predicted[row]]
        verdict = "✓" if true == guess else f"→ {plain(guess)} ✗"
        cards.append((row, f"{plain(true)} {verdict}"))
    st.caption(
        "Each image's true class, and → the predicted one where the model is wrong; the "
        "mistakes come first. Double-click the map to clear its outline before clicking a "
        "single point (plotly may ignore a click while the outline is drawn)."
    )
    _card_rows(features, test, cards, "repr_pick", PICKED_COLUMNS)
    if len(order) > PICKED_SHOWN:
        st.caption(f"… and {len(order) - PICKED_SHOWN:,} more.")


def probe_results(report, labels: dict[str, str]) -> None:
    """The probes' scores per layer: a chart, a table and what they were measured on."""
    from dashboard.figures import representations as rfig

    figure(
        rfig.probe_report_chart(report, labels),
        "probes",
        key="repr_probes",
        width="content",
    )
    table(
        [
            {
                "Layer": labels.get(p.layer, p.layer),
                "Features": p.features,
                "Linear probe %": round(100 * p.probe_accuracy, 2),
                "k-NN %": round(100 * p.knn_accuracy, 2),
                "Silhouette": None if p.silhouette is None else round(p.silhouette, 3),
            }
            for p in report.layers
        ],
        {
            "Features": st.column_config.NumberColumn(format="localized"),
            "Linear probe %": st.column_config.NumberColumn(format="%.2f"),
            "k-NN %": st.column_config.NumberColumn(format="%.2f"),
            "Silhouette": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    st.caption(
        f"Trained on {report.train_images:,} training images, scored on "
        f"{report.test_images:,} test images; the model itself gets "
        f"{report.model_accuracy:.2%} of them right. Silhouette on "
        f"{report.silhouette_images:,} images."
    )
