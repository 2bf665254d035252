"""The Training dynamics page under AppTest: what it plots is the run's record and the saved
weights (norms by torch.linalg, percentiles by numpy), the shipped checkpoints say they carry no
dynamics and how to get them, a run of this session is offered, and the choices hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dashboard import data, training
from dashboard.analysis import dynamics
from dashboard.models import checkpoints
from dashboard.training import runs
from tests.conftest import REPO_ROOT
from tests.dynamics_run import dynamics_checkpoint  # noqa: F401 (a fixture)
from tests.pages import run_page
from tests.test_page_filters import array

PAGE = "pages/13_Training_dynamics.py"
SHIPPED = "ckpt:trained/lenet5-mnist.safetensors"
UNTRAINED = "arch:lenet5"


def open_page(model_key: str, **state):
    return run_page(PAGE, extra=True, lens_model=model_key, lens_dataset="mnist", **state)


def charts(app) -> dict[str, dict]:
    """Every plotly figure of the page by its title."""
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    return {spec["layout"]["title"]["text"].replace("<br>", " "): spec for spec in specs}


def test_weight_norms_at_the_end_are_the_saved_weights_norms(dynamics_checkpoint: Path):  # noqa: F811
    app = open_page(
        f"ckpt:{dynamics_checkpoint}",
        dyn_statistic="weight_norm",
        dyn_smoothing=0.0,
        dyn_clock="epoch",
    )
    assert not app.info, [i.value for i in app.info]
    assert app.selectbox(key="_dyn_statistic").value == "weight_norm"
    expected = [
        "features.conv1.weight",
        "features.conv2.weight",
        "classifier.fc1.weight",
        "classifier.fc2.weight",
        "classifier.fc3.weight",
    ]
    assert app.multiselect(key="_dyn_tensors").value == expected
    spec = charts(app)["Weight norm ‖w‖₂"]
    traces = {t["name"]: t for t in spec["data"]}
    assert list(traces) == expected  # smoothing 0: one raw line each
    state = load_file(str(dynamics_checkpoint))
    for name in expected:
        x, y = array(traces[name]["x"]), array(traces[name]["y"])
        assert x[-1] == 2.0  # the last sample: the second epoch's last step
        norm = float(torch.linalg.vector_norm(state[name].double()))
        assert y[-1] == pytest.approx(norm, rel=1e-6), name
    assert spec["layout"]["yaxis"]["type"] == "linear"
    # the table of numbers: the same last values, and the run's first, median and extremes
    frame = app.dataframe[0].value.set_index("Layer")
    series = checkpoints.load_checkpoint(dynamics_checkpoint).dynamics.series()
    for name in expected:
        norms = series.values["weight_norm"][name]
        norm = float(torch.linalg.vector_norm(state[name].double()))
        assert frame.loc[name, "Last"] == pytest.approx(norm, rel=1e-6)
        assert frame.loc[name, "First"] == norms[0]
        assert frame.loc[name, "Median"] == np.median(norms)
        assert (frame.loc[name, "Smallest"], frame.loc[name, "Largest"]) == (
            norms.min(),
            norms.max(),
        )


def test_distribution_bands_are_the_saved_weights_percentiles(dynamics_checkpoint: Path):  # noqa: F811
    tensor = "features.conv2.weight"
    app = open_page(f"ckpt:{dynamics_checkpoint}", dyn_tensor=tensor)
    assert app.radio(key="_dyn_view").value == "percentile bands"
    spec = charts(app)[f"{tensor}: distribution over epochs"]
    median = next(t for t in spec["data"] if t.get("name") == "median")
    assert list(array(median["x"])) == [0, 1, 2]
    weights = load_file(str(dynamics_checkpoint))[tensor].double().numpy().ravel()
    log = checkpoints.load_checkpoint(dynamics_checkpoint).dynamics
    dist = dynamics.distribution(log, tensor)
    width = dist.edges[1] - dist.edges[0]
    assert abs(array(median["y"])[-1] - np.median(weights)) < width
    outer = next(t for t in spec["data"] if t.get("name") == "min–max")
    assert abs(array(outer["y"])[-1] - weights.max()) < width
    assert f"{weights.size:,} values" in spec["layout"]["title"]["subtitle"]["text"]
    # the heatmap: every epoch's shares of the tensor's values
    app.radio(key="_dyn_view").set_value("histogram heatmap").run()
    heat = charts(app)[f"{tensor}: histograms"]["data"][0]
    z = array(heat["z"]).reshape(3, -1)
    inside, _ = np.histogram(weights, bins=dist.edges)
    np.testing.assert_allclose(z[-1], 100 * inside / weights.size)


def test_update_ratios_on_a_log_axis_with_the_rule_of_thumb(dynamics_checkpoint: Path):  # noqa: F811
    app = open_page(f"ckpt:{dynamics_checkpoint}", dyn_smoothing=0.9)
    assert app.selectbox(key="_dyn_statistic").value == "update_ratio"  # the default
    specs = charts(app)
    spec = specs["Update-to-weight ratio ‖Δw‖/‖w‖"]
    assert spec["layout"]["yaxis"]["type"] == "log"
    assert spec["layout"]["shapes"][0]["y0"] == 1e-3
    (label,) = spec["layout"]["annotations"]  # at 1e-3: log10 units on a log axis
    assert label["y"] == pytest.approx(-3.0)
    assert label["text"] == "~1e-3 rule of thumb"
    log = checkpoints.load_checkpoint(dynamics_checkpoint).dynamics
    raw = log.series().values["update_ratio"]["features.conv1.weight"]
    line = next(t for t in spec["data"] if t["name"] == "features.conv1.weight")
    np.testing.assert_allclose(array(line["y"]), dynamics_ema(raw, 0.9), rtol=1e-12)


def dynamics_ema(values, weight):
    out, last = [], 0.0
    for n, v in enumerate(values, start=1):
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


def test_an_untrained_model_says_it_has_no_dynamics_and_how_to_get_them():
    app = open_page(UNTRAINED)
    (message,) = [i.value for i in app.info]
    assert "is untrained: it has no training to show" in message
    assert "Train" in message
    assert "python -m dashboard train" in message
    assert not app.get("plotly_chart")


def test_a_shipped_checkpoint_carries_its_dynamics_and_they_match_its_weights():
    app = open_page(SHIPPED, dyn_statistic="weight_norm", dyn_smoothing=0.0, dyn_clock="epoch")
    assert not app.info, [i.value for i in app.info]
    spec = charts(app)["Weight norm ‖w‖₂"]
    state = load_file(str(REPO_ROOT / "trained" / "lenet5-mnist.safetensors"))
    for trace in spec["data"]:
        x, y = array(trace["x"]), array(trace["y"])
        assert x[-1] == 8.0  # the last sample: the eighth epoch's last step
        norm = float(torch.linalg.vector_norm(state[trace["name"]].double()))
        assert y[-1] == pytest.approx(norm, rel=1e-6), trace["name"]


def test_a_run_of_this_session_is_offered_and_drawn(shared_datasets: Path, one_torch_thread):
    train = data.take_first(data.load_split("mnist", "train", data_root=shared_datasets), 640)
    test = data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), 320)
    config = training.TrainConfig(epochs=2, dynamics_every=2)
    run = runs.start_run(runs.RunSpec("course-net", "mnist", config=config), train, test)
    assert run.join(120)
    app = open_page(UNTRAINED, train_runs=[run], dyn_statistic="dead_share", dyn_smoothing=0.0)
    assert "is untrained" in app.info[0].value
    assert app.selectbox(key="_dyn_source").value == f"run:{run.id}"
    dead = run.result.dynamics.series().values["dead_share"]
    spec = next(iter(charts(app).values()))
    drawn = {t["name"]: array(t["y"]) for t in spec["data"]}
    assert list(drawn) == list(dead)
    for name, values in dead.items():
        np.testing.assert_allclose(drawn[name], 100 * values, err_msg=name)
    assert f"{run.id}" in app.selectbox(key="_dyn_source").format_func(f"run:{run.id}")
    assert any(title.endswith(": distribution over epochs") for title in charts(app))


def test_choices_hold_across_pages_and_links(dynamics_checkpoint: Path):  # noqa: F811
    app = open_page(f"ckpt:{dynamics_checkpoint}")
    changes = [
        ("selectbox", "_dyn_statistic", "grad_norm"),
        ("radio", "_dyn_clock", "seconds"),
        ("slider", "_dyn_smoothing", 0.3),
        ("multiselect", "_dyn_tensors", ["features.conv1.weight", "classifier.fc1.bias"]),
        ("selectbox", "_dyn_tensor", "classifier.fc1.weight"),
        ("radio", "_dyn_view", "histogram heatmap"),
    ]
    for kind, key, value in changes:
        getattr(app, kind)(key=key).set_value(value).run()
        assert not app.exception
    assert app.query_params["statistic"] == ["grad_norm"] or app.query_params["statistic"] == (
        "grad_norm"
    )
    app.switch_page("pages/3_Shape_flow.py").run()
    app.switch_page(PAGE).run()
    assert not app.exception
    for kind, key, value in changes:
        assert getattr(app, kind)(key=key).value == value, key
    titles = list(charts(app))
    assert titles == ["Gradient norm ‖∇w‖₂", "classifier.fc1.weight: histograms"]
    # a link with ?statistic= opens that statistic
    linked = run_page(
        PAGE,
        extra=True,
        lens_model=f"ckpt:{dynamics_checkpoint}",
        lens_dataset="mnist",
        query={"statistic": "dead_share", "x": "epoch"},
    )
    assert linked.selectbox(key="_dyn_statistic").value == "dead_share"
    assert linked.radio(key="_dyn_clock").value == "epoch"


def test_a_run_still_training_shows_its_samples_so_far(shared_datasets: Path, one_torch_thread):
    """A long run, caught while it trains: the lines hold the samples sent so far, the
    histograms wait for its end."""
    import time

    from dashboard.models.dynamics import DynamicsEvent

    train = data.take_first(data.load_split("mnist", "train", data_root=shared_datasets), 640)
    config = training.TrainConfig(epochs=200, dynamics_every=1)
    spec = runs.RunSpec("lenet5", "mnist", config=config, options={"batch_norm": True})
    run = runs.start_run(spec, train, None)
    try:
        deadline = time.monotonic() + 120
        while not any(isinstance(e, DynamicsEvent) for e in run.events_since(0)):
            assert time.monotonic() < deadline, "no sample in 2 minutes"
            time.sleep(0.2)
        app = open_page(UNTRAINED, train_runs=[run], dyn_statistic="weight_norm")
        assert not run.done
        assert any("still training" in c.value for c in app.caption)
        assert any("histograms of a run come" in i.value for i in app.info)
        spec = next(iter(charts(app).values()))
        names = [t["name"] for t in spec["data"] if t.get("showlegend") is not False]
        # the conv and linear weights, not the batch norms' (from the architecture itself)
        assert names == [
            "features.conv1.weight",
            "features.conv2.weight",
            "classifier.fc1.weight",
            "classifier.fc2.weight",
            "classifier.fc3.weight",
        ]
        assert "features.bn1.weight" in app.multiselect(key="_dyn_tensors").options
        drawn = array(spec["data"][0]["x"])  # the samples sent before the page ran
        assert (
            1 <= len(drawn) <= len([e for e in run.events_since(0) if isinstance(e, DynamicsEvent)])
        )
    finally:
        run.stop()
        run.join(60)


def test_damaged_dynamics_are_said_so(dynamics_checkpoint: Path, tmp_path: Path):  # noqa: F811
    """A file whose dynamics tensors are of the wrong shape: the model loads, the page says its
    record is damaged (not that it never had one)."""
    import shutil

    from safetensors.torch import save_file

    tensors = load_file(str(dynamics_checkpoint))
    tensors["lens_history/dynamics/steps/step"] = torch.zeros(3, 2)  # not a vector
    target = tmp_path / "damaged.safetensors"
    save_file(tensors, str(target))
    shutil.copy(dynamics_checkpoint.with_suffix(".json"), target.with_suffix(".json"))
    app = open_page(f"ckpt:{target}")
    (message,) = [i.value for i in app.info]
    assert "recorded dynamics are damaged and were skipped" in message
    assert not app.get("plotly_chart")
