"""Page tests with Streamlit's AppTest: the home page and the shared sidebar."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from dashboard import models
from dashboard.analysis import probe, summary
from tests.conftest import REPO_ROOT

TIMEOUT = 60


def run_home(**state: str) -> AppTest:
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=TIMEOUT)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def test_home_shows_the_shape_flow_of_the_selected_architecture() -> None:
    app = run_home(lens_model="arch:course-net")
    assert not app.exception, app.exception
    table = app.dataframe[0].value
    expected = summary.display_rows(probe.shape_flow(models.build_model("course-net"), (1, 28, 28)))
    assert list(table["Layer"]) == [row["Layer"] for row in expected]
    assert list(table["Output"]) == [row["Output"] for row in expected]
    assert int(table["Params"].sum()) == 8490
    params = next(m for m in app.metric if m.label == "Parameters")
    assert params.value == "8,490"


def test_sidebar_choice_persists_and_changes_the_table() -> None:
    app = run_home(lens_model="arch:course-net")
    app.sidebar.selectbox[0].select("arch:bn-cnn").run()
    assert not app.exception
    assert app.session_state["lens_model"] == "arch:bn-cnn"
    assert int(app.dataframe[0].value["Params"].sum()) == 442446
