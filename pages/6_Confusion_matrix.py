"""Confusion matrix: scikit-learn's matrix and per-class report for the selected model on a
split of the selected dataset; click a cell to see exactly its images, click an image to open
it on the Activations page; CIFAR-100 read as fine classes or superclasses; a second checkpoint
compared cell by cell.

Clicks: a plotly heatmap's own click selection comes back empty in Streamlit (streamlit#8760),
so `figures.confusion_heatmap` lays an invisible marker over every cell centre; its customdata
is rewritten here to the cell's (true, predicted) class indices, whatever the class order.
Other pages may set `COMPARE_KEY` to a model key to preselect the second model.
"""

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Confusion matrix")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
import numpy as np  # noqa: E402

from dashboard import data, figures  # noqa: E402
from dashboard.analysis import confusion  # noqa: E402
from dashboard.analysis.class_levels import LABELLED, levels  # noqa: E402
from dashboard.figures.matrix_layout import is_wide, size_matrix  # noqa: E402
from dashboard.ui import confusion as confusion_ui  # noqa: E402

SPLIT_KEY, SHOW_KEY, ORDER_KEY, LEVEL_KEY = "cm_split", "cm_show", "cm_order", "cm_level"
COMPARE_KEY = "lens_compare_model"  # a model key; other pages (comparison) may set it
SPLITS = ("test", "train")
SHOW = {"counts": "counts", "row": "row %", "column": "column %", "all": "overall %"}


# --------------------------------------------------------------------------- page

try:
    model, view = ui.load_model(selection)
    info = data.dataset_info(selection.dataset, data_root=ui.data_root())
    dataset_title = info.title
    flow = ui.shape_flow(selection.model_key, view.input_shape, ui.mtime_of(selection.model_key))
    if flow.broken is None:  # else the data check below names the mismatch
        outputs = flow.output_shape[-1]
        confusion.check_output_count(outputs, info.num_classes, selection.dataset)
except LensError as err:
    st.title("Confusion matrix")
    ui.show_error(err)
    st.stop()

st.title("Confusion matrix")
model_name = view.label.split(" — ")[0]
st.caption(
    f"**{ui.plain(model_name)}** on {ui.plain(dataset_title)} — which classes the model "
    "mixes up. Rows are the true class, columns the prediction; click a cell to see its images."
)
ui.untrained_warning(
    view,
    "This matrix shows what a model that has learned "
    "nothing guesses. Train the model or pick a checkpoint.",
)


bar = ui.controls().container(horizontal=True, gap="medium")
split = confusion_ui.choice(bar, "Split", SPLITS, SPLIT_KEY, "test")
show = confusion_ui.choice(
    bar,
    "Show",
    list(SHOW),
    SHOW_KEY,
    "counts",
    format_func=SHOW.get,
    help="Counts, or each cell as a share of its row (true class), column (prediction) or "
    "of all images.",
)
order_how = confusion_ui.choice(
    bar,
    "Class order",
    confusion.ORDERS,
    ORDER_KEY,
    confusion.AS_IS,
    help="By recall puts the worst-recognised classes first; clustered puts classes the "
    "model mixes up next to each other.",
)

try:
    raw = ui.predictions(selection, split)
    available = levels(raw, selection.dataset)
    if not available:
        confusion.check_outputs(raw)
    level = available[0]
    if len(available) > 1:
        if st.session_state.get(LEVEL_KEY) not in available:
            st.session_state.pop(LEVEL_KEY, None)  # left from another dataset: the default
        fine_count = len(raw.classes)
        level = confusion_ui.choice(
            bar,
            "Classes",
            available,
            LEVEL_KEY,
            available[0],
            format_func=lambda v: f"fine ({fine_count})" if v == LABELLED else "superclasses (20)",
        )
    pred = confusion_ui.answers(selection, split, level)
    cm, report = confusion_ui.matrix_of(pred)
except LensError as err:
    ui.show_error(err)
    st.stop()

classes = pred.classes
K = len(classes)
order = confusion.class_order(cm, classes, order_how)
context = f"{selection.model_key}|{selection.dataset}|{split}|{level}"

wrong = int(cm.sum() - np.trace(cm))
ui.metric_row(
    [
        ui.Metric("Accuracy", f"{report['accuracy']:.2%}"),
        ui.Metric("Images", f"{int(cm.sum()):,}"),
        ui.Metric("Misclassified", f"{wrong:,}"),
        ui.Metric("Macro F1", f"{report['macro avg']['f1-score']:.3f}"),
    ],
    border=True,
)

wide = is_wide(classes)
names = [classes[k] for k in order]
if wide:  # the matrix on its own row, the tables below it
    chart_area = st.container()
    table_area, top_area = st.columns([1.4, 1], gap="large")
else:  # the top confusions beside the matrix, the per-class table (five columns) below
    chart_area, top_area = st.columns([2.1, 1], gap="large")
    table_area = st.container()
with chart_area:
    title = f"{split.capitalize()} split · {int(cm.sum()):,} images"
    fig = figures.confusion_heatmap(
        confusion.reorder(cm, order), names, normalize=show, title=title
    )
    width = size_matrix(fig, names, wide=wide)
    cells = fig.data[1]
    # Positions → class indices, as plain lists: a NumPy array travels as a typed array and
    # comes back from a click as {"0": i, "1": j}.
    cells.customdata = order[np.asarray(cells.customdata)].tolist()
    ui.figure(
        fig,
        "confusion-matrix",
        key=confusion_ui.CHART_KEY,
        on_select=confusion_ui.cell_clicked,
        selection_mode=("points",),
        width=width,
    )
    if K > 20:
        st.caption("Drag over the matrix to zoom in, double-click to zoom out; hover for names.")

with table_area:
    confusion_ui.per_class_table(report, classes, order)
with top_area:
    stem = f"{model_name}-{selection.dataset.replace('/', '_')}-{split}"
    confusion_ui.top_confusions(cm, report, classes, stem)

# A clicked cell's images open in a dialog over the matrix, where the user is looking (below
# the matrix they opened off-screen).
chosen = confusion_ui.current_cell(context, K)
if chosen is not None:
    true, predicted = chosen
    items = confusion.gallery(pred, true, predicted)
    count = f"{len(items):,} image{'s' if len(items) != 1 else ''}"
    title = f"True {ui.plain(classes[true])} → predicted {ui.plain(classes[predicted])}: {count}"
    gallery = st.dialog(title, width="large", on_dismiss=confusion_ui.close_cell)(
        confusion_ui.gallery
    )
    gallery(true, predicted, items, classes=classes, split=split, selection=selection, view=view)

# --------------------------------------------------------------------------- comparison

st.divider()
st.subheader("Compare with another checkpoint")
choices = [k for k in ui.model_choices() if k.startswith(ui.CKPT_PREFIX)]
preset = st.session_state.get(COMPARE_KEY)
if preset and preset not in choices:
    choices.append(preset)
choices = [k for k in choices if k != selection.model_key]
other_key = st.selectbox(
    "Second model (B), on the same images",
    ["", *choices],
    **ui.kept(COMPARE_KEY, ["", *choices], ""),
    format_func=lambda k: "— none —" if not k else ui.model_label(k),
)
if other_key:
    other = ui.Selection(other_key, selection.dataset)
    try:
        _, other_view = ui.load_model(other)
        pred_b = confusion_ui.answers(other, split, level)
        cm_b, report_b = confusion_ui.matrix_of(pred_b)
        changes = confusion.recall_changes(cm, cm_b, classes)
    except LensError as err:
        ui.show_error(err)
        st.stop()
    st.markdown(f"**A** = {ui.plain(view.label)} · **B** = {ui.plain(other_view.label)}")
    scores = st.columns(3)
    scores[0].metric("Accuracy A", f"{report['accuracy']:.2%}", border=True)
    delta = report_b["accuracy"] - report["accuracy"]
    scores[1].metric(
        "Accuracy B", f"{report_b['accuracy']:.2%}", f"{100 * delta:+.2f} points", border=True
    )
    scores[2].metric(
        "Classes better / worse",
        f"{len(confusion.improved(changes))} / {len(confusion.got_worse(changes))}",
        border=True,
    )
    pair = st.columns(2)
    for column, name, counts in zip(pair, ("A", "B"), (cm, cm_b), strict=True):
        side = figures.confusion_heatmap(
            confusion.reorder(counts, order), names, normalize=show, title=f"Model {name}"
        )
        size_matrix(side, names, wide=False)
        side.update_layout(title_subtitle_text="images per cell · rows = true class")
        with column:
            ui.figure(side, f"confusion-{name}", key=f"cm_side_{name}")
    diff_fig = figures.confusion_difference(
        confusion.reorder(cm, order), confusion.reorder(cm_b, order), names
    )
    diff_width = size_matrix(diff_fig, names, wide=wide)
    if wide:  # the difference on its own row, the two lists below it
        diff_area = st.container()
        places = st.columns(2, gap="large")
    else:
        diff_area, beside = st.columns([1.3, 1], gap="large")
        places = [beside, beside]
    with diff_area:
        ui.figure(diff_fig, "confusion-difference", key="cm_difference", width=diff_width)
    points = st.column_config.NumberColumn(format="%+.1f")
    ratio = st.column_config.NumberColumn(format="%.3f")
    config = {"Recall A": ratio, "Recall B": ratio, "Δ recall (points)": points}
    lists = (
        ("Improved in B", confusion.improved(changes)),
        ("Worse in B", confusion.got_worse(changes)),
    )
    for place, (heading, subset) in zip(places, lists, strict=True):
        with place:
            st.markdown(f"**{heading}** ({len(subset)})")
            if subset:
                ui.table(
                    confusion.changes_table(subset),
                    height=min(38 + 35 * len(subset), 320),
                    column_config=config,
                )
            else:
                st.caption("none")
