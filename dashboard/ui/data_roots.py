"""Where the app may read: the session's data root (and the Model page's field that sets it),
the server's options, and the folders under which image folders are allowed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

from dashboard.base import paths, settings
from dashboard.base.errors import LensError

DATA_ROOT_KEY = "lens_data_root"
ROOT_PICK_KEY, ROOT_MESSAGE_KEY = "_lens_data_root", "lens_data_root_message"


def server_options() -> settings.ServerOptions:
    """The server's own options: `streamlit run app.py -- --data-root DIR --allow-root DIR`."""
    return settings.server_options(sys.argv[1:])


def pinned_data_root() -> str:
    """What fixes the data root for this server ("" when the app may choose it): the server's
    --data-root, else $CNN_LENS_DATA."""
    if server_options().data_root:
        return "--data-root"
    return f"${paths.DATA_ROOT_ENV}" if os.environ.get(paths.DATA_ROOT_ENV) else ""


def data_root() -> str:
    """The data root of this session: --data-root, $CNN_LENS_DATA, the one set in the app (the
    settings file), else the per-user default; read when the session starts."""
    if not st.session_state.get(DATA_ROOT_KEY):
        st.session_state[DATA_ROOT_KEY] = str(paths.data_root(server_options().data_root))
    return st.session_state[DATA_ROOT_KEY]


def allowed_roots() -> list[Path]:
    """The folders under which this server lets the app read (see dashboard/settings.py)."""
    server, saved = server_options(), settings.load()
    roots = [server.data_root, os.environ.get(paths.DATA_ROOT_ENV), saved.data_root]
    data_roots = [r for r in roots if r] + [paths.default_data_root()]
    return settings.allowed_roots(data_roots, paths.cache_root(), server, saved)


def folder_refusal(folder: str) -> str:
    """Why the app will not read the image folder `folder` ("" when it may)."""
    if not folder.strip():
        return ""  # the dataset's own message asks for a path
    try:
        path = settings.check_allowed(folder, allowed_roots())
    except LensError as err:
        return str(err)
    return settings.readable_folder(path)


def _root_chosen() -> None:
    """The Model page's data root changed: an allowed folder becomes this session's and every
    later session's (the settings file); anything else is refused with the reason."""
    chosen = str(st.session_state.get(ROOT_PICK_KEY) or "").strip()
    if chosen == data_root():
        return
    try:
        if not chosen:  # emptied: forget the choice, back to the default
            settings.save_data_root(None)
            st.session_state[DATA_ROOT_KEY] = str(paths.data_root(server_options().data_root))
            return
        path = settings.check_allowed(chosen, allowed_roots())
        problem = settings.readable_folder(path)
        if problem or not path.is_dir():
            raise LensError(problem or f"{chosen} does not exist")
        settings.save_data_root(path)
    except LensError as err:
        st.session_state[ROOT_MESSAGE_KEY] = str(err)
        return
    st.session_state[DATA_ROOT_KEY] = str(path)


def data_root_field() -> None:
    """The Model page's Data root: one of the folders this server allows, remembered for every
    later session; fixed (and said so) when the server's owner set it."""
    current = data_root()
    layouts = f"Datasets are read there as {paths.DATA_LAYOUTS}."
    pinned = pinned_data_root()
    if pinned:
        st.text_input("Data root", value=current, disabled=True, key="_lens_data_root_fixed")
        st.caption(f"Set for this server by {pinned} (the person running it). {layouts}")
        return
    roots = ", ".join(str(root) for root in allowed_roots())
    st.session_state[ROOT_PICK_KEY] = current
    st.text_input(
        "Data root",
        key=ROOT_PICK_KEY,
        on_change=_root_chosen,
        help="Where datasets live: a folder inside those this server lets the app read "
        f"({roots}). Remembered for every later session.",
    )
    message = st.session_state.pop(ROOT_MESSAGE_KEY, None)
    if message:
        st.error(message, icon=":material/folder_off:")
    st.caption(
        f"{layouts} The app may use a folder inside {roots}; the person running the server "
        f"allows more with `--allow-root DIR`. Remembered in {settings.settings_path()}."
    )
