"""The Confusion matrix page's glue: the counted matrix and report of a set of predictions
(cached), predictions at a class level, URL-bound choices, the per-class table and the top
confusions, the open cell that survives reruns, the chart's click, and the gallery of one
cell's images."""

from collections.abc import Sequence

import numpy as np
import streamlit as st

from dashboard import ui
from dashboard.analysis import class_levels, confusion, metrics
from dashboard.ui.navigation import clicked_customdata

CELL_KEY, PAGE_KEY, CHART_KEY = "cm_cell", "cm_page", "cm_chart"
PER_PAGE, GALLERY_COLUMNS, THUMB_SIDE = 40, 8, 112
TOP_CONFUSIONS = 8


@st.cache_data(max_entries=32, show_spinner="Counting…")
def counted(predictions_key: str, _pred) -> tuple[np.ndarray, dict]:
    """(confusion matrix, classification report) of one set of predictions: their key names
    the model's content, the split's (pixels, labels, class names) and the class level."""
    return metrics.confusion(_pred), metrics.report(_pred)


def matrix_of(pred: metrics.Predictions) -> tuple[np.ndarray, dict]:
    return counted(pred.key, pred)


def answers(sel: ui.Selection, split: str, level: str) -> metrics.Predictions:
    """A model's predictions (cached per checkpoint and split), at the requested class level."""
    return class_levels.at_level(ui.predictions(sel, split), level)


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


# --------------------------------------------------------------------------- the open cell


def open_cell(true: int, predicted: int) -> None:
    """Open a cell's gallery. The cell belongs to the matrix of the next run ("for" is filled
    in then): a click may arrive while a run for another model or split is still drawing."""
    st.session_state[CELL_KEY] = {"for": None, "cell": (int(true), int(predicted))}
    st.session_state.pop(PAGE_KEY, None)  # back to the first page


def cell_clicked() -> None:
    """The chart's selection changed: the clicked marker's customdata is (true, predicted)."""
    custom = clicked_customdata(CHART_KEY)
    if custom is not None and len(custom) == 2:
        open_cell(int(custom[0]), int(custom[1]))


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


# --------------------------------------------------------------------------- beside the matrix


def per_class_table(report: dict, classes: Sequence[str], order: np.ndarray) -> None:
    """scikit-learn's per-class report as a table, in the matrix's class order."""
    st.subheader("Per class")
    table = confusion.report_table(report, classes, order=order)
    ui.table(
        table,
        height=min(38 + 35 * len(classes), 420),
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


def top_confusions(cm: np.ndarray, report: dict, classes: Sequence[str], stem: str) -> None:
    """The most frequent mistakes as buttons that open their cell, and the matrix and report
    as CSV files named after `stem`."""
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


def gallery(
    true: int,
    predicted: int,
    items: list,
    *,
    classes: Sequence[str],
    split: str,
    selection: ui.Selection,
    view: ui.ModelView,
) -> None:
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
