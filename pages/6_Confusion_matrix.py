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
from dashboard.analysis import confusion, metrics  # noqa: E402

SPLIT_KEY, SHOW_KEY, ORDER_KEY, LEVEL_KEY = "cm_split", "cm_show", "cm_order", "cm_level"
CELL_KEY, PAGE_KEY, CHART_KEY = "cm_cell", "cm_page", "cm_chart"
COMPARE_KEY = "lens_compare_model"  # a model key; other pages (comparison) may set it
SPLITS = ("test", "train")
SHOW = {"counts": "counts", "row": "row %", "column": "column %", "all": "overall %"}
LABELLED, COARSE = "labelled", "coarse"  # the classes as the dataset labels them / superclasses
PER_PAGE, GALLERY_COLUMNS, THUMB_SIDE = 40, 8, 112
TOP_CONFUSIONS = 8
CIFAR100 = confusion.CIFAR100_NAMES


# --------------------------------------------------------------------------- cached work


@st.cache_data(max_entries=32, show_spinner="Counting…")
def counted(predictions_key: str, _pred) -> tuple[np.ndarray, dict]:
    """(confusion matrix, classification report) of one set of predictions: their key names
    the model's content, the split's (pixels, labels, class names) and the class level."""
    return metrics.confusion(_pred), metrics.report(_pred)


def levels(pred: metrics.Predictions, dataset: str) -> list[str]:
    """The class levels this model and dataset can be read at."""
    outputs, K = pred.probabilities.shape[1], len(pred.classes)
    found = [LABELLED] if outputs == K else []
    if dataset in CIFAR100 and 100 in (outputs, K) and {outputs, K} <= {20, 100}:
        found.append(COARSE)
    return found


def answers(sel: ui.Selection, split: str, level: str) -> metrics.Predictions:
    """A model's predictions (cached per checkpoint and split), at the requested class level."""
    pred = ui.predictions(sel, split)
    if level == COARSE:
        coarse = data.dataset_info("cifar100-coarse").classes
        return confusion.coarse_predictions(pred, data.cifar100_fine_to_coarse(), coarse)
    confusion.check_outputs(pred)
    return pred


def matrix_of(pred: metrics.Predictions) -> tuple[np.ndarray, dict]:
    return counted(pred.key, pred)


# --------------------------------------------------------------------------- state


def open_cell(true: int, predicted: int) -> None:
    """Open a cell's gallery. The cell belongs to the matrix of the next run ("for" is filled
    in then): a click may arrive while a run for another model or split is still drawing."""
    st.session_state[CELL_KEY] = {"for": None, "cell": (int(true), int(predicted))}
    st.session_state.pop(PAGE_KEY, None)  # back to the first page


def cell_clicked() -> None:
    """The chart's selection changed: the clicked marker's customdata is (true, predicted)."""
    points = st.session_state[CHART_KEY]["selection"]["points"]
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, dict):  # a typed array's row
            custom = [custom[k] for k in sorted(custom, key=int)]
        if custom is not None and len(custom) == 2:
            open_cell(int(custom[0]), int(custom[1]))
            return


def is_wide(classes) -> bool:
    """Many classes or long names: the matrix gets the page's full width."""
    return len(classes) > 12 or max(len(str(c)) for c in classes) > 12


def size_matrix(fig, names, *, wide: bool) -> str:
    """Size a matrix figure for its place; → the `width` for st.plotly_chart.

    Beside the per-class table it stretches to its column at a fixed height (plotly keeps the
    cells square). On its own row it gets a fixed size from its class count and label lengths,
    so 100 classes get 8-pixel cells and long names their margins. Large matrices zoom by
    dragging; small ones stay put."""
    K = len(names)
    if wide:
        cell = min(48, max(8, 760 // K))
        label = 7 * max(len(str(n)) for n in names)  # pixels of the longest tick label
        fig.update_layout(width=K * cell + label + 230, height=int(K * cell + 0.75 * label + 200))
    else:
        cell = (600 - 220) / K
        fig.update_layout(width=None, height=600)
    fig.update_layout(yaxis={"constraintoward": "top"})  # spare room goes below, not above
    for trace in fig.data[1:]:  # the click targets over the cells
        trace.marker.size = max(4.0, cell)
    if K > 20:
        fig.update_layout(dragmode="zoom")  # drag to zoom in, double-click to zoom out
    else:  # nothing to zoom into: a drag must not pan the matrix away
        fig.update_layout(xaxis={"fixedrange": True}, yaxis={"fixedrange": True})
    return "content" if wide else "stretch"


def close_cell() -> None:
    st.session_state.pop(CELL_KEY, None)


def current_cell(context: str, K: int) -> tuple[int, int] | None:
    """The open cell of this matrix; a gallery closes when the model, data or split change."""
    chosen = st.session_state.get(CELL_KEY)
    if chosen and chosen.get("for") is None:
        chosen["for"] = context
    if not chosen or chosen["for"] != context:
        return None
    true, predicted = chosen["cell"]
    return (true, predicted) if 0 <= true < K and 0 <= predicted < K else None


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
if view.untrained:
    st.warning(
        "**Untrained — random weights.** This matrix shows what a model that has learned "
        "nothing guesses. Train the model or pick a checkpoint.",
        icon=":material/casino:",
    )


def choice(column, label: str, options, key: str, default, **kwargs):
    """A one-of-several control that keeps its value across pages and lives in the URL."""
    ui.url_bound(key.removeprefix("cm_"), key, ui.one_of(options))
    return column.segmented_control(
        label,
        options,
        key=key,
        default=None if key in st.session_state else default,
        required=True,
        persist_state="session",
        **kwargs,
    )


bar = ui.controls().container(horizontal=True, gap="medium")
split = choice(bar, "Split", SPLITS, SPLIT_KEY, "test")
show = choice(
    bar,
    "Show",
    list(SHOW),
    SHOW_KEY,
    "counts",
    format_func=SHOW.get,
    help="Counts, or each cell as a share of its row (true class), column (prediction) or "
    "of all images.",
)
order_how = choice(
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
        level = choice(
            bar,
            "Classes",
            available,
            LEVEL_KEY,
            available[0],
            format_func=lambda v: f"fine ({fine_count})" if v == LABELLED else "superclasses (20)",
        )
    pred = answers(selection, split, level)
    cm, report = matrix_of(pred)
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
        key=CHART_KEY,
        on_select=cell_clicked,
        selection_mode=("points",),
        width=width,
    )
    if K > 20:
        st.caption("Drag over the matrix to zoom in, double-click to zoom out; hover for names.")

with table_area:
    st.subheader("Per class")
    table = confusion.report_table(report, classes, order=order)
    ui.table(
        table,
        height=min(38 + 35 * K, 420),
        column_config={
            "Precision": st.column_config.NumberColumn(
                format="%.3f", help="Of the images predicted as this class, the share right"
            ),
            "Recall": st.column_config.ProgressColumn(
                min_value=0.0,
                max_value=1.0,
                format="%.3f",
                help="Of the images of this class, the share found",
            ),
            "F1": st.column_config.NumberColumn(format="%.3f"),
            "Support": st.column_config.NumberColumn("Images", format="localized"),
        },
    )
    st.caption("scikit-learn's classification report, in the matrix's class order.")

with top_area:
    st.subheader("Top confusions")
    top = confusion.top_cells(cm, TOP_CONFUSIONS)
    if not top:
        st.success("No mistakes on this split.")
    for cell in top:
        st.button(
            ui.plain(cell.label(classes)),
            key=f"cm_top_{cell.true}_{cell.predicted}",
            on_click=open_cell,
            args=(cell.true, cell.predicted),
            width="stretch",
        )
    stem = f"{model_name}-{selection.dataset.replace('/', '_')}-{split}"
    downloads = (
        ("Matrix (CSV)", confusion.matrix_csv(cm, classes), f"confusion-{stem}.csv"),
        ("Report (CSV)", confusion.report_csv(report, classes), f"report-{stem}.csv"),
    )
    for label, table, file_name in downloads:  # one per line: side by side they were cut
        st.download_button(
            label,
            table,
            file_name=file_name,
            mime="text/csv",
            icon=":material/download:",
            on_click="ignore",
            width="stretch",
        )

# --------------------------------------------------------------------------- the gallery


def gallery(true: int, predicted: int, items: list) -> None:
    """The images of one cell, a page at a time; each one's number opens it on Activations."""
    what = "correct" if true == predicted else f"predicted {classes[predicted]}"
    if not items:
        st.info(f"No {ui.plain(classes[true])} image was {ui.plain(what)} on this split.")
        return
    pages = confusion.page_count(len(items), PER_PAGE)
    page = st.pagination(pages, key=PAGE_KEY) if pages > 1 else 1
    shown = confusion.page_of(items, page - 1, PER_PAGE)
    first = (page - 1) * PER_PAGE
    st.caption(
        f"Images {first + 1:,}–{first + len(shown):,} of {len(items):,} · p = the "
        "probability the model gave its answer (and the true class) · click an image's "
        "number to open it on the Activations page."
        + ("" if split == "test" else " Activations opens test images: switch to test.")
    )
    images = ui.load_data(selection, view, split).images
    for start in range(0, len(shown), GALLERY_COLUMNS):
        row = st.columns(GALLERY_COLUMNS)
        for column, item in zip(row, shown[start : start + GALLERY_COLUMNS], strict=False):
            with column:
                st.image(confusion.thumbnail(images[item.index].numpy(), THUMB_SIDE))
                st.caption(ui.plain(item.caption(classes)))
                if st.button(
                    f"#{item.index}",
                    key=f"cm_open_{item.index}",
                    icon=":material/open_in_new:",
                    disabled=split != "test",
                    help=f"Open test image {item.index} on the Activations page",
                ):
                    ui.open_in_activations(item.index)
    if st.button("Close", key="cm_close", icon=":material/close:"):
        close_cell()
        st.rerun()  # the whole page: the dialog closes


# A clicked cell's images open in a dialog over the matrix, where the user is looking (below
# the matrix they opened off-screen).
chosen = current_cell(context, K)
if chosen is not None:
    true, predicted = chosen
    items = confusion.gallery(pred, true, predicted)
    count = f"{len(items):,} image{'s' if len(items) != 1 else ''}"
    title = f"True {ui.plain(classes[true])} → predicted {ui.plain(classes[predicted])}: {count}"
    st.dialog(title, width="large", on_dismiss=close_cell)(gallery)(true, predicted, items)

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
        pred_b = answers(other, split, level)
        cm_b, report_b = matrix_of(pred_b)
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
