"""The Model page's downloads: the "Build HTML report" button with the cached report it
downloads, and the model as an ONNX file."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.channels import report_atlases
from dashboard.ui.choices import Selection
from dashboard.ui.data_roots import data_root
from dashboard.ui.loaders import (
    load_model,
    loaded_model,
    model_id,
    model_input_size,
    mtime_of,
    shape_flow,
    split_of,
)
from dashboard.ui.representations import report_representations
from dashboard.ui.show import plain, show_error

if TYPE_CHECKING:  # torch-heavy modules load on first use: the home page paints before them
    from dashboard import data


@st.cache_data(max_entries=4, show_spinner=False)
def _report_html(
    model_key: str,
    mtime: float,
    content: str,
    split_content: str,
    _images: data.Split,
    atlas_layers: tuple[tuple[str, int, int], ...] = (),
    representations: tuple[tuple[str, object], ...] = (),
) -> str:
    """The report of a model (choice, files' mtime, weights' content) on a test split (by its
    content: pixels, labels, class names, normalization), with the channel atlases of
    `atlas_layers` ((layer, images, visualization steps), as the Channels page made them) and
    the Representations page's map and probes when `representations` holds its choices."""
    from dashboard import report
    from dashboard.analysis import metrics

    model, view, _ = loaded_model(model_key, mtime)
    pred = metrics.cached_predict(model, _images, content)
    flow = shape_flow(model_key, tuple(_images.images.shape[1:]), mtime)
    facts = report.ModelFacts(view.label, view.architecture, view.untrained, view.card)
    atlases = [_atlas_part(model, _images, content, *entry) for entry in atlas_layers]
    mapped = _map_part(model, _images, content, dict(representations)) if representations else None
    return report.build_report(
        model, facts, _images, pred, flow=flow, atlases=atlases, representations=mapped
    )


def _map_part(model, split: data.Split, content: str, shown: dict):
    """The Representations page's map in 2-D (`shown`: its choices; features and projection read
    back from the result cache, else computed now) and its probes when they were run."""
    from dashboard import report
    from dashboard.analysis import projections
    from dashboard.analysis import representations as rep

    blocks, default_layer = rep.projector_layers(model, tuple(split.images.shape[1:]))
    chosen = rep.sample_indices(len(split), shown["images"])
    key = rep.features_key(content, split, blocks, chosen, False)
    features = rep.cached_features(model, content, split, blocks, indices=chosen)
    layer = shown["layer"] if shown["layer"] in features.layers else default_layer
    values = features.layers[layer]
    projection = projections.cached_project(shown["method"], values, {**key, "layer": layer}, 2)
    try:
        train = split_of(shown["dataset"], "train", shown["size"], shown["root"])
    except LensError:  # no training split here: no probes were run either
        train = None
    probes = None
    if train is not None:
        train_chosen = rep.sample_indices(len(train), shown["train"])
        train_key = rep.features_key(content, train, blocks, train_chosen, False)
        if rep.probes_stored(train_key, key):  # run on the page: read back, never run here
            train_set = rep.cached_features(model, content, train, blocks, indices=train_chosen)
            probes = rep.cached_probes(train_set, features, train_key, key)
    labels = {b.name: b.label for b in blocks}
    return report.RepresentationsPart(
        labels[layer],
        projection,
        features.indices,
        features.labels,
        features.predicted,
        tuple(str(c) for c in split.info.classes),
        shown["colour"],
        probes,
        labels,
    )


def _atlas_part(model, split: data.Split, content: str, layer: str, images: int, steps: int):
    """A layer's atlas for the report: read back from the result cache when the Channels page
    made it (else computed now), with its feature visualizations when they were made."""
    from dashboard import data, report
    from dashboard.analysis import channels, feature_vis

    shown = data.take_first(split, images)
    found = channels.layer_atlas(model, shown, layer, content)
    settings = feature_vis.VisSettings(steps=steps, threads=1)
    pictures = None
    if channels.visualization_stored(content, layer, split.info, settings):
        pictures = channels.visualizations(model, layer, split.info, content, settings).rgb()
    classes = tuple(str(c) for c in split.info.classes)
    return report.AtlasPart(found, shown.images.numpy(), classes, pictures)


def report_button(selection: Selection) -> None:
    """'Build HTML report': one click builds the selected model's report (card, shape flow,
    curves, filters, activations, confusion matrix, per-class report) and downloads it."""
    from dashboard import report

    try:  # mismatches show here; the build itself runs on Streamlit's download thread
        _, view = load_model(selection)
        size = model_input_size(selection, view)
    except LensError as err:
        show_error(err)
        return
    key, mtime, root = selection.model_key, mtime_of(selection.model_key), data_root()
    atlas_layers = tuple((layer, n, steps) for layer, n, steps in report_atlases(key))
    shown = report_representations(key)
    mapped = (
        tuple(sorted({**shown, "dataset": selection.dataset, "size": size, "root": root}.items()))
        if shown
        else ()
    )
    facts = report.ModelFacts(view.label, view.architecture, view.untrained, view.card)

    def build() -> str:  # called on click, outside the script run: no session state here
        from dashboard.base import cache

        try:
            split = split_of(selection.dataset, "test", size, root)
            identity = json.dumps(cache.split_identity(split))
            return _report_html(
                key, mtime, model_id(selection), identity, split, atlas_layers, mapped
            )
        except LensError as err:
            return report.error_page(view.label, str(err))

    _download_row(
        "Build HTML report",
        build,
        report.file_name(facts),
        mime="text/html",
        icon=":material/description:",
        key="lens_report",
        help="One self-contained file to send or open offline",
        caption=f"This model on the {plain(selection.dataset)} test split in one HTML file "
        "(about 6 MB, opens offline): card, shape flow, training curves, first-layer filters, "
        "activations, confusion matrix and per-class report. The first build classifies every "
        "test image."
        + (
            f" With the channel atlas of {', '.join(layer for layer, _, _ in atlas_layers)}."
            if atlas_layers
            else " Add a layer's channel atlas on the Channels page."
        )
        + (
            " With the Representations page's map and probes."
            if shown
            else " Add a map of a layer and the probes on the Representations page."
        ),
    )


@st.cache_data(max_entries=4, show_spinner=False)
def _onnx_file(model_key: str, mtime: float, content: str) -> bytes:
    """The model's ONNX file (choice, files' mtime, weights' content), with its card's
    normalization and class names in the file's metadata."""
    from dashboard.models import export

    model, view, _ = loaded_model(model_key, mtime)
    norm = getattr(view.card, "normalization", None) or {}
    data, _ = export.onnx_bytes(
        model,
        view.input_shape,
        mean=norm.get("mean", ()),
        std=norm.get("std", ()),
        classes=view.classes,
    )
    return data


def onnx_button(selection: Selection) -> None:
    """'ONNX': the selected model as an ONNX file, made on click (a few seconds)."""
    try:
        _, view = load_model(selection)
    except LensError:
        return  # the page already says why the model cannot be loaded
    key, mtime, content = selection.model_key, mtime_of(selection.model_key), model_id(selection)
    stem = getattr(view.card, "name", None) or view.architecture.replace(":", "-")
    _download_row(
        "ONNX",
        lambda: _onnx_file(key, mtime, content),
        f"{stem}.onnx",
        mime="application/octet-stream",
        icon=":material/output:",
        key="lens_onnx",
        help="The model as an ONNX file: opens in Netron, runs in onnxruntime",
        caption="The network as an ONNX file (any batch size; its input normalized as the model "
        "was trained, the numbers and class names in the file's metadata): open it in Netron or "
        "run it with onnxruntime.",
    )


def _download_row(label: str, build, file_name: str, *, caption: str, **button) -> None:
    """A download button made on click (`build` runs outside the script) and what it holds."""
    left, right = st.columns([1, 3], vertical_alignment="center")
    left.download_button(label, data=build, file_name=file_name, on_click="ignore", **button)
    right.caption(caption)
