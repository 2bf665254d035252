"""Showing things: figures with their downloads (and a shared cache of built figures), tables
whose numbers are never cut, rows of metrics, text from files made safe for Markdown, one-line
errors, and progress bars with counts.
"""

from __future__ import annotations

import contextlib
import numbers
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import streamlit as st

from dashboard.ui.present import IMAGE_FORMAT_KEY, present_figure, presenting
from dashboard.ui.state import held


def figure(fig, name: str, *, key: str | None = None, width: str = "stretch", **kwargs):
    """Draw a plotly figure with the downloads every figure offers: PNG or SVG from plotly's
    camera button (the sidebar picks which) and a self-contained HTML file. → the chart's
    selection event when `on_select` is given."""
    name = re.sub(r"[^\w.-]+", "-", name).strip("-") or "figure"  # a safe file name
    image_format = st.session_state.get(IMAGE_FORMAT_KEY, "png")
    config = {
        "displaylogo": False,
        "toImageButtonOptions": {"format": image_format, "filename": name, "scale": 2},
    }
    shown = present_figure(fig) if presenting() and "on_select" not in kwargs else fig
    event = st.plotly_chart(shown, theme=None, width=width, key=key, config=config, **kwargs)
    if presenting():  # a clean screen; the camera button still saves PNG/SVG
        return event
    st.download_button(
        "HTML",
        # Built only when clicked: plotly.js is inlined, so the file opens offline.
        data=lambda: fig.to_html(include_plotlyjs=True, full_html=True),
        file_name=f"{name}.html",
        mime="text/html",
        on_click="ignore",
        icon=":material/download:",
        type="tertiary",
        key=f"html_{key or name}",
        help="Download this figure as an interactive HTML file (opens offline)",
    )
    return event


@st.cache_resource(max_entries=128, show_spinner="Drawing…")  # shared by every page and session
def cached_figure(key: tuple, _build: Callable[[], object]):
    """A figure built once per `key` (everything it depends on), shared read-only: plotly
    spends tens of milliseconds building each, which a widget change should not pay again."""
    return _build()


def table(data, column_config: dict | None = None, *, hide_index: bool = True, **kwargs):
    """`st.dataframe` with every column as wide as its header and widest value, so no number
    is ever cut (the grid alone sizes columns from their first rows). `data`: a DataFrame,
    a pandas Styler, or rows."""
    import pandas as pd

    from dashboard.base import tables

    frame = getattr(data, "data", data)  # a Styler holds its frame in .data
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    config = tables.fitted_config(frame, column_config, index=not hide_index)
    kwargs.setdefault("width", "stretch")
    return st.dataframe(data, column_config=config, hide_index=hide_index, **kwargs)


@dataclass(frozen=True)
class Metric:
    """One number of a row of metrics."""

    label: str
    value: str
    help: str | None = None
    delta: str | None = None


def metric_row(metrics: Sequence[Metric], *, border: bool = False) -> None:
    """Metrics side by side, each as wide as its label and value: a row that does not fit
    wraps onto the next line instead of cutting a number."""
    row = st.container(horizontal=True, gap="medium", horizontal_alignment="distribute")
    for metric in metrics:
        row.metric(
            metric.label,
            metric.value,
            metric.delta,
            help=metric.help,
            border=border,
            width="content",
        )


def layer_table(rows: list[dict]) -> None:
    """The home page's layer table: counts with thousands separators (still sortable); the
    formulas and flags are on the Shape flow page (all ten columns would not fit a laptop)."""
    counts = st.column_config.NumberColumn(format="localized")
    table(rows, {"Params": counts, "Mult-adds": counts, "Formula": None, "Flag": None})


# What Markdown and Streamlit's own syntax read in text: these characters always (code, emphasis,
# links and images, HTML and autolinks, strikethrough, $maths$, tables), ":" before a letter or


# "/" (:red[…], :material/…:, URLs), "_" at a word's edge (in snake_case it is literal), and
# headings, quotes, lists and rules at a line's start.
_MARKDOWN_ALWAYS = re.compile(r"([\\`*\[\]<>~$|])")
_MARKDOWN_COLON = re.compile(r":(?=[A-Za-z/])")
_MARKDOWN_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MARKDOWN_LINE_START = re.compile(r"^(\s*)([#+\-=])", re.MULTILINE)
_MARKDOWN_ORDERED = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)


def plain(text: object) -> str:
    """`text` from a file or folder (a card's name, notes, a class folder's name) made safe
    to put inside Markdown: whatever Markdown or Streamlit's own syntax would read (links,
    images, emphasis, :emoji: and :color[…] directives, $maths$) is backslash-escaped, so it
    shows as typed and `![x](http://host/…)` fetches nothing. Line breaks are kept."""
    shown = _MARKDOWN_ALWAYS.sub(r"\\\1", str(text))
    shown = _MARKDOWN_COLON.sub(r"\\:", shown)
    shown = _MARKDOWN_UNDERSCORE.sub(r"\\_", shown)
    shown = _MARKDOWN_LINE_START.sub(r"\1\\\2", shown)
    shown = _MARKDOWN_ORDERED.sub(r"\1\\\2", shown)
    return shown.replace("\n", "  \n")


def show_error(err: Exception) -> None:
    """A user-facing failure, in one line, where the content would have been. The message
    may quote names from files, so it is shown as text, never read as Markdown."""
    st.error(plain(err), icon=":material/warning:")


@contextlib.contextmanager
def progress_bar(text: str, unit: str = "images") -> Iterator[Callable[[int, int], None]]:
    """`with ui.progress_bar("Classifying") as progress:` → a callback `progress(done, total)`
    that draws a progress bar with counts on its first call (work served from a cache never
    calls it, so shows nothing) and removes the bar at the end of the block."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        fraction = min(1.0, done / total) if total else 1.0
        label = f"{text}: {done:,} of {total:,} {unit}"
        if bar is None:
            bar = st.progress(fraction, text=label)
        else:
            bar.progress(fraction, text=label)

    try:
        yield update
    finally:
        if bar is not None:
            bar.empty()


def work_bar(text: str) -> contextlib.AbstractContextManager:
    """A `progress_bar` for work measured in per cent: → a (fraction, what) callback."""

    @contextlib.contextmanager
    def bar() -> Iterator[Callable[[float, str], None]]:
        with progress_bar(text, unit="%") as progress:
            yield lambda fraction, _: progress(round(100 * fraction), 100)

    return bar()


def percent(value) -> str:
    """A fraction as a percentage with two decimals; "—" for anything not a number (None)."""
    return f"{100 * value:.2f} %" if isinstance(value, numbers.Real) else "—"


def untrained_warning(view, what: str) -> None:
    """For a model with random weights, say so first: `what` says what that means here."""
    if view.untrained:
        st.warning(f"**Untrained — random weights.** {what}", icon=":material/casino:")


def lazy_tabs(key: str, names: Sequence[str], draws: Sequence[Callable[[], None]]) -> None:
    """Tabs whose open one is kept under `key` and drawn alone: switching reruns the page
    (a callback), so a closed tab computes nothing."""
    if st.session_state.get(key) not in names:
        st.session_state[key] = names[0]
    tabs = st.tabs(list(names), **held(key, names[0]))
    for tab, draw in zip(tabs, draws, strict=True):
        if tab.open:
            with tab:
                draw()
