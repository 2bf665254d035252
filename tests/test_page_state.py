"""State that holds: on every page the main widgets keep their values when the user leaves the
page and comes back (one AppTest session: set → another page → back), and a page follows the
sidebar's model only when that model changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.base import paths
from tests.conftest import REPO_ROOT
from tests.test_page_train import run_until_done

APP = str(REPO_ROOT / "app.py")
TIMEOUT = 240
SHIPPED = "ckpt:trained/lenet5-mnist.safetensors"
SGD = "ckpt:trained/study-lenet5-sgd.safetensors"
BASE = "ckpt:trained/study-lenet5-base.safetensors"
MODEL, TRAIN, SHAPE, FILTERS = (
    f"pages/{n}.py" for n in ("1_Model", "2_Train", "3_Shape_flow", "4_Filters")
)
ACTIVATIONS, CONFUSION, COMPARE, LAB = (
    f"pages/{n}.py"
    for n in ("5_Activations", "6_Confusion_matrix", "7_Compare", "8_Convolution_lab")
)


@pytest.fixture(autouse=True)
def private_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A run saved by a test goes to a temporary folder."""
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")


def visit(app: AppTest, page: str) -> AppTest:
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def opened(page: str, **state) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        app.session_state[key] = value
    return visit(app, page)


def widget(app: AppTest, kind: str, key: str):
    return getattr(app, kind)(key=key)


def set_all(app: AppTest, changes: list[tuple[str, str, object]]) -> None:
    """Set each widget (kind, key, value) as a user would, one rerun each."""
    for kind, key, value in changes:
        widget(app, kind, key).set_value(value).run()
        assert not app.exception, [e.value for e in app.exception]
        assert widget(app, kind, key).value == value, key


def values(app: AppTest, changes: list[tuple[str, str, object]]) -> dict[str, object]:
    return {key: widget(app, kind, key).value for kind, key, _ in changes}


def round_trip(app: AppTest, page: str, changes: list, away: str = SHAPE) -> None:
    """The widgets hold their values after a visit to another page."""
    wanted = {key: value for _, key, value in changes}
    assert values(app, changes) == wanted
    visit(app, away)
    visit(app, page)
    assert values(app, changes) == wanted


def holds(app: AppTest, page: str, changes: list, away: str = SHAPE) -> None:
    """Set the widgets as a user would, then check them after a visit to another page."""
    set_all(app, changes)
    round_trip(app, page, changes, away)


def test_train_keeps_its_settings_and_follows_the_sidebar_only_when_it_changes():
    """The defect as reported: /Train?model=lenet5-mnist, Epochs 1, Shape flow, back: the
    architecture was course-net and Epochs 5 again; a finished run's save name came back empty
    with an error showing."""
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).switch_page(TRAIN)
    app.query_params["model"] = "lenet5-mnist"
    app.query_params["dataset"] = "mnist"
    app.run()
    assert not app.exception
    assert app.selectbox(key="_train_w_arch").value == "lenet5"  # from the sidebar's model
    changes = [
        ("number_input", "_train_w_epochs", 1),
        ("number_input", "_train_w_batch", 128),
        ("number_input", "_train_w_lr", 0.002),
        ("selectbox", "_train_w_optimizer", "sgd"),
        ("selectbox", "_train_w_opt_lenet5_pooling", "avg"),
        ("checkbox", "_train_w_from_weights", True),
        ("number_input", "_train_w_limit", 600),
        ("number_input", "_train_w_limit_test", 300),
        ("checkbox", "_train_w_eval_every", False),
    ]
    holds(app, TRAIN, changes)
    assert not app.error  # "Start from the weights of lenet5-mnist" still fits

    # A finished run's save box keeps its name, and shows no error, after a visit elsewhere.
    app.button(key="train_start").click().run()
    run = run_until_done(app)
    name = app.text_input(key="_train_w_save_name")
    assert name.value == f"lenet5-mnist-run{run.id}"
    name.input("my-lenet").run()
    round_trip(app, TRAIN, [("text_input", "_train_w_save_name", "my-lenet")])
    assert not app.error

    # Another architecture chosen here stays while the sidebar's model stays …
    set_all(app, [("selectbox", "_train_w_arch", "bn-cnn")])
    round_trip(app, TRAIN, [("selectbox", "_train_w_arch", "bn-cnn")])
    # … and follows the sidebar when its model changes, on whichever page that happens.
    visit(app, SHAPE)
    app.selectbox(key="_lens_model").set_value("arch:vgg13-small").run()
    visit(app, TRAIN)
    assert app.selectbox(key="_train_w_arch").value == "vgg13-small"
    assert app.number_input(key="_train_w_epochs").value == 1  # the rest is the user's


def test_model_page_keeps_its_chooser_and_choices():
    app = opened(MODEL, lens_model=SHIPPED)
    changes = [
        ("radio", "_model_source", "Upload a state dict"),
        ("selectbox", "_model_upload_arch", "course-net"),
        ("checkbox", "_model_upload_partial", True),
    ]
    holds(app, MODEL, changes)
    zoo = [("radio", "_model_source", "torchvision zoo"), ("selectbox", "_model_zoo_name", "vgg11")]
    zoo.append(("checkbox", "_model_zoo_weights", False))
    holds(app, MODEL, zoo)
    # A new model in the sidebar opens the chooser it came from.
    app.selectbox(key="_lens_model").set_value("arch:lenet5").run()
    assert app.radio(key="_model_source").value == "Untrained architecture"


def test_shape_flow_keeps_its_input_size_detail_and_folds():
    app = opened(SHAPE, lens_model="arch:resnet18-small", lens_dataset="cifar10")
    changes = [
        ("number_input", "_shape_h", 40),
        ("number_input", "_shape_w", 48),
        ("select_slider", "_shape_detail", 1),
        ("multiselect", "_shape_fold", ["layer2"]),
    ]
    holds(app, SHAPE, changes, away=FILTERS)
    assert app.metric[0].value == "3×40×48"  # the flow is traced at the kept size


def test_filters_keeps_layer_scale_channel_epoch_and_image():
    app = opened(FILTERS, lens_model=SHIPPED, lens_dataset="mnist")
    epochs = app.select_slider(key="_filters_epoch").options  # as shown: "0 (before training)"
    changes = [
        ("selectbox", "_filters_layer", "features.conv2"),
        ("radio", "_filters_scale", "per filter"),
        ("radio", "_filters_channels", "one input channel"),
        ("slider", "_filters_channel", 4),
    ]
    holds(app, FILTERS, changes)
    first = [
        ("selectbox", "_filters_layer", "features.conv1"),
        ("number_input", "_filters_image", 7),
    ]
    if len(epochs) > 1:
        first.append(("select_slider", "_filters_epoch", 1))
    holds(app, FILTERS, first)


def test_activations_keeps_image_layer_and_views():
    app = opened(ACTIVATIONS, lens_model=SHIPPED, lens_dataset="mnist")
    changes = [
        ("number_input", "_lens_image_index", 5),
        ("selectbox", "_lens_layer", "features.conv2"),
        ("radio", "_act_after", "after"),
        ("radio", "_act_scale", "global"),
        ("toggle", "_act_sort", True),
        ("toggle", "_act_two", True),
        ("number_input", "_lens_compare_index", 9),
        ("selectbox", "_act_cam_layer", "features.conv1"),
        ("number_input", "_act_neuron_c", 3),
        ("number_input", "_act_neuron_y", 2),
    ]
    holds(app, ACTIVATIONS, changes)
    mistakes = [
        ("radio", "_lens_image_mode", "misclassified"),
        ("selectbox", "_act_mistake_class", 4),
    ]
    holds(app, ACTIVATIONS, mistakes)


def test_confusion_keeps_its_view_and_second_model():
    app = opened(CONFUSION, lens_model=SGD, lens_dataset="mnist")
    changes = [
        ("button_group", "cm_show", "row"),
        ("button_group", "cm_order", "clustered"),
        ("selectbox", "_lens_compare_model", BASE),
    ]
    holds(app, CONFUSION, changes)


def test_compare_keeps_runs_b_filters_and_image():
    app = opened(COMPARE, lens_model=SGD, lens_dataset="mnist")
    runs = ["card:trained/study-lenet5-base", "card:trained/study-lenet5-sgd"]
    changes = [
        ("button_group", "_compare_runs", runs),
        ("selectbox", "_compare_curve", "train loss"),
        ("selectbox", "_compare_b", BASE),
        ("selectbox", "_compare_filter_layer", "features.conv2"),
        ("selectbox", "_compare_channel", 2),
        ("number_input", "_compare_image", 12),
        ("selectbox", "_compare_layer", "features.conv1"),
    ]
    holds(app, COMPARE, changes)


def test_convolution_lab_keeps_its_tab_and_inputs():
    app = opened(LAB, lens_model=SHIPPED, lens_dataset="mnist")
    worked = [
        ("number_input", "_lab_padding", 0),
        ("number_input", "_lab_stride", 2),
        ("select_slider", "_lab_step", 3),
    ]
    holds(app, LAB, worked)
    app.session_state["lab_tab"] = "Pooling"
    app.run()
    pooling = [("radio", "_lab_pool_kind", "avg"), ("number_input", "_lab_pool_window", 3)]
    holds(app, LAB, pooling)
    assert app.session_state["lab_tab"] == "Pooling"
