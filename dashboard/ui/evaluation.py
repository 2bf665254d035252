"""What the Evaluation page computes and shows: the test predictions the Confusion page reads
(kept on disk by content, so nothing runs the test set again) at the dataset's classes, their
per-class curves (cached per set of predictions), temperature scaling fitted on training
images the model never saw (classified once, with a progress bar), and the top losses as
pictures that open on the Activations page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.choices import Selection
from dashboard.ui.loaders import ModelView, load_data, load_model, model_id, mtime_of, shape_flow
from dashboard.ui.loaders import predictions as cached_predictions
from dashboard.ui.navigation import open_in_activations
from dashboard.ui.show import plain, progress_bar, table

if TYPE_CHECKING:
    from dashboard import data
    from dashboard.analysis import evaluation, metrics

GALLERY_COLUMNS, THUMB_SIDE = 8, 112  # the top losses' pictures, as the Confusion page's
PROBABILITY_PX = 112  # a column of probabilities in %.4g (see top_loss_table)


def _read_at_classes(pred: metrics.Predictions, dataset: str) -> metrics.Predictions:
    """Answers read at the dataset's classes (CIFAR-100 fine or superclasses as it labels them),
    as the Confusion page reads them by default."""
    from dashboard.analysis import class_levels, confusion

    available = class_levels.levels(pred, dataset)
    if not available:
        confusion.check_outputs(pred)
    return class_levels.at_level(pred, available[0])


def evaluated_answers(selection: Selection, view: ModelView, info: data.DatasetInfo):
    """The selected model's answers on the test split (→ metrics.Predictions), the same cached
    predictions the Confusion page reads. A model whose outputs cannot be the dataset's
    classes is refused from its shape flow, before any image is classified; outputs that are
    not finite (a diverged model) are refused too: no curve or calibration exists for them."""
    from dashboard.analysis import confusion

    flow = shape_flow(selection.model_key, view.input_shape, mtime_of(selection.model_key))
    if flow.broken is None:  # else loading the data names the mismatch
        confusion.check_output_count(flow.output_shape[-1], info.num_classes, selection.dataset)
    pred = _read_at_classes(cached_predictions(selection, "test"), selection.dataset)
    if not np.isfinite(pred.probabilities).all():
        raise LensError(
            "the model's outputs hold NaN or infinite values (a diverged model?): no curve, "
            "calibration or loss can be measured"
        )
    return pred


@st.cache_resource(max_entries=4, show_spinner=False)  # CIFAR-100: ~50 MB each
def _curves(predictions_key: str, _pred) -> tuple[list, list]:
    from dashboard.analysis import evaluation

    return evaluation.pr_curves(_pred), evaluation.roc_curves(_pred)


def evaluation_curves(pred: metrics.Predictions) -> tuple[list, list]:
    """(precision–recall curves, ROC curves) of every class: computed once per set of
    predictions (their key names the model's content and the split), shared read-only."""
    return _curves(pred.key, pred)


def _unseen_training_images(selection: Selection, view: ModelView):
    """Indices of training images the model never saw: after the card's first `train_images`
    on its own dataset; all of them on another dataset or for an untrained architecture;
    none when nobody knows (a card that does not say, a bundled sample standing in for a
    split the model saw the head of). → (the training split or None, the range)."""
    from dashboard.analysis import evaluation

    card = view.card
    if card is None:  # an architecture (random weights) or a zoo model
        trained_on = 0 if view.untrained else None
    elif not card.dataset:
        trained_on = None
    else:
        same = selection.dataset == card.dataset
        trained_on = card.training.get("train_images") if same else 0
    if not isinstance(trained_on, int):
        return None, range(0)
    try:
        train = load_data(selection, view, "train")
    except LensError:  # no training split here: half of the test split serves
        return None, range(0)
    usable = 0 if train.is_sample and trained_on else len(train)
    return train, evaluation.held_out_range(usable, trained_on)


def held_out_answers(selection: Selection, view: ModelView):
    """The model's answers on unseen training images (→ metrics.Predictions or None), kept
    in the result cache by content; a bar with counts shows while they are classified."""
    import torch

    from dashboard import data
    from dashboard.analysis import metrics

    train, unseen = _unseen_training_images(selection, view)
    if train is None or not len(unseen):
        return None
    model, _ = load_model(selection)
    chosen = data.subset(train, torch.arange(unseen.start, unseen.stop))
    text = f"Classifying {len(unseen):,} held-out training images to fit the temperature"
    with progress_bar(text) as progress:
        answers = metrics.cached_predict(model, chosen, model_id(selection), progress=progress)
    return _read_at_classes(answers, selection.dataset)


@st.cache_resource(max_entries=16, show_spinner="Fitting the temperature…")
def _calibration(test_key: str, held_out_key: str, _test, _held_out):
    from dashboard.analysis import evaluation

    return evaluation.calibrate(_test, _held_out)


def fitted_calibration(selection: Selection, view: ModelView, pred) -> evaluation.Calibration:
    """Temperature scaling of the test answers, fitted on unseen training images (else on a
    random half of the test split): fitted once per pair of prediction sets, shared."""
    held_out = held_out_answers(selection, view)
    return _calibration(pred.key, held_out.key if held_out else "", pred, held_out)


# --------------------------------------------------------------------------- top losses


def probability(p: float) -> str:
    """A probability as a percentage: two decimals, or two significant digits below 1 % (the
    true class's probability of a top loss is often far below)."""
    return f"{p:.2%}" if p >= 0.01 else f"{100 * p:.2g}%"


def loss_caption(loss: evaluation.Loss, classes: Sequence[str]) -> str:
    """Short lines (Markdown) that fit a narrow column: true → predicted, the loss, then the
    probability of each."""
    true, guess = plain(classes[loss.true]), plain(classes[loss.predicted])
    return (
        f"**{true} → {guess}**  \nloss {loss.loss:.3f}  \n"
        f"p({true}) {probability(loss.true_probability)}  \n"
        f"p({guess}) {probability(loss.predicted_probability)}"
    )


def top_loss_gallery(
    losses: Sequence[evaluation.Loss], test: data.Split, classes: Sequence[str]
) -> None:
    """The top losses' pictures in loss order, each with its numbers and a button that opens
    it on the Activations page."""
    from dashboard.analysis import confusion

    for start in range(0, len(losses), GALLERY_COLUMNS):
        row = st.columns(GALLERY_COLUMNS)
        for column, loss in zip(row, losses[start : start + GALLERY_COLUMNS], strict=False):
            with column:
                st.image(confusion.thumbnail(test.images[loss.index].numpy(), THUMB_SIDE))
                st.caption(loss_caption(loss, classes))
                if st.button(
                    f"#{loss.index}",
                    key=f"ev_open_{loss.index}",
                    icon=":material/open_in_new:",
                    help=f"Open test image {loss.index} on the Activations page",
                ):
                    open_in_activations(loss.index)


def top_loss_table(losses: Sequence[evaluation.Loss], classes: Sequence[str]) -> None:
    """The top losses as a table: rank, image, classes, loss and both probabilities."""
    rows = [
        {
            "Rank": rank,
            "Image": loss.index,
            "True": classes[loss.true],
            "Predicted": classes[loss.predicted],
            "Loss": loss.loss,
            "p(true)": loss.true_probability,
            "p(predicted)": loss.predicted_probability,
        }
        for rank, loss in enumerate(losses, start=1)
    ]
    # Four significant digits. The grid writes them as JavaScript does (0.0000625, where
    # Python's %g gives 6.25e-05), so the width is set here for its longest, 0.000001234.
    probability = st.column_config.NumberColumn(format="%.4g", width=PROBABILITY_PX)
    config = {"Loss": st.column_config.NumberColumn(format="%.4f")}
    config |= {"p(true)": probability, "p(predicted)": probability}
    table(rows, column_config=config, height=min(38 + 35 * len(rows), 420))


def class_score_table(pr: Sequence, roc: Sequence) -> None:
    """Per class: its images, average precision and ROC AUC (blank without a curve)."""
    rows = [
        {
            "Class": p.name,
            "Images": p.positives,
            "AP": None if np.isnan(p.score) else p.score,
            "ROC AUC": None if np.isnan(r.score) else r.score,
        }
        for p, r in zip(pr, roc, strict=True)
    ]
    score = st.column_config.NumberColumn(format="%.5f")
    config = {"Images": st.column_config.NumberColumn(format="localized")}
    config |= {"AP": score, "ROC AUC": score}
    table(rows, column_config=config, height=min(38 + 35 * len(rows), 420))
