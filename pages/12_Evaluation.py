"""Evaluation: how sure the selected model is, and how right when sure.

Per-class precision–recall and ROC curves with average precision and AUC (scikit-learn, one
class against the rest); calibration as a reliability diagram with its expected calibration
error, before and after temperature scaling; the test images with the highest cross-entropy,
each openable on Activations, and the confidence of right and wrong answers. Everything reads
the test predictions the Confusion page reads (kept on disk by content): switching views runs
no model.
"""

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Evaluation", icon=":material/query_stats:")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
from dashboard import data  # noqa: E402
from dashboard.analysis import evaluation  # noqa: E402
from dashboard.figures import evaluation as evaluation_figures  # noqa: E402

TAB_KEY, TABS = "ev_tab", ("Curves", "Calibration", "Top losses")
KIND_KEY, CLASS_KEY, COUNT_KEY, SHARE_KEY = "ev_kind", "ev_class", "ev_top", "ev_share"
KINDS = {"pr": "Precision–recall", "roc": "ROC"}
ALL = -1  # the class choice that overlays every class
COUNTS = (10, 20, 40, 80)  # top losses shown
LEGEND_BELOW_MAX = 20  # classes whose curves' legend fits under the plot

st.title("Evaluation")
try:
    model, view = ui.load_model(selection)
    info = data.dataset_info(selection.dataset, data_root=ui.data_root())
    pred = ui.evaluated_answers(selection, view, info)  # refuses a mismatch before loading
    test = ui.load_data(selection, view)
except LensError as err:
    ui.show_error(err)
    st.stop()

classes = list(pred.classes)
st.caption(
    f"**{ui.plain(view.label.split(' — ')[0])}** on {ui.plain(test.info.title)} — how sure the "
    "model is, and how right when sure: curves per class, calibration, and its worst mistakes "
    f"on the {len(pred.labels):,} test images."
)
ui.untrained_warning(
    view,
    "These curves and losses show what a model that has "
    "learned nothing answers. Train the model or pick a checkpoint.",
)

losses = evaluation.losses(pred)
ui.metric_row(
    [
        ui.Metric("Accuracy", f"{pred.accuracy:.2%}"),
        ui.Metric("Test images", f"{len(pred.labels):,}"),
        ui.Metric(
            "ECE",
            f"{evaluation.reliability(pred.probabilities, pred.labels).ece:.2%}",
            help=f"Expected calibration error over {evaluation.CALIBRATION_BINS} equal-width "
            "confidence bins: the mean gap between confidence and accuracy, weighted by the "
            "share of images in each bin. 0 = perfectly calibrated.",
        ),
        ui.Metric(
            "Mean cross-entropy",
            f"{losses.mean():.4f}",
            help="−log p(true class), averaged over the test images (the negative "
            "log-likelihood; lower is better).",
        ),
    ],
    border=True,
)


# --------------------------------------------------------------------------- curves


def legend_below(fig):
    """A few classes' legend under the plot, so the curves get the column's width (a laptop's
    column of 500 px left them 280); many classes keep plotly's scrolling legend beside it."""
    if len(classes) <= LEGEND_BELOW_MAX:
        fig.update_layout(legend={"orientation": "h", "y": -0.15, "x": 0}, height=640)
    return fig


def class_curves() -> None:
    """PR or ROC curves of one class or all, beside every class's AP and AUC."""
    ui.url_bound("curve", KIND_KEY, ui.one_of(KINDS))
    in_link = ui.index_below(len(classes))
    ui.url_bound("class", CLASS_KEY, in_link, lambda k: None if k == ALL else str(k))
    bar = ui.controls("Curves").container(horizontal=True, gap="medium")
    kind = bar.segmented_control(
        "Curve",
        list(KINDS),
        format_func=KINDS.get,
        required=True,
        help="Precision–recall suits rare classes (its chance line is the class's share); "
        "ROC plots the true-positive rate against the false-positive rate.",
        **ui.kept(KIND_KEY, list(KINDS), "pr"),
    )
    options = [ALL, *range(len(classes))]
    chosen = bar.selectbox(
        "Class",
        options,
        format_func=lambda k: "all classes, overlaid" if k == ALL else classes[k],
        help="Each class against the rest: its probability ranks the images.",
        width=280,
        **ui.kept(CLASS_KEY, options, ALL),
    )
    pr, roc = ui.evaluation_curves(pred)
    family = pr if kind == "pr" else roc
    drawn = family if chosen == ALL else [family[chosen]]
    fig = ui.cached_figure(
        ("evaluation-curves", pred.key, kind, chosen),
        lambda: legend_below(evaluation_figures.class_curves(drawn, kind=kind)),
    )
    chart, scores = st.columns([1.7, 1], gap="large")
    with chart:
        name = "all" if chosen == ALL else str(chosen)
        ui.figure(fig, f"{kind}-curves-{name}", key="ev_curves")
    with scores:
        st.subheader("Per class")
        ui.class_score_table(pr, roc)
        st.caption(
            "Average precision and area under the ROC curve of each class against the rest "
            "(scikit-learn's); 1 = every image of the class ranked above every other."
        )


# --------------------------------------------------------------------------- calibration


def calibration() -> None:
    """The reliability diagram before and after temperature scaling, and the temperature."""
    try:
        fitted = ui.fitted_calibration(selection, view, pred)
    except LensError as err:
        ui.show_error(err)
        return
    ui.metric_row(
        [
            ui.Metric(
                "Temperature T",
                f"{fitted.temperature:.3f}",
                help="The logits are divided by T: T > 1 softens overconfident answers, "
                "T < 1 sharpens underconfident ones. The accuracy does not change.",
            ),
            ui.Metric("ECE before", f"{fitted.before.ece:.2%}"),
            ui.Metric("ECE after", f"{fitted.after.ece:.2%}"),
            ui.Metric("NLL before", f"{fitted.nll_before:.4f}"),
            ui.Metric("NLL after", f"{fitted.nll_after:.4f}"),
        ],
        border=True,
    )
    st.caption(
        f"T was fitted on {ui.plain(fitted.fitted_on)} (negative log-likelihood "
        f"{fitted.fit_nll_before:.4f} → {fitted.fit_nll_after:.4f} there); before and after are "
        f"measured on {ui.plain(fitted.evaluated_on)}."
    )
    fig = ui.cached_figure(
        ("reliability", pred.key, fitted.fitted_on, fitted.temperature),
        lambda: evaluation_figures.reliability_diagram(
            fitted.before, fitted.after, temperature=fitted.temperature
        ),
    )
    ui.figure(fig, "reliability-diagram", key="ev_reliability")


# --------------------------------------------------------------------------- top losses


def top_losses() -> None:
    """The images with the highest cross-entropy, and the confidence of right and wrong."""
    bar = ui.controls("Top losses").container(horizontal=True, gap="medium")
    n = len(pred.labels)
    counts = [c for c in COUNTS if c < n] + ([n] if n <= COUNTS[-1] else [])
    count = (
        counts[0]  # a split of at most 10 images: all of them, no slider of one position
        if len(counts) == 1
        else bar.select_slider(
            "Images",
            counts,
            help="How many of the highest-loss test images to show.",
            **ui.kept(COUNT_KEY, counts, 20 if 20 in counts else counts[-1]),
        )
    )
    top = evaluation.top_losses(pred, count)
    st.caption(
        f"The {len(top)} test images with the highest cross-entropy −log p(true class), "
        "highest first: true → predicted class, the loss, the probability of the true class "
        "and of the answer. Click an image's number to open it on the Activations page."
    )
    ui.top_loss_gallery(top, test, classes)
    ui.top_loss_table(top, classes)
    share = st.toggle(
        "Each group as a share of its own size",
        help="Wrong answers are few: as shares, both groups' shapes compare.",
        **ui.held(SHARE_KEY, True),
    )
    fig = ui.cached_figure(
        ("confidence", pred.key, share),
        lambda: evaluation_figures.confidence_histograms(
            evaluation.confidence_histogram(pred), share=share
        ),
    )
    ui.figure(fig, "confidence-right-wrong", key="ev_confidence")


ui.url_bound("view", TAB_KEY, ui.one_of(TABS))
ui.lazy_tabs(TAB_KEY, TABS, (class_curves, calibration, top_losses))
