"""One page of the app under AppTest, opened as a user arriving from another page would."""

from __future__ import annotations

from collections.abc import Mapping

from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT

APP = str(REPO_ROOT / "app.py")  # the entry point: the sidebar's page links resolve against it
TIMEOUT = 120  # seconds a run may take: the first one imports torch and loads a model


def run_page(
    script: str,
    *,
    timeout: float = TIMEOUT,
    extra: bool = False,
    query: Mapping[str, str] | None = None,
    **state: object,
) -> AppTest:
    """`script` ("pages/2_Train.py") run once with `state` in session state ("lens_model", …)
    and `query` in the URL; with `extra`, lens_model is also offered in the sidebar as this
    session's extra choice (as an upload is). Fails on an exception."""
    app = AppTest.from_file(APP, default_timeout=timeout).switch_page(script)
    for key, value in state.items():
        app.session_state[key] = value
    if extra:
        app.session_state["lens_extra_models"] = [state["lens_model"]]
    for key, value in (query or {}).items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, app.exception
    return app


def plotly_specs(app: AppTest, keys: tuple[str, ...]) -> dict[str, dict]:
    """The page's plotly charts as JSON, by which of `keys` their element ids end with."""
    import json

    found = {}
    for chart in app.get("plotly_chart"):
        key = next(k for k in keys if chart.proto.id.endswith(k))
        found[key] = json.loads(chart.proto.spec)
    return found


def open_tab(app: AppTest, key: str, tab: str) -> AppTest:
    """Open one of a page's tabs kept under session-state `key` (only the open one is drawn),
    run the page, and check it ran without an exception or an error box."""
    app.session_state[key] = tab
    app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app


def plotly_array(value, dtype=None):
    """An array from a chart's JSON: plotly's base64 typed array ({dtype, bdata, shape}) or
    nested lists (`dtype` float64 turns a null, a gap, into NaN)."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            dims = shape if isinstance(shape, list) else str(shape).split(",")
            flat = flat.reshape([int(d) for d in dims])
        return flat if dtype is None else flat.astype(dtype)
    return np.array(value, dtype=dtype)
