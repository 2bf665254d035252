"""Widgets whose value outlives them, and the Convolution lab's ways of showing its numbers.

Streamlit forgets a widget's key when its tab closes or its page is left: each widget here
keeps its value under a permanent session-state key (its own key is "_" + that key), so the
lab's lazy tabs and any page that steps back and forth show what the reader last typed. The
rest lays out `figures.lab` panels: a title over a table, a scrolling grid, the output-size
formula and what it leaves out."""

from collections.abc import Callable, Sequence

import streamlit as st

from dashboard import ui
from dashboard.analysis import lab
from dashboard.analysis.lab import inputs as typed
from dashboard.figures import lab as show


def kept(draw: Callable, label: str, permanent: str, default, **kwargs):
    """A widget whose value lives under `permanent` (its own key is "_" + permanent), so it
    survives closed tabs and page switches. Number inputs are clamped to their bounds."""
    low, high, options = (kwargs.get(k) for k in ("min_value", "max_value", "options"))
    value = typed.clamped(st.session_state.get(permanent, default), default, low, high, options)
    st.session_state[permanent] = st.session_state["_" + permanent] = value
    draw(label, key="_" + permanent, on_change=ui.store, args=(permanent,), **kwargs)
    return st.session_state[permanent]


def number(label: str, permanent: str, default, low=0, high=None, step=None, pattern=None):
    kwargs = {"min_value": low, "max_value": high, "step": step, "format": pattern}
    return kept(st.number_input, label, permanent, default, **kwargs)


def number_row(*specs: tuple) -> list:
    """Number inputs side by side, each spec the arguments of `number`."""
    values = []
    for cell, spec in zip(st.columns(len(specs)), specs, strict=True):
        with cell:
            values.append(number(*spec))
    return values


def text(label: str, permanent: str, default: str, height: int) -> str:
    return kept(st.text_area, label, permanent, default, height=height)


def radio(label: str, permanent: str, labels: dict[str, str], default: str) -> str:
    """Options side by side, shown by their labels."""
    options = list(labels)
    return kept(
        st.radio,
        label,
        permanent,
        default,
        options=options,
        format_func=labels.get,
        horizontal=True,
    )


def position_slider(label: str, permanent: str, shape: tuple[int, int]) -> tuple[int, int]:
    """Step through output positions in reading order; returns (row, column)."""
    out_h, out_w = shape
    index = kept(
        st.select_slider,
        label,
        permanent,
        0,
        options=list(range(out_h * out_w)),
        format_func=lambda i: show.position_label(i, out_w),
        help="Output position (row, column), in reading order. Arrow keys step once focused.",
    )
    return divmod(int(index), out_w)


def kernel_filled(permanent: str) -> None:
    choice = st.session_state[f"_{permanent}_fill"]
    if choice is not None:
        st.session_state[permanent] = typed.matrix_text(typed.KERNEL_FILLS[choice])
    st.session_state[f"_{permanent}_fill"] = None


def code(text: str, wrap: bool = True) -> None:
    st.code(text, language=None, wrap_lines=wrap)


def show_panels(panels: Sequence[show.Panel], columns: Sequence) -> None:
    """Each panel (its title over its table) in the next column, wrapping around."""
    for k, panel in enumerate(panels):
        with columns[k % len(columns)]:
            if panel.title:
                st.markdown(panel.title)
            st.table(panel.grid)


def wide_panel(panel: show.Panel) -> None:
    """A panel too wide for a table: a scrolling grid."""
    st.markdown(panel.title)
    ui.table(panel.grid, hide_index=False)


def no_output(message: str) -> bool:
    """Say why there is no output (a kernel or window larger than the padded input)."""
    if message:
        st.error(message, icon=":material/block:")
    return bool(message)


def output_size(heading: str, worked: lab.WorkedConv | lab.WorkedPool, wrap: bool) -> bool:
    """The output-size formula with the numbers and what it leaves out; False when there is
    no output."""
    st.markdown(heading)
    code(worked.formula, wrap)
    if no_output(worked.message):
        return False
    if worked.problems:
        text = "**What goes wrong:** " + " · ".join(worked.problems)
        st.warning(text, icon=":material/content_cut:")
    return True


def plot(fig, name: str) -> None:
    ui.figure(fig, name, width="content")
