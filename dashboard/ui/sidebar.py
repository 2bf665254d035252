"""The first calls of every page: `setup_page`, then `sidebar()`, which draws the model and
dataset choices (kept in session state so they hold across pages and links) and returns the
`Selection` every page reads.
"""

from __future__ import annotations

import re
import sys

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.choices import CKPT_PREFIX, Selection, model_choices, model_label, select_model
from dashboard.ui.data_roots import allowed_roots, folder_refusal
from dashboard.ui.links import (
    SHIPPED_PREFIX,
    model_from_url,
    model_link,
    model_refused,
    one_of,
    url_bound,
)
from dashboard.ui.loaders import loaded_model, mtime_of
from dashboard.ui.navigation import navigation
from dashboard.ui.present import (
    PRESENT_KEY,
    PRESENT_QUERY,
    PRESENTATION_CSS,
    presenting,
    share_controls,
)
from dashboard.ui.state import (
    DATASET_KEY,
    DATASET_NOTE_KEY,
    FOLDER_CHOICE,
    FOLDER_KEY,
    LINK_NOTE_KEY,
    MODEL_KEY,
    REGISTRY_DATASETS,
    keep,
    store,
)


def setup_page(title: str, icon: str = ":material/center_focus_strong:") -> None:
    """The first Streamlit call of every page; a link with ?present=1 opens in presentation
    mode, with the sidebar folded away."""
    if PRESENT_QUERY in st.query_params and PRESENT_KEY not in st.session_state:
        st.session_state[PRESENT_KEY] = st.query_params[PRESENT_QUERY] == "1"
    st.set_page_config(
        page_title=f"{title} · CNN Lens",
        page_icon=icon,
        layout="wide",
        initial_sidebar_state="collapsed" if presenting() else "auto",
    )
    if presenting():
        st.html(PRESENTATION_CSS)


def _model_changed() -> None:
    select_model(st.session_state["_" + MODEL_KEY])


def _dataset_note(model_key: str, dataset: str) -> None:
    """Under the sidebar's dataset: how it was chosen from the model's shape, while it holds."""
    noted = st.session_state.get(DATASET_NOTE_KEY)
    if noted is not None and noted[:2] == (model_key, dataset):
        st.caption(noted[2])


def _persistent_selectbox(
    label: str, options: list[str], permanent: str, on_change=None, **kwargs
) -> str:
    """A selectbox whose value survives page switches (see dashboard/ui/state.py)."""
    if st.session_state.get(permanent) not in options:
        st.session_state[permanent] = options[0]
    if on_change is None:
        on_change, kwargs["args"] = store, (permanent,)
    st.selectbox(label, options, key=keep(permanent, options[0]), on_change=on_change, **kwargs)
    return st.session_state[permanent]


def sidebar() -> Selection:
    """Draw the shared sidebar (pages, model, dataset) and return the current selection."""
    with st.sidebar:
        navigation()
        choices = _first_model_choices()
        datasets = [*REGISTRY_DATASETS, FOLDER_CHOICE]
        for key, options in ((MODEL_KEY, choices), (DATASET_KEY, datasets)):
            if st.session_state.get(key) not in options:  # the defaults, even in the first link
                st.session_state[key] = options[0]
        url_bound("model", MODEL_KEY, model_from_url(choices), model_link, model_refused)
        url_bound("dataset", DATASET_KEY, one_of(REGISTRY_DATASETS))
        choices = model_choices()  # with the link's upload, when it brought one
        model_key = _persistent_selectbox(
            "Model",
            choices,
            MODEL_KEY,
            on_change=_model_changed,
            format_func=model_label,
            help="A shipped checkpoint from trained/, or an architecture with random weights.",
        )
        model_warnings(model_key)
        dataset = _persistent_selectbox("Dataset", datasets, DATASET_KEY)
        _dataset_note(model_key, dataset)
        refused = ""
        if dataset == FOLDER_CHOICE:
            st.text_input(
                "Image folder",
                key=keep(FOLDER_KEY, ""),
                on_change=store,
                args=(FOLDER_KEY,),
                placeholder="/path/to/images (one subfolder per class)",
                help="A folder with one subfolder of images per class, under the folders this "
                "server lets the app read: " + ", ".join(map(str, allowed_roots())),
            )
            folder = st.session_state.get(FOLDER_KEY, "")
            refused = folder_refusal(folder)
            if refused:
                st.error(refused, icon=":material/folder_off:")
            dataset = "folder:" + folder
        share_controls()
    link_note = st.session_state.get(LINK_NOTE_KEY)
    if link_note:
        st.warning(link_note, icon=":material/link_off:")
    if refused:  # nothing of a folder outside the allowed roots is listed or read
        st.error(refused, icon=":material/folder_off:")
        st.stop()
    return Selection(model_key=model_key, dataset=dataset)


def model_warnings(model_key: str) -> None:
    """Under the model choice: what loading a user's checkpoint found wrong with it (weights
    that are NaN or infinite, an invalid card). Shipped checkpoints are checked by the tests,
    so the home page still paints before torch is imported for them."""
    if not model_key.startswith(CKPT_PREFIX) or model_key.startswith(SHIPPED_PREFIX):
        return
    try:
        view = loaded_model(model_key, mtime_of(model_key))[1]
    except LensError:
        return  # the page says why it cannot be loaded
    for warning in view.warnings:  # names from a file: shown as text, never as markdown
        st.warning(re.sub(r"([\\`*_\[\]!<>#|~$])", r"\\\1", warning), icon=":material/warning:")


def _first_model_choices() -> list[str]:
    """The sidebar's model choices; the first time a session runs, PyTorch is imported to list
    them, which takes seconds on a busy machine: say so."""
    if "torch" in sys.modules:
        return model_choices()
    with st.spinner("Starting: loading PyTorch and the model list…"):
        return model_choices()
