"""The view in the address bar: session-state keys bound to ?param= so a link reopens the same
view, and how a model is named in a link (never by a server path).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import streamlit as st

from dashboard.base import paths
from dashboard.ui.choices import (
    CKPT_PREFIX,
    add_model_choice,
    checkpoint_key,
    checkpoint_path,
    model_choices,
    model_label,
    select_model,
)
from dashboard.ui.state import LINK_NOTE_KEY, MODEL_KEY

URL_ADOPTED_KEY = "_lens_url_adopted"  # (page, parameter) pairs already read from the URL


def _page_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    return getattr(ctx, "page_script_hash", "") if ctx else ""


def url_bound(
    param: str,
    key: str,
    parse: Callable[[str], object | None] = str,
    show: Callable[[object], str | None] = str,
    refused: Callable[[str], None] | None = None,
) -> None:
    """Keep session-state `key` in the URL as ?param=, so a link reopens the same view.

    Call before the widget that owns `key` is drawn. On this page's first run in a session a
    value in the URL is adopted (when `parse` accepts it: it returns None for anything invalid,
    and `refused` hears of it); after that the current value is written back on every run
    (`show` → None leaves it out of the address)."""
    adopted = st.session_state.setdefault(URL_ADOPTED_KEY, set())
    if (_page_id(), param) not in adopted:
        adopted.add((_page_id(), param))
        raw = st.query_params.get(param)
        value = parse(raw) if raw is not None else None
        if value is not None:
            st.session_state[key] = value
        elif raw is not None:
            del st.query_params[param]  # nonsense in a link: the page's default instead
            if refused is not None:
                refused(raw)
    shown = show(st.session_state[key]) if st.session_state.get(key) is not None else None
    if shown is not None:
        st.query_params[param] = shown
    else:
        st.query_params.pop(param, None)


def one_of(options: Sequence[object]) -> Callable[[str], object | None]:
    """A `url_bound` parser accepting only the given options (matched by their text)."""
    by_text = {str(option): option for option in options}
    return by_text.get


def index_below(count: int) -> Callable[[str], int | None]:
    """A `url_bound` parser accepting a whole number in [0, count)."""

    def parse(text: str) -> int | None:
        return int(text) if text.isdigit() and int(text) < count else None

    return parse


SHIPPED_PREFIX = CKPT_PREFIX + "trained/"  # shipped checkpoints go in links by their bare name
RUN_LINK = "run:"  # a saved run in the runs folder, by its name


def model_link(model_key: object) -> str | None:
    """How a model is named in a link, never by a server path: a shipped checkpoint by its name,
    a saved run as run:NAME, an upload as upload:<content hash>-<reading>, an architecture by
    its key; None for a file that has no such name (the link then leaves the model out)."""
    from dashboard.models import checkpoints, uploads

    key = str(model_key)
    if not key.startswith(CKPT_PREFIX):
        return key
    path = checkpoint_path(key)
    if path.suffix != checkpoints.WEIGHTS_SUFFIX:
        return None
    folder = path.parent.resolve()
    if folder == paths.TRAINED_DIR.resolve():
        return path.stem
    if folder == paths.RUNS_DIR.resolve():
        return RUN_LINK + path.stem
    return uploads.link_name(path)


def model_from_url(choices: list[str]) -> Callable[[str], str | None]:
    """A link's model: a shipped checkpoint's name, run:NAME, upload:ID, or a key the sidebar
    offers. A link's upload joins this session's choices."""
    from dashboard.models import checkpoints, uploads

    def parse(text: str) -> str | None:
        if text.startswith(uploads.LINK_PREFIX):
            path = uploads.find_link(text)
            found = checkpoint_key(path) if path is not None else None
        elif text.startswith(RUN_LINK):
            name = text.removeprefix(RUN_LINK)  # a plain name: never a path
            path = paths.RUNS_DIR / f"{name}{checkpoints.WEIGHTS_SUFFIX}"
            found = checkpoint_key(path) if re.fullmatch(r"\w[\w.-]*", name, re.ASCII) else None
        else:
            found = next(
                (k for k in (text, f"{SHIPPED_PREFIX}{text}.safetensors") if k in choices), None
            )
        if found is None or (found not in choices and not found.startswith(CKPT_PREFIX)):
            return None
        if found not in choices:
            if not checkpoint_path(found).is_file():
                return None
            add_model_choice(found)
        select_model(found)  # brings the card's dataset, unless the link names one
        return found

    return parse


def model_refused(text: str) -> None:
    """A link named a model this server does not have: say so, and which model shows instead."""
    shown = re.sub(r"[^A-Za-z0-9:._+-]", "", text)[:80] or "?"  # plain text: no markdown
    instead = st.session_state.get(MODEL_KEY) or model_choices()[0]
    st.session_state[LINK_NOTE_KEY] = (
        f"The link's model {shown} is not on this server (an upload is kept only while its "
        f"file stays in the server's cache): showing {model_label(instead)} instead."
    )
