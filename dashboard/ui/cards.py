"""The Model page's cards: what the selected model is (its architecture's facts, its checkpoint's
card) and what the selected dataset is (sizes, sources, normalization, classes)."""

from __future__ import annotations

import streamlit as st

from dashboard.base import paths
from dashboard.base.errors import LensError
from dashboard.ui.choices import Selection
from dashboard.ui.data_roots import data_root, data_root_field
from dashboard.ui.loaders import (
    ModelView,
    dataset_split,
    load_model,
    mtime_of,
    predictions,
    shape_flow,
)
from dashboard.ui.show import Metric, figure, metric_row, percent, plain, show_error


@st.cache_data(max_entries=16, show_spinner=False)
def architecture_facts(model_key: str, mtime: float) -> dict:
    """print(model), its layers by kind and its parameters (keyed by checkpoint mtime)."""
    from dashboard.analysis import summary

    model, _ = load_model(Selection(model_key, ""))
    return summary.architecture_facts(model)


def small_curves(card) -> None:
    """The card's training curves, small, side by side."""
    from dashboard import figures
    from dashboard.training import runs

    if not card.history:
        return
    columns = st.columns(2)
    for column, metric in zip(columns, ("accuracy", "loss"), strict=True):
        fig = figures.training_curves(
            [runs.history_curve(card.history, card.name, metric)],
            metric=metric,
            title=f"Training {metric} per epoch",
        )
        fig.update_layout(height=300, showlegend=False)
        with column:
            figure(fig, f"{card.name}-{metric}", key=f"card_{metric}")


HYPER_ORDER = ("optimizer", "lr", "schedule", "weight_decay", "batch_size", "epochs", "seed")


def hyperparameters(training: dict) -> str:
    """The card's training settings as one line, the usual ones first."""
    keys = [k for k in HYPER_ORDER if k in training] + [k for k in training if k not in HYPER_ORDER]
    return " · ".join(f"{plain(k.replace('_', ' '))} **{plain(training[k])}**" for k in keys)


def card_panel(card) -> None:
    """What a checkpoint's card says: dataset, epochs, time, source, command, settings, curves."""
    training = card.training or {}
    if training or card.history:
        epochs = len(card.history) or training.get("epochs") or "—"
        seconds = training.get("seconds")
        metric_row(
            [
                Metric("Trained on", card.dataset or "—"),
                Metric("Epochs", str(epochs)),
                Metric("Training time", f"{seconds:,.1f} s" if seconds else "—"),
                Metric("Created", (card.created or "—")[:10], help=card.created or None),
            ]
        )
    if card.dataset_source:
        st.markdown(f"**Dataset source:** {plain(card.dataset_source)}")
    if card.command:
        st.markdown("**Made by**")
        st.code(card.command, language="bash", wrap_lines=True)
    if training:
        st.markdown(f"**Training hyper-parameters:** {hyperparameters(training)}")
    small_curves(card)
    if card.notes:
        st.caption(f"Notes: {plain(card.notes)}")


def outputs_mismatch(selection: Selection, view: ModelView) -> str:
    """Why the model's test accuracy on the sidebar's dataset would mean nothing ("" when it
    would not): its outputs are not the dataset's classes."""
    from dashboard import data

    try:
        info = data.dataset_info(selection.dataset, data_root=data_root())
        mtime = mtime_of(selection.model_key)
        flow = shape_flow(selection.model_key, view.input_shape, mtime)
    except LensError:
        return ""  # measuring says what is wrong
    outputs = flow.output_shape[-1] if flow.output_shape else info.num_classes
    if outputs == info.num_classes:
        return ""
    return (
        f"{view.label} has {outputs} outputs but {info.title} has {info.num_classes} classes: "
        f"its accuracy on {info.title} would mean nothing — pick a dataset with {outputs} "
        "classes or a model trained on this one"
    )


MEASURED_KEY = "model_measured"  # accuracy measured on demand: (model, dataset, root) → numbers


def measured(selection: Selection) -> tuple | None:
    """(accuracy, images, source) measured in this session for this model, dataset and root."""
    key = (selection.model_key, selection.dataset, data_root())
    return st.session_state.setdefault(MEASURED_KEY, {}).get(key)


def accuracy_panel(selection: Selection, view: ModelView) -> None:
    """Measure the test accuracy on the sidebar's dataset, when that means something."""
    mismatch = outputs_mismatch(selection, view)
    if mismatch:
        st.warning(plain(mismatch), icon=":material/warning:")
        return
    key = (selection.model_key, selection.dataset, data_root())
    if st.button(f"Measure test accuracy on {plain(selection.dataset)}", key="model_measure"):
        try:
            with st.spinner("Classifying the test set…"):
                pred = predictions(selection)
        except LensError as err:
            show_error(err)
            return
        found = (pred.accuracy, len(pred.labels), pred.source)
        st.session_state.setdefault(MEASURED_KEY, {})[key] = found
    found = measured(selection)
    if found is not None:
        accuracy, count, source = found
        st.markdown(
            f"**Measured now: {percent(accuracy)}** on {count:,} test images ({plain(source)})"
        )


def accuracy_metric(selection: Selection, view: ModelView) -> tuple[str, str | None]:
    """The Accuracy metric: measured in this session, else the card's, else what the model is."""
    found = measured(selection)
    if found is not None:
        return percent(found[0]), f"measured now on {found[1]:,} {selection.dataset} test images"
    if view.card is not None:
        if view.card.test_accuracy is None:
            return "not measured", None
        return percent(view.card.test_accuracy), "from the checkpoint's card"
    if view.untrained:
        return "untrained — random weights", None
    return "ImageNet weights", None


def dataset_panel(selection: Selection) -> None:
    """The Model page's dataset tab: the data root, then what the sidebar's dataset is."""
    from dashboard import data

    data_root_field()
    try:
        info = data.dataset_info(selection.dataset, data_root=data_root())
        splits = {name: dataset_split(selection.dataset, name) for name in ("train", "test")}
    except LensError as err:
        show_error(err)
        return
    st.subheader(plain(info.title))
    st.caption(plain(info.description))
    metric_row(
        [
            Metric("Classes", str(info.num_classes)),
            Metric("Channels", str(info.channels)),
            Metric("Image size", f"{info.size}×{info.size}"),
            Metric("Train images", f"{len(splits['train']):,}"),
            Metric("Test images", f"{len(splits['test']):,}"),
        ]
    )
    for name, split in splits.items():
        st.markdown(f"**{name.title()} set:** {plain(split.source)}")
    if any(split.is_sample for split in splits.values()):
        st.warning(
            f"The full set was not found: the bundled sample stands in. To use the full set, "
            f"{paths.DATA_ROOT_HINT}.",
            icon=":material/inventory_2:",
        )
    skipped = sum(split.skipped for split in splits.values())
    if info.name.startswith(data.FOLDER_PREFIX) or skipped:
        st.markdown(f"**Unreadable files skipped:** {skipped}")
    mean = ", ".join(f"{m:.4f}" for m in info.mean)
    std = ", ".join(f"{s:.4f}" for s in info.std)
    st.markdown(f"**Normalization:** mean ({mean}), std ({std}) per channel, on the 0–1 scale")
    shown = ", ".join(info.classes[:100]) + (" …" if info.num_classes > 100 else "")
    st.markdown(f"**Classes:** {plain(shown)}")
