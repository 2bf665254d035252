"""Sharing and presenting under AppTest: the view lives in the URL (a link reopens the same
page, model, dataset, layer, image and colour scale), presentation mode enlarges figures, and
every figure offers its downloads."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import ui
from dashboard.base import paths
from tests.conftest import REPO_ROOT

TIMEOUT = 180
APP = str(REPO_ROOT / "app.py")
FILTERS, ACTIVATIONS, CONFUSION = (
    "pages/4_Filters.py",
    "pages/5_Activations.py",
    "pages/6_Confusion_matrix.py",
)
SGD = "ckpt:trained/study-lenet5-sgd.safetensors"
LAYER = "filters_layer"


def run(page: str, query: dict[str, str] | None = None, **state) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).switch_page(page)
    for key, value in (query or {}).items():
        app.query_params[key] = value
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def link_of(app: AppTest) -> dict[str, str]:
    """What the address bar holds after a run (each parameter's last value)."""
    return {
        key: values[-1] if isinstance(values, list) else values
        for key, values in dict(app.query_params).items()
    }


def figures_by_title(app: AppTest) -> dict[str, dict]:
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    return {spec["layout"].get("title", {}).get("text", ""): spec for spec in specs}


@pytest.fixture(scope="module")
def filters_view(shared_datasets) -> tuple[AppTest, dict[str, str]]:
    """The Filters page of a shipped model with its second layer, per-filter scale and image 7
    chosen by hand, and the link it leaves in the address bar."""
    app = run(
        FILTERS,
        lens_model=SGD,
        lens_dataset="mnist",
        filters_layer="features.conv1",
        filters_scale="per filter",
        filters_image=7,
    )
    return app, link_of(app)


def test_the_filters_view_is_in_the_url(filters_view) -> None:
    _, link = filters_view
    assert link == {
        "model": "study-lenet5-sgd",  # a shipped checkpoint goes by its bare name
        "dataset": "mnist",
        "layer": "features.conv1",
        "scale": "per filter",
        "image": "7",
    }


def test_a_link_reopens_the_same_filters_view_in_a_new_session(filters_view) -> None:
    first, link = filters_view
    reopened = run(FILTERS, link)  # a fresh session: nothing but the URL
    state = reopened.session_state
    assert state["lens_model"] == SGD
    assert state["lens_dataset"] == "mnist"
    assert state["filters_layer"] == "features.conv1"
    assert state["filters_scale"] == "per filter"
    assert state["filters_image"] == 7
    assert figures_by_title(reopened).keys() == figures_by_title(first).keys()
    grid = next(t for t in figures_by_title(first) if t.startswith("features.conv1"))
    assert figures_by_title(reopened)[grid]["data"] == figures_by_title(first)[grid]["data"]
    assert link_of(reopened) == link


def test_a_link_reopens_the_same_activations_view(shared_datasets) -> None:
    query = {
        "model": "lenet5-mnist",
        "dataset": "mnist",
        "layer": "features.conv1",
        "maps": "after",
        "scale": "global",
        "image": "123",
    }
    app = run(ACTIVATIONS, query)
    state = app.session_state
    assert state["lens_model"] == "ckpt:trained/lenet5-mnist.safetensors"
    assert state["lens_image_index"] == 123
    assert app.selectbox(key="_lens_layer").value == "features.conv1"
    assert app.radio(key="_act_scale").value == "global"
    assert link_of(app) == query
    titles = list(figures_by_title(app))
    assert any(t.startswith("Test image 123") for t in titles), titles


def test_a_link_reopens_the_same_confusion_view(shared_datasets) -> None:
    query = {
        "model": "lenet5-mnist",
        "dataset": "mnist",
        "split": "test",
        "show": "row",
        "order": "by recall",
    }
    app = run(CONFUSION, query)
    assert app.session_state["cm_show"] == "row"
    assert app.session_state["cm_order"] == "by recall"
    assert link_of(app) == query


def test_a_link_with_nonsense_falls_back_to_defaults(shared_datasets) -> None:
    query = {
        "model": "../../etc/passwd",
        "dataset": "imagenet-22k",
        "layer": "no.such",
        "scale": "loud",
        "image": "99999999",
    }
    app = run(FILTERS, query)
    state = app.session_state
    assert state["lens_model"] == ui.checkpoint_keys(paths.TRAINED_DIR)[0]  # the default
    assert state["lens_dataset"] == "mnist"
    link = link_of(app)
    assert link["layer"] == "features.conv1"
    assert "scale" not in link  # the widgets' defaults stand
    assert "image" not in link


def test_presentation_mode_enlarges_fixed_size_figures(filters_view) -> None:
    first, link = filters_view
    presented = run(FILTERS, link | {"present": "1"})
    assert presented.session_state[ui.PRESENT_KEY] is True
    normal, large = figures_by_title(first), figures_by_title(presented)
    grid = next(t for t in normal if t.startswith("features.conv1"))
    assert large[grid]["layout"]["width"] == round(normal[grid]["layout"]["width"] * 1.3)
    assert large[grid]["layout"]["height"] == round(normal[grid]["layout"]["height"] * 1.3)
    assert large[grid]["data"] == normal[grid]["data"]  # the same numbers, only bigger
    assert not [b for b in presented.get("download_button") if b.proto.label == "HTML"]
    folded = [e for e in presented.expander if e.label == "Controls"]
    assert len(folded) == 1  # the page's controls, folded away
    assert folded[0].selectbox(key="_" + LAYER).value == "features.conv1"
    assert not [e for e in first.expander if e.label == "Controls"]
    # The sidebar's switch turns it off again: normal sizes, and the link loses ?present.
    presented.toggle(key="_" + ui.PRESENT_KEY).set_value(False).run()
    assert figures_by_title(presented)[grid]["layout"]["width"] == normal[grid]["layout"]["width"]
    assert "present" not in dict(presented.query_params)


def test_every_figure_has_an_html_download(filters_view) -> None:
    app, _ = filters_view
    charts = app.get("plotly_chart")
    downloads = [b for b in app.get("download_button") if b.proto.label == "HTML"]
    assert len(charts) >= 4
    assert len(downloads) == len(charts)
    for chart in charts:
        config = json.loads(chart.proto.config)
        assert config["toImageButtonOptions"]["format"] == "png"
        assert config["toImageButtonOptions"]["filename"]
