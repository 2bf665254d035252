"""The Attribution page under AppTest with the shipped LeNet-5: the maps it draws, the sanity
check's correlations and the faithfulness table are checked against computations made here
(autograd, a cascade re-initialized by hand with scipy's Spearman, `faithfulness` run again);
the class to explain can be chosen, the choices survive a visit to another page, and bad input
is one message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from streamlit.testing.v1 import AppTest
from torch import nn

from dashboard import data, models, ui
from dashboard.analysis import attribution, faithfulness, probe
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import plotly_specs, run_page
from tests.test_gradcam import hand_grad_cam

PAGE = "pages/11_Attribution.py"
SHIPPED = "ckpt:trained/lenet5-mnist.safetensors"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CHARTS = ("attr_methods", "attr_faith_table", "attr_faith_curves", "attr_sanity_lines")
SIDE = 28


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return checkpoints.load_checkpoint(REPO_ROOT / "trained" / "lenet5-mnist.safetensors").model


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets)


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A result cache of the test's own: kept curves from another test do not leak in."""
    monkeypatch.setenv("CNN_LENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def open_page(**state) -> AppTest:
    app = run_page(PAGE, **{"lens_model": SHIPPED, "lens_dataset": "mnist", **state})
    assert not app.error, [e.value for e in app.error]
    return app


def rerun(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app


def open_tab(app: AppTest, tab: str) -> AppTest:
    app.session_state["attr_tab"] = tab
    return rerun(app)


def image_tensor(split: data.Split, index: int) -> torch.Tensor:
    """The test image normalized by hand: (x / 255 − 0.1307) / 0.3081."""
    return ((split.images[index : index + 1].float() / 255) - MNIST_MEAN) / MNIST_STD


def input_gradient(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """d logit[target] / d x by one plain autograd call: (H, W)."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[0, target], x)
    return grad[0, 0].numpy()


def shown_maps(app: AppTest) -> list[np.ndarray]:
    """The side-by-side figure's maps, cut from its per-pixel hover layer, left to right."""
    from tests.test_page_activations import array

    spec = plotly_specs(app, CHARTS)["attr_methods"]
    z = array(next(t for t in spec["data"] if t["type"] == "heatmap")["z"])
    columns = np.flatnonzero(~np.isnan(z[0]))
    starts = [int(c) for c in columns if c == 0 or np.isnan(z[0, c - 1])]
    return [z[:SIDE, s : s + SIDE] for s in starts]


def facts(app: AppTest):
    table = app.dataframe[0].value
    return table.set_index("Method")


def click(app: AppTest, label: str) -> AppTest:
    next(b for b in app.button if b.label == label).click()
    return rerun(app)


def finished(app: AppTest, job_key: str) -> AppTest:
    """Wait for the page's check to end, then draw the page as its fragment would."""
    app.session_state[job_key].thread.join(600)
    return rerun(app)


def test_saliency_shown_is_the_input_gradient_and_ig_adds_up(
    model: nn.Module, mnist_test: data.Split
) -> None:
    app = open_page(lens_image_index=3)
    x = image_tensor(mnist_test, 3)
    with torch.no_grad():
        logits = model(x)[0]
    predicted = int(logits.argmax())
    assert app.selectbox(key="_attr_target").value == predicted  # the predicted class first
    maps = shown_maps(app)
    assert len(maps) == len(attribution.METHODS)
    gradient = input_gradient(model, x, predicted)
    np.testing.assert_allclose(maps[0], gradient, rtol=1e-5, atol=1e-7)  # signed by default
    raw = hand_grad_cam(model, x, "features.relu2", predicted)  # hooks by hand, no Captum
    cam = F.interpolate(raw[None, None], tuple(x.shape[-2:]), mode="bilinear")[0, 0].numpy()
    np.testing.assert_allclose(maps[4], cam, rtol=1e-4, atol=1e-5 * float(cam.max()))

    table = facts(app)
    assert list(table.index) == [attribution.TITLES[m] for m in attribution.METHODS]
    ig = table.loc["Integrated Gradients"]
    assert ig["Logit"] == pytest.approx(float(logits[predicted]), abs=1e-4)
    black = torch.full_like(x, -MNIST_MEAN / MNIST_STD)  # pixel value 0, normalized
    with torch.no_grad():
        assert ig["Baseline logit"] == pytest.approx(float(model(black)[0, predicted]), abs=1e-4)
    gap = ig["Logit"] - ig["Baseline logit"]
    assert ig["Σ attributions"] - gap == pytest.approx(ig["Convergence delta"], abs=1e-4)
    assert abs(ig["Convergence delta"]) < 0.01 * abs(gap)  # completeness within 1 %
    assert table.loc["Saliency", "Σ attributions"] == pytest.approx(gradient.sum(), rel=1e-4)

    app.segmented_control(key="_attr_sign").set_value("absolute")
    rerun(app)
    np.testing.assert_allclose(shown_maps(app)[0], np.abs(gradient), rtol=1e-5, atol=1e-7)


def test_any_class_can_be_explained(model: nn.Module, mnist_test: data.Split) -> None:
    app = open_page(lens_image_index=0)
    x = image_tensor(mnist_test, 0)
    predicted = int(model(x)[0].argmax())
    other = (predicted + 3) % 10
    labels = app.selectbox(key="_attr_target").options
    assert labels[predicted].endswith("— predicted")
    app.selectbox(key="_attr_target").set_value(other)
    rerun(app)
    np.testing.assert_allclose(shown_maps(app)[0], input_gradient(model, x, other), atol=1e-7)
    assert app.session_state["attr_target"] == other
    app.number_input(key="_lens_image_index").set_value(1)  # a new image: its prediction
    rerun(app)
    assert app.session_state["attr_target"] == int(model(image_tensor(mnist_test, 1))[0].argmax())


def reinitialized_cascade(model: nn.Module, x: torch.Tensor, target: int) -> list[np.ndarray]:
    """|saliency| of `target` after each step of a cascade done here: the parametrized layers
    from the output back, each reset with PyTorch's initializer from seed = its step."""
    import copy

    own = copy.deepcopy(model).eval()
    order = ["features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2"]
    order.append("classifier.fc3")
    modules = dict(own.named_modules())
    maps = [np.abs(input_gradient(own, x, target))]
    for step, name in enumerate(reversed(order), start=1):
        torch.manual_seed(step)
        modules[name].reset_parameters()
        maps.append(np.abs(input_gradient(own, x, target)))
    return maps


def test_sanity_check_correlations_are_scipys(model: nn.Module, mnist_test: data.Split) -> None:
    app = open_tab(open_page(lens_image_index=7), "Sanity check")
    app.multiselect(key="_attr_sanity_methods").set_value(["saliency", "grad-cam"])
    rerun(app)
    finished(click(app, "Run the sanity check"), "attr_sanity_job")
    table = app.dataframe[0].value.set_index("Re-initialized down to")
    layers = ["original", "classifier.fc3", "classifier.fc2", "classifier.fc1"]
    layers += ["features.conv2", "features.conv1"]
    assert list(table.index) == layers
    assert list(table.columns) == ["Predicts", "Saliency", "Grad-CAM"]
    x = image_tensor(mnist_test, 7)
    target = int(model(x)[0].argmax())
    maps = reinitialized_cascade(model, x, target)
    expected = [spearmanr(maps[0].ravel(), m.ravel()).statistic for m in maps]
    np.testing.assert_allclose(table["Saliency"].to_numpy(), expected, atol=1e-6)
    assert table.loc["original", "Predicts"] == str(target)
    assert torch.equal(  # the shared model was left as it was
        model.features.conv1.weight,
        checkpoints.load_checkpoint(SHIPPED.removeprefix("ckpt:")).model.features.conv1.weight,
    )
    check = app.session_state["attr_sanity_job"].result
    cams = [step.maps["grad-cam"].signed for step in check.steps]
    for layer, cam in zip(layers[1:], cams[1:], strict=True):
        flat = np.ptp(cam) == 0  # a map zeroed by Grad-CAM's ReLU shares no ranking: 0
        rho = 0.0 if flat else spearmanr(cams[0].ravel(), cam.ravel()).statistic
        assert table.loc[layer, "Grad-CAM"] == pytest.approx(rho, abs=1e-6)
    words = " ".join(m.value for m in [*app.success, *app.warning])
    for method, final in (("Saliency", expected[-1]), ("Grad-CAM", table.iloc[-1, -1])):
        assert f"{method} (ρ {final:.2f})" in words or f"**{method}** barely changes" in words

    app.switch_page("pages/5_Activations.py")  # away and back: the result is still shown
    rerun(app)
    app.switch_page(PAGE)
    rerun(app)
    assert app.dataframe[0].value.set_index("Re-initialized down to").equals(table)


def auc_cells(app: AppTest) -> dict[str, tuple[str, str]]:
    cells = plotly_specs(app, CHARTS)["attr_faith_table"]["data"][0]["cells"]["values"]
    return {m: (d, i) for m, d, i in zip(cells[0], cells[1], cells[2], strict=True)}


def test_faithfulness_table_is_faithfulness_recomputed_and_kept(
    model: nn.Module, mnist_test: data.Split, private_cache: Path
) -> None:
    app = open_tab(open_page(), "Faithfulness")
    assert app.number_input(key="_attr_faith_images").value == 100  # the default
    app.number_input(key="_attr_faith_images").set_value(20)
    rerun(app)
    finished(click(app, "Measure faithfulness"), "attr_faith_job")
    shown = auc_cells(app)
    again = faithfulness.faithfulness(model, mnist_test, attribution.METHODS, images=20)
    deletion, insertion = again.deletion_auc, again.insertion_auc
    for method in again.methods:
        cell_deletion, cell_insertion = shown[faithfulness.title(method)]
        assert float(re.sub("<[^>]+>", "", cell_deletion)) == pytest.approx(
            deletion[method], abs=6e-5
        )
        assert float(re.sub("<[^>]+>", "", cell_insertion)) == pytest.approx(
            insertion[method], abs=6e-5
        )
    real = attribution.METHODS
    best = faithfulness.title(min(real, key=deletion.get))
    assert shown[best][0].startswith("<b>")  # the most faithful by deletion, in bold
    assert sum(cell[0].startswith("<b>") for cell in shown.values()) == 1
    verdict = next(m.value for m in app.markdown if m.value.startswith("Most faithful"))
    assert f"**{best}**" in verdict
    assert f"by deletion (area {deletion[min(real, key=deletion.get)]:.4f}, the lowest)" in verdict

    later = open_tab(open_page(), "Faithfulness")  # another session: read from the cache
    later.number_input(key="_attr_faith_images").set_value(20)
    rerun(later)
    assert any(b.label == "Run again" for b in later.button)
    assert auc_cells(later) == shown


def test_stop_ends_faithfulness_with_the_images_done(private_cache: Path) -> None:
    app = open_tab(open_page(), "Faithfulness")
    app.number_input(key="_attr_faith_images").set_value(5000)
    rerun(app)
    click(app, "Measure faithfulness")
    job = app.session_state["attr_faith_job"]
    while job.running and job.done < 10:
        job.thread.join(0.2)
    click(app, "Stop")
    finished(app, "attr_faith_job")
    stopped = next(w.value for w in app.warning if w.value.startswith("Stopped after"))
    done = int(re.match(r"Stopped after ([\d,]+) images", stopped).group(1).replace(",", ""))
    assert 10 <= done < 5000
    assert job.result.images == done
    assert any(b.label == "Measure faithfulness" for b in app.button)  # nothing was kept


def test_choices_survive_a_visit_to_another_page() -> None:
    app = open_page(lens_image_index=12)
    app.selectbox(key="_attr_target").set_value(4)
    app.segmented_control(key="_attr_sign").set_value("absolute")
    app.slider(key="_attr_opacity").set_value(0.4)
    app.selectbox(key="_attr_baseline").set_value("blur")
    app.selectbox(key="_attr_smooth_over").set_value("integrated-gradients")
    rerun(app)
    app.session_state["attr_tab"] = "Sanity check"
    rerun(app)
    app.switch_page("pages/5_Activations.py")
    rerun(app)
    assert app.number_input(key="_lens_image_index").value == 12  # the same image there
    app.switch_page(PAGE)
    rerun(app)
    assert app.number_input(key="_lens_image_index").value == 12
    assert app.selectbox(key="_attr_target").value == 4
    assert app.segmented_control(key="_attr_sign").value == "absolute"
    assert app.slider(key="_attr_opacity").value == pytest.approx(0.4)
    assert app.selectbox(key="_attr_baseline").value == "blur"
    assert app.selectbox(key="_attr_smooth_over").value == "integrated-gradients"
    assert app.session_state["attr_tab"] == "Sanity check"


def test_a_dataset_that_does_not_fit_is_one_message() -> None:
    app = open_page(lens_dataset="cifar10")
    assert not app.exception
    said = [i.value for i in app.info]
    assert any("The test images do not fit this model" in s for s in said), said
    assert any("lenet5-mnist" in s and "CIFAR-10 has 3" in s for s in said), said
    assert "test image" not in app.radio(key="_lens_input_source").options
    assert any(s.startswith("Upload an image") for s in said)  # uploads and drawings work


def test_an_untrained_model_is_labelled(mnist_test: data.Split) -> None:
    app = run_page(PAGE, lens_model="arch:lenet5", lens_dataset="mnist")
    assert not app.error, [e.value for e in app.error]
    assert any("Untrained — random weights" in w.value for w in app.warning)
    assert len(shown_maps(app)) == len(attribution.METHODS)
    with torch.random.fork_rng(devices=[]):  # the app's untrained LeNet-5: seed 0
        torch.manual_seed(0)
        untrained = models.build_model("lenet5").eval()
    x = image_tensor(mnist_test, 0)
    assert app.selectbox(key="_attr_target").value == int(untrained(x)[0].argmax())
    # An empty Grad-CAM (nothing at the layer speaks for the class) is said under its map.
    for target in range(10):
        app.selectbox(key="_attr_target").set_value(target)
        rerun(app)
        spec = plotly_specs(app, CHARTS)["attr_methods"]
        texts = [t["text"] for t in spec["data"] if t.get("mode") == "text"]
        notes = texts[0] if texts else [""] * len(attribution.METHODS)
        empty = attribution.grad_cam(untrained, x, "features.relu2", target).empty
        shown = notes[attribution.METHODS.index("grad-cam")] == "empty: no evidence"
        assert shown == empty, target
    assert attribution.grad_cam(untrained, x, "features.relu2", 0).empty  # the case is met


def mlp(in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """A classifier without a conv layer: flatten → 32 → ReLU → classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * input_size**2, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )


def test_a_model_without_conv_layers_has_no_grad_cam(
    model: nn.Module, mnist_test: data.Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An architecture with no conv layer (registered for this test only): one message, and
    the four methods that need none, the saliency still the input gradient."""
    entry = models._entry(mlp, "mlp", "flatten → fc 32 → fc 10", (1, 28, 28), 10, "a test", "")
    monkeypatch.setitem(models._REGISTRY, "mlp", entry)
    app = run_page(
        PAGE, extra=True, lens_model="arch:mlp", lens_dataset="mnist", lens_image_index=5
    )
    assert not app.error, [e.value for e in app.error]
    said = [i.value for i in app.info]
    assert sum("has no convolutional layer" in s for s in said) == 1, said
    maps = shown_maps(app)
    assert len(maps) == 4
    with torch.random.fork_rng(devices=[]):  # the app's untrained architecture: seed 0
        torch.manual_seed(0)
        untrained = models.build_model("mlp").eval()
    x = image_tensor(mnist_test, 5)
    target = int(untrained(x)[0].argmax())
    np.testing.assert_allclose(maps[0], input_gradient(untrained, x, target), rtol=1e-5, atol=1e-8)
    assert list(facts(app).index) == [
        "Saliency", "Integrated Gradients", "SmoothGrad", "Occlusion"
    ]  # fmt: skip
    lenet = checkpoints.load_checkpoint(REPO_ROOT / "trained" / "lenet5-mnist.safetensors").model
    assert ui.attribution_methods(probe.shape_flow(lenet, (1, 28, 28))) == (
        attribution.METHODS,
        "features.relu2",
    )
