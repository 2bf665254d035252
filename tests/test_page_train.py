"""The Train page under AppTest: set the options, Start, follow the run to its end, save under
a name (never overwriting without the checkbox), Stop, fine-tune without touching the cached
model, and two sessions training at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import training, ui
from dashboard.base import paths
from dashboard.models import checkpoints
from dashboard.training import runs
from tests.pages import plotly_array, run_page

PAGE = "pages/2_Train.py"


@pytest.fixture(autouse=True)
def runs_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Saved runs go to a temporary folder, never the repository's runs/."""
    folder = tmp_path / "runs"
    monkeypatch.setattr(paths, "RUNS_DIR", folder)
    return folder


def train_page(model_key: str = "arch:lenet5", extra: bool = False) -> AppTest:
    return run_page(PAGE, extra=extra, lens_model=model_key)


def set_quick_run(app: AppTest, epochs: int = 1, limit: int = 2000) -> None:
    app.number_input(key="_train_w_epochs").set_value(epochs)
    app.number_input(key="_train_w_limit").set_value(limit)
    app.number_input(key="_train_w_limit_test").set_value(1000)


def start(app: AppTest) -> runs.TrainingRun:
    app.button(key="train_start").click().run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app.session_state["train_runs"][-1]


def run_until_done(app: AppTest, timeout: float = 120) -> runs.TrainingRun:
    """Rerun the script (as the fragment's timer would) until the session's run has ended."""
    deadline = time.monotonic() + timeout
    while True:
        run = app.session_state["train_runs"][-1]
        if run.done:
            app.run()
            assert not app.exception, app.exception
            return run
        assert time.monotonic() < deadline, f"the run did not end: {run.reason}"
        time.sleep(0.2)
        app.run()
        assert not app.exception, app.exception


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def test_a_run_trains_then_saves_under_a_name_without_overwriting_silently(runs_dir):
    app = train_page("arch:lenet5")
    assert app.selectbox(key="_train_w_arch").value == "lenet5"  # the sidebar's architecture
    app.selectbox(key="_train_w_opt_lenet5_pooling").set_value("avg")
    app.number_input(key="_train_w_lr").set_value(0.002)
    set_quick_run(app)
    run = start(app)
    assert app.button(key="train_start").disabled  # one run at a time per session
    run = run_until_done(app)
    assert run.status == runs.FINISHED
    assert [s.value for s in app.success] == ["finished: 1 epoch trained"]
    accuracy = run.history[-1].test_accuracy
    assert metric(app, "Test accuracy") == percent(accuracy)
    assert run.spec.options == {"activation": "relu", "pooling": "avg", "batch_norm": False}
    assert (run.spec.config.lr, run.train_images, run.test_images) == (0.002, 2000, 1000)
    assert app.text_input(key="_train_w_save_name").value == f"lenet5-mnist-run{run.id}"
    # The run shows in the comparison, with its numbers in the table.
    assert app.pills(key="_train_compare_runs").value == [f"run:{run.id}"]
    table = app.dataframe[-1].value
    assert table.loc[f"run {run.id}", "Test acc. (%)"] == round(100 * accuracy, 2)

    # A name that is taken: a warning, a checkbox, and Save alone changes nothing.
    runs_dir.mkdir()
    taken = runs_dir / "taken.safetensors"
    taken.write_bytes(b"someone's weights")
    taken.with_suffix(".json").write_text("{}")
    app.text_input(key="_train_w_save_name").input("taken").run()
    assert [w.value for w in app.warning] == [
        "A run named 'taken' already exists in " + str(runs_dir) + "."
    ]
    app.button(key="train_save").click().run()
    assert not app.exception, app.exception
    assert [e.value for e in app.error][-1].startswith("a run named 'taken' exists in")
    assert taken.read_bytes() == b"someone's weights"
    assert app.session_state["lens_model"] == "arch:lenet5"

    app.checkbox(key="_train_w_overwrite").check().run()
    app.button(key="train_save").click().run()
    assert not app.exception, app.exception
    assert app.session_state["lens_model"] == ui.checkpoint_key(taken)  # selected everywhere
    card = checkpoints.read_card(taken)
    assert card.architecture == "lenet5"
    assert card.model_args["options"] == {
        "activation": "relu",
        "pooling": "avg",
        "batch_norm": False,
    }
    assert card.metrics["test_accuracy"] == accuracy
    assert card.history == [runs.epoch_record(e) for e in run.history]
    assert "--option pooling=avg" in card.command
    assert f"--out {runs_dir / 'taken'}" in card.command
    saved = f"Saved as {taken}; it is the selected model on every page."
    assert saved in [s.value for s in app.success]
    # The saved run is now offered for comparison too.
    assert f"{runs_dir}/taken" in app.pills(key="_train_compare_runs").options


def test_stop_ends_a_run_from_the_page_and_the_stopped_run_can_be_saved():
    app = train_page("arch:course-net")
    set_quick_run(app, epochs=50)
    run = start(app)
    app.button(key=f"train_stop_{run.id}").click().run()
    run = run_until_done(app, timeout=60)  # the latency is measured in test_runs.py
    assert run.status == runs.STOPPED
    assert len(run.history) == 1
    assert run.history[-1].partial  # ended inside the first of 50 epochs
    assert app.warning[0].value.startswith("stopped by user at epoch ")
    assert not app.button(key="train_start").disabled
    assert app.text_input(key="_train_w_save_name").value == f"course-net-mnist-run{run.id}"


def test_fine_tuning_copies_the_selected_checkpoint_and_never_trains_the_cached_model(
    lenet5_mnist_checkpoint,
):
    key = "ckpt:" + str(lenet5_mnist_checkpoint)
    app = train_page(key, extra=True)
    cached, view = ui.load_model(ui.Selection(key, "mnist"))  # the object every session shares
    before = {k: v.clone() for k, v in cached.state_dict().items()}
    app.checkbox(key="_train_w_from_weights").check()
    set_quick_run(app, limit=1000)
    start(app)
    run = run_until_done(app)
    assert run.status == runs.FINISHED
    assert run.spec.initial_weights == view.label
    count = len(before)  # every tensor fits: same architecture, same dataset
    copied = f"({count} of {count} tensors copied)"
    assert run.notes == [f"started from the weights of {view.label} {copied}"]
    assert all(torch.equal(v, cached.state_dict()[k]) for k, v in before.items())
    assert not cached.training
    conv1 = run.result.filter_history[0]["features.conv1"]
    assert torch.equal(conv1, before["features.conv1.weight"])


def test_two_sessions_train_at_once_and_never_mix():
    first, second = train_page("arch:course-net"), train_page("arch:lenet5")
    for app in (first, second):
        set_quick_run(app, epochs=2)
    a, b = start(first), start(second)
    assert {a, b} <= set(runs.active_runs())
    assert a.owner != b.owner
    a, b = run_until_done(first), run_until_done(second)
    assert first.session_state["train_runs"] == [a]
    assert second.session_state["train_runs"] == [b]
    assert (a.spec.architecture, b.spec.architecture) == ("course-net", "lenet5")
    assert metric(first, "Test accuracy") == percent(a.history[-1].test_accuracy)
    assert metric(second, "Test accuracy") == percent(b.history[-1].test_accuracy)
    assert a.history[-1].test_accuracy != b.history[-1].test_accuracy


def test_the_live_view_shows_the_runs_filters_maps_and_prediction():
    import plotly.io

    app = train_page("arch:lenet5")
    set_quick_run(app)
    start(app)
    run = run_until_done(app)
    assert run.status == runs.FINISHED
    heading = "**The weights after epoch 1, step 32/32** (at the end of the run)"
    assert heading in [m.value for m in app.markdown]

    def charts() -> dict:
        figs = [plotly.io.from_json(c.proto.spec) for c in app.get("plotly_chart")]
        return {f.layout.title.text: f for f in figs if f.layout.title.text}

    label = int(run.live.labels[0])
    shown = charts()
    for title in ("features.conv1 filters", "features.conv2 filters", "features.conv1 maps"):
        assert title in shown, sorted(shown)
    assert f"Test image · {label}" in shown
    # The prediction drawn is the final weights' on test image 0 (bars in percent).
    view = run.live.view(run.live.latest(), 0, "features.conv1", "features.conv2")
    bars = shown["Prediction"].data[0]
    drawn = dict(zip(bars.y, plotly_array(bars.x), strict=True))
    top = int(view.probabilities.argmax())
    key = next(k for k in drawn if k.split()[0] == str(top))
    assert drawn[key] == pytest.approx(100 * float(view.probabilities[top]), rel=1e-6)

    # The curves by global step, smoothed: the last train point is the EMA of the logged ones.
    app.button_group(key="_train_curve_axis").set_value("step").run()
    app.slider(key="_train_curve_smoothing").set_value(0.6).run()
    assert not app.exception, app.exception
    loss = charts()[f"Run {run.id}: loss"]
    assert loss.layout.xaxis.title.text == "step"
    assert [t.name for t in loss.data] == ["train (raw)", "train (smoothed)", "test"]
    assert plotly_array(loss.data[0].x)[-1] == 32.0
    logged = [e.loss for e in run.events_since(0) if isinstance(e, training.StepEvent)]
    ema = [0.0]
    for value in logged:
        ema.append(0.6 * ema[-1] + 0.4 * value)
    assert plotly_array(loss.data[1].y)[-1] == pytest.approx(ema[-1] / (1 - 0.6 ** len(logged)))

    app.selectbox(key="_train_live_layer").set_value("features.pool2").run()
    app.selectbox(key="_train_live_image").set_value(3).run()
    assert not app.exception, app.exception
    shown = charts()
    assert "features.pool2 maps" in shown
    assert f"Test image · {int(run.live.labels[3])}" in shown
