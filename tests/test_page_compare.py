"""The Compare page under AppTest with the shipped seed-study checkpoints: the curves are the
cards' own histories, the table has one row per chosen card, B is offered only among
checkpoints with A's shapes, and the weights, filters and predictions it draws are recomputed
here from the raw safetensors files with torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from streamlit.testing.v1 import AppTest

from dashboard import data, figures, models, training, ui
from dashboard.base import paths
from dashboard.models import checkpoints
from dashboard.training import runs
from tests.pages import run_page
from tests.test_page_filters import array, charts  # plotly specs by title, typed arrays

TIMEOUT = 180
PAGE = "pages/7_Compare.py"
A_MODEL = "ckpt:trained/study-lenet5-batchnorm.safetensors"  # model A of these tests


@pytest.fixture(autouse=True)
def runs_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Saved runs are looked for in an empty temporary folder, never the repository's runs/."""
    folder = tmp_path / "runs"
    monkeypatch.setattr(paths, "RUNS_DIR", folder)
    return folder


def open_page(model_key: str = A_MODEL, **state) -> AppTest:
    return run_page(PAGE, timeout=TIMEOUT, lens_model=model_key, **state)


def card(name: str) -> dict:
    return json.loads((paths.TRAINED_DIR / f"{name}.json").read_text())


def study() -> list[str]:
    """The seed study's variants, best test accuracy first (the overlay's order)."""
    names = [p.stem for p in paths.TRAINED_DIR.glob("study-lenet5-*.json")]
    return sorted(names, key=lambda n: -card(n)["metrics"]["test_accuracy"])


def tensors(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(paths.TRAINED_DIR / f"{name}.safetensors"))


def test_default_overlay_is_the_seed_study_with_its_table() -> None:
    app = open_page()
    assert not app.error
    chosen = app.pills(key="_compare_runs").value
    assert len(study()) == 6
    assert chosen == [f"card:trained/{name}" for name in study()]
    curves = charts(app)["Test accuracy"]
    names = [trace["name"] for trace in curves["data"]]
    assert names == study()
    for trace in curves["data"]:
        history = card(trace["name"])["history"]
        assert list(array(trace["x"])) == [r["epoch"] for r in history]
        np.testing.assert_allclose(
            array(trace["y"]), [100 * r["test_accuracy"] for r in history], rtol=1e-12
        )
    table = app.dataframe[0].value
    assert list(table.index) == names  # one row per chosen card
    assert list(table.columns[:4]) == ["Test acc. (%)", "Model", "Optimizer", "Batch"]
    for name in names:
        assert table.loc[name, "Test acc. (%)"] == round(
            100 * card(name)["metrics"]["test_accuracy"], 2
        )
        assert table.loc[name, "Batch"] == card(name)["training"]["batch_size"]


def test_fewer_runs_and_another_curve() -> None:
    app = open_page()
    keys = ["card:trained/study-lenet5-sgd", "card:trained/lenet5-mnist"]
    app.pills(key="_compare_runs").set_value(keys).run()
    app.selectbox(key="_compare_curve").set_value("train loss").run()
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table.index) == ["study-lenet5-sgd", "lenet5-mnist"]
    # only the columns whose two values differ (sgd against adam, 5 against 8 epochs, …): the
    # settings both share are one line under the table, so the table fits its width
    differ = [c for c in table.columns if str(table[c].iloc[0]) != str(table[c].iloc[1])]
    assert {"Optimizer", "Epochs", "LR"} <= set(differ)
    assert list(table.columns) == differ
    spec = charts(app)["Train loss"]
    for trace in spec["data"]:
        losses = [r["train_loss"] for r in card(trace["name"])["history"]]
        np.testing.assert_allclose(array(trace["y"]), losses, rtol=1e-12)
    caption = " ".join(c.value for c in app.caption)
    assert "The same for all: " in caption
    assert "Dataset **mnist**" in caption


def test_b_is_offered_among_same_shaped_checkpoints_only() -> None:
    app = open_page()
    b = app.selectbox(key="_compare_b")
    lenet5 = [
        ui.checkpoint_key(c.path)
        for c in checkpoints.list_checkpoints(paths.TRAINED_DIR)
        if c.architecture == "lenet5"
    ]
    expected = [k for k in lenet5 if k != A_MODEL]
    assert b.options == [ui.model_label(k) for k in expected]
    assert b.value == "ckpt:trained/study-lenet5-base.safetensors"  # the study's baseline
    # the batch-norm tensors only A has are named, not compared
    assert any("features.bn1" in c.value and "only in A" in c.value for c in app.caption)


def test_weights_and_filters_match_the_files() -> None:
    app = open_page()
    raw_a, raw_b = tensors("study-lenet5-batchnorm"), tensors("study-lenet5-base")
    weights = app.dataframe[1].value
    assert list(weights["Layer"]) == [
        "features.conv1",
        "features.conv2",
        "classifier.fc1",
        "classifier.fc2",
        "classifier.fc3",
    ]
    for _, row in weights.iterrows():
        wa = raw_a[f"{row['Layer']}.weight"].double()
        wb = raw_b[f"{row['Layer']}.weight"].double()
        assert row["‖B − A‖"] == pytest.approx(torch.dist(wa, wb).item(), rel=1e-9)
        cosine = F.cosine_similarity(wa.flatten(), wb.flatten(), dim=0).item()
        assert row["Cosine"] == pytest.approx(cosine, rel=1e-9)
        assert row["Change"] == pytest.approx(100 * torch.dist(wa, wb).item() / wa.norm().item())

    # conv2: the two grids share one colour scale, the max |mean over input channels| of both
    app.selectbox(key="_compare_filter_layer").set_value("features.conv2").run()
    assert not app.exception
    shown = {side: raw["features.conv2.weight"].double().mean(dim=1) for side, raw in
             (("A", raw_a), ("B", raw_b))}  # fmt: skip
    limit = max(shown["A"].abs().max().item(), shown["B"].abs().max().item())
    found = charts(app)
    for side, name in (("A", "study-lenet5-batchnorm"), ("B", "study-lenet5-base")):
        heat = found[f"{side} · {name} · filters of features.conv2"]["data"][0]
        assert heat["zmin"] == pytest.approx(-limit)
        assert heat["zmax"] == pytest.approx(limit)
        expected, _ = figures.tile(shown[side].numpy(), pad=1)
        np.testing.assert_allclose(array(heat["z"]), expected, rtol=1e-12)
    per_filter = app.dataframe[2].value
    a = raw_a["features.conv2.weight"].double().flatten(1)
    b = raw_b["features.conv2.weight"].double().flatten(1)
    np.testing.assert_allclose(
        per_filter["cos(A, B)"], F.cosine_similarity(a, b, dim=1).numpy(), rtol=1e-9
    )


def test_one_image_through_both_models(shared_datasets: Path) -> None:
    app = open_page(compare_image=7)
    split = data.load_split("mnist", "test", data_root=shared_datasets)
    x = (split.images[7:8].float() / 255 - 0.1307) / 0.3081  # MNIST normalization by hand
    found = charts(app)
    for side, name in (("A", "study-lenet5-batchnorm"), ("B", "study-lenet5-base")):
        model = checkpoints.load_checkpoint(paths.TRAINED_DIR / f"{name}.safetensors").model
        with torch.no_grad():
            probabilities = torch.softmax(model(x)[0].double(), dim=0).numpy()
            maps = model.features.conv1(x)[0].numpy()
        bars = found[f"{side} · {name} · prediction"]["data"][0]
        classes = [int(label.split()[0]) for label in bars["y"]]
        np.testing.assert_allclose(array(bars["x"]), 100 * probabilities[classes], atol=1e-4)
        assert classes[0] == int(np.argmax(probabilities))
        heat = found[f"{side} · {name} · maps of features.conv1"]["data"][0]
        custom = array(heat["customdata"])  # channel, y, x, value per mosaic pixel
        values = custom[..., 3][~np.isnan(custom[..., 0])]
        np.testing.assert_allclose(np.sort(values), np.sort(maps.ravel()), atol=1e-4)
    # one colour scale for both: the range of both models' maps
    ranges = {
        (heat["zmin"], heat["zmax"])
        for title, spec in found.items()
        if "maps of" in title
        for heat in spec["data"][:1]
    }
    assert len(ranges) == 1


def test_an_architecture_without_a_partner_says_so() -> None:
    app = open_page("ckpt:trained/course-net-mnist.safetensors")
    assert not app.error
    (info,) = [i.value for i in app.info]
    assert "No other checkpoint is a **course-net**" in info
    assert charts(app)["Test accuracy"]  # the curves above still draw


def test_a_mismatched_pair_gives_a_message(runs_dir: Path) -> None:
    """A LeNet-5 built for CIFAR-10 (3 channels, 32×32) has the same architecture name but
    other shapes: it is never offered as B, and asking for it explains why."""
    info = data.dataset_info("cifar10")
    torch.manual_seed(0)
    model = models.build_model("lenet5", in_channels=3, num_classes=10, input_size=32)
    card = checkpoints.Card(
        name="lenet5-cifar",
        architecture="lenet5",
        model_args={"in_channels": 3, "num_classes": 10, "input_size": 32},
        dataset="cifar10",
        classes=list(info.classes),
    )
    saved = checkpoints.save_checkpoint(model, card, runs_dir / "lenet5-cifar")
    key = ui.checkpoint_key(saved)
    app = open_page(compare_b=key)
    assert ui.model_label(key) not in app.selectbox(key="_compare_b").options
    (warning,) = [w.value for w in app.warning]
    assert "lenet5-cifar cannot stand beside study-lenet5-batchnorm as B" in warning
    assert "features.conv1.weight is 6×1×5×5 in A but 6×3×5×5 in B" in warning
    assert app.selectbox(key="_compare_b").value == "ckpt:trained/study-lenet5-base.safetensors"
    assert not app.error


def test_a_link_picks_b_and_a_wrong_one_is_explained() -> None:
    app = open_page(query={"b": "study-lenet5-sgd"})
    assert app.selectbox(key="_compare_b").value == "ckpt:trained/study-lenet5-sgd.safetensors"
    assert not app.warning

    app = open_page(query={"b": "course-net-mnist"})
    (warning,) = [w.value for w in app.warning]
    assert warning == (
        "trained/course-net-mnist cannot stand beside study-lenet5-batchnorm as B: "
        "it is a course-net, A is a lenet5."
    )
    assert app.selectbox(key="_compare_b").value == "ckpt:trained/study-lenet5-base.safetensors"


def test_this_sessions_run_joins_the_overlay(shared_datasets: Path, one_torch_thread) -> None:
    train = data.take_first(data.load_split("mnist", "train", data_root=shared_datasets), 640)
    test = data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), 320)
    spec = runs.RunSpec("course-net", "mnist", config=training.TrainConfig(epochs=2))
    run = runs.start_run(spec, train, test, label="quick course-net")
    assert run.join(120)
    app = open_page(train_runs=[run])
    key = f"run:{run.id}"
    assert app.pills(key="_compare_runs").value[0] == key  # chosen with the study
    table = app.dataframe[0].value
    assert table.index[0] == f"run {run.id}"
    assert table.loc[f"run {run.id}", "Train images"] == 640
    trace = charts(app)["Test accuracy"]["data"][0]
    assert trace["name"] == f"run {run.id}"
    np.testing.assert_allclose(array(trace["y"]), [100 * e.test_accuracy for e in run.history])
