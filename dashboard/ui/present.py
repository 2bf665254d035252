"""Presentation mode (?present=1: controls folded away, larger figures and type) and the
sidebar's presenting and sharing switches.
"""

from __future__ import annotations

import streamlit as st

from dashboard.ui.state import keep, store

PRESENT_KEY, PRESENT_QUERY = "lens_present", "present"
IMAGE_FORMAT_KEY = "lens_image_format"  # what plotly's camera button saves: png or svg
PRESENT_SCALE = 1.3  # figures with a fixed size grow by this much when presenting
# Presentation mode: larger type, less chrome, the widgets' labels still readable.
PRESENTATION_CSS = """<style>
html { font-size: 19px; }
.stMainBlockContainer, .block-container { padding-top: 2.2rem; max-width: 100%; }
header[data-testid="stHeader"] { background: transparent; }
h1 { font-size: 2.6rem !important; }
</style>"""


def presenting() -> bool:
    """Presentation mode: controls folded away, larger figures and type."""
    return bool(st.session_state.get(PRESENT_KEY, False))


def controls(label: str = "Controls", icon: str = ":material/tune:"):
    """Where a page puts its controls: folded into an expander when presenting."""
    if presenting():
        return st.expander(label, expanded=False, icon=icon)
    return st.container()


def present_figure(fig) -> dict:
    """A presentation-sized copy of a figure (cached figures are shared: never modified)."""
    spec = fig.to_dict()
    layout = spec.setdefault("layout", {})
    for side in ("width", "height"):
        if layout.get(side):
            layout[side] = round(layout[side] * PRESENT_SCALE)
    font = layout.setdefault("font", {})
    font["size"] = round(font.get("size", 12) * 1.25)
    return spec


def share_controls() -> None:
    """The sidebar's presenting and sharing switches."""
    with st.expander("Present & share", icon=":material/co_present:"):
        st.toggle(
            "Presentation mode",
            key=keep(PRESENT_KEY, False),
            on_change=_present_changed,
            help="Folds the controls away and enlarges figures and type. Also ?present=1.",
        )
        st.radio(
            "Figure downloads (camera button)",
            ("png", "svg"),
            key=keep(IMAGE_FORMAT_KEY, "png"),
            on_change=store,
            args=(IMAGE_FORMAT_KEY,),
            horizontal=True,
            format_func=str.upper,
        )
        st.caption(
            "The address bar holds this view (page, model, dataset, layer, image, scale): "
            "copy it to reopen exactly this. Tables: the download icon above each table "
            "saves CSV."
        )


def _present_changed() -> None:
    store(PRESENT_KEY)
    if st.session_state.get(PRESENT_KEY):
        st.query_params[PRESENT_QUERY] = "1"
    else:
        st.query_params.pop(PRESENT_QUERY, None)
