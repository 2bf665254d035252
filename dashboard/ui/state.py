"""Widget state that survives pages and links: the permanent session-state keys and the
"dummy key" pattern from Streamlit's multipage docs (a widget's own key is dropped when its page
is left, so the value lives under a permanent key and is copied into the widget key before each
draw: `keep`/`store`, or `held`/`kept` for a widget's arguments).
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

MODEL_KEY = "lens_model"  # permanent session-state keys
DATASET_KEY = "lens_dataset"
FOLDER_KEY = "lens_folder"
EXTRA_MODELS_KEY = "lens_extra_models"
LINK_NOTE_KEY = "lens_link_note"  # a link's model that is not on this server: what shows instead
DATASET_NOTE_KEY = "lens_dataset_note"  # (model, dataset, how that dataset was guessed)
FOLDER_CHOICE = "folder (your own images)"
REGISTRY_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")


def keep(permanent: str, default: object) -> str:
    """→ the key for a widget whose value lives under `permanent` (widget keys vanish when
    their page is left; see the module docstring). Pair it with `on_change=ui.store`."""
    widget = "_" + permanent
    st.session_state[widget] = st.session_state.setdefault(permanent, default)
    return widget


def store(permanent: str) -> None:
    """on_change of a `keep` widget: copy its value to the permanent key."""
    st.session_state[permanent] = st.session_state["_" + permanent]


def held(permanent: str, default: object) -> dict:
    """Widget arguments (key, on_change, args) keeping its value under `permanent`, so it is
    the same when the user comes back from another page (see `keep`):
    `st.number_input("Epochs", **ui.held("train_epochs", 5))`."""
    return {"key": keep(permanent, default), "on_change": store, "args": (permanent,)}


def kept(permanent: str, options: Sequence[object], default: object) -> dict:
    """`held`, for a choice among `options`: a stored value no longer among them falls back to
    `default`, and a stored list keeps the items still offered."""
    value = st.session_state.get(permanent, default)
    if isinstance(value, list):
        value = [v for v in value if v in options]
    elif value not in options:
        value = default
    st.session_state[permanent] = value
    return held(permanent, value)
