"""The Evaluation page under AppTest on the shipped LeNet-5 and real MNIST: every number it shows
— AP and AUC per class, ECE, the temperature, the top losses, the confidence histogram — checked
against scikit-learn or the formula by hand on the model's own test predictions, computed here
by `metrics.predict` without the page's caches; a top loss opening on Activations; choices kept
across pages; bad input as one message."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import average_precision_score, roc_auc_score
from streamlit.testing.v1 import AppTest

from dashboard import data, ui
from dashboard.analysis import metrics
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import open_tab, plotly_specs, run_page
from tests.test_confusion import write_cifar100
from tests.test_page_confusion import array
from tests.test_page_state import SHAPE, holds
from tests.test_session_isolation import image_folder

PAGE = "pages/12_Evaluation.py"
SHIPPED = "ckpt:trained/lenet5-mnist.safetensors"
CHARTS = ("ev_curves", "ev_reliability", "ev_confidence")
BINS = 15


# --------------------------------------------------------------------------- the oracle


@pytest.fixture(scope="module")
def mnist(shared_datasets: Path) -> dict[str, data.Split]:
    return {s: data.load_split("mnist", s, data_root=shared_datasets) for s in ("train", "test")}


def answers(weights: Path, split: data.Split) -> metrics.Predictions:
    """A checkpoint's answers, computed here without the page's caches."""
    return metrics.predict(checkpoints.load_checkpoint(weights).model, split)


@pytest.fixture(scope="module")
def pred(mnist: dict[str, data.Split]) -> metrics.Predictions:
    return answers(REPO_ROOT / "trained" / "lenet5-mnist.safetensors", mnist["test"])


def ece_by_hand(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Guo et al.'s ECE, bin by bin: bin b holds the confidences in (b/15, (b+1)/15]."""
    p = probabilities.astype(np.float64)
    confidence, right = p.max(axis=1), p.argmax(axis=1) == labels
    total = 0.0
    for b in range(BINS):
        inside = (confidence > b / BINS) & (confidence <= (b + 1) / BINS)
        if inside.any():
            gap = abs(right[inside].mean() - confidence[inside].mean())
            total += inside.sum() / len(labels) * gap
    return total


def scaled(probabilities: np.ndarray, temperature: float) -> torch.Tensor:
    """log softmax(log p / T) in float64: log p is the logits up to a constant per row."""
    logp = torch.log(torch.as_tensor(probabilities, dtype=torch.float64).clamp_min(1e-45))
    return torch.log_softmax(logp / temperature, dim=1)


def temperature_by_hand(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the NLL of softmax(logits / T): a bounded scalar search over log T."""
    y = torch.as_tensor(labels)

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.nll_loss(scaled(probabilities, math.exp(log_t)), y))

    return math.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x)


# --------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def page() -> AppTest:
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="mnist")
    assert not app.error, [e.value for e in app.error]
    return app


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def charts(app: AppTest) -> dict[str, dict]:
    return plotly_specs(app, CHARTS)


def percent(text: str) -> float:
    return float(text.removesuffix("%")) / 100


# --------------------------------------------------------------------------- tests


def test_the_headline_numbers_are_the_formulas(page: AppTest, pred: metrics.Predictions) -> None:
    open_tab(page, "ev_tab", "Curves")
    assert metric(page, "Accuracy") == f"{(pred.labels == pred.predicted).mean():.2%}"
    assert metric(page, "Test images") == "10,000"
    assert metric(page, "ECE") == f"{ece_by_hand(pred.probabilities, pred.labels):.2%}"
    p_true = pred.probabilities.astype(np.float64)[np.arange(10_000), pred.labels]
    assert metric(page, "Mean cross-entropy") == f"{-np.log(p_true).mean():.4f}"


def test_ap_and_auc_per_class_are_scikit_learns(page: AppTest, pred: metrics.Predictions) -> None:
    open_tab(page, "ev_tab", "Curves")
    table = page.dataframe[0].value
    assert list(table["Class"]) == list(pred.classes)
    for k in range(10):
        truth, scores = pred.labels == k, pred.probabilities[:, k]
        assert table["Images"][k] == truth.sum()
        assert table["AP"][k] == pytest.approx(average_precision_score(truth, scores), abs=1e-12)
        assert table["ROC AUC"][k] == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    # all classes overlaid: each legend names its class and its AP
    traces = charts(page)["ev_curves"]["data"]
    names = [t["name"] for t in traces[:10]]
    expected = [
        f"{k} (AP {average_precision_score(pred.labels == k, pred.probabilities[:, k]):.4f})"
        for k in range(10)
    ]
    assert names == expected

    # one class's ROC curve: its points are scikit-learn's (thinned for drawing), ends kept
    from sklearn.metrics import roc_curve

    page.button_group(key="_ev_kind").set_value("roc").run()
    page.selectbox(key="_ev_class").set_value(3).run()
    assert not page.exception, page.exception
    truth, scores = pred.labels == 3, pred.probabilities[:, 3]
    fpr, tpr, _ = roc_curve(truth, scores)
    curve, chance = charts(page)["ev_curves"]["data"]
    assert curve["name"] == f"3 (AUC {roc_auc_score(truth, scores):.4f})"
    x, y = array(curve["x"]), array(curve["y"])
    assert (x[0], y[0], x[-1], y[-1]) == (fpr[0], tpr[0], fpr[-1], tpr[-1])
    sklearn_points = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert set(zip(x.tolist(), y.tolist(), strict=True)) <= sklearn_points
    assert chance["name"] == "chance"
    page.button_group(key="_ev_kind").set_value("pr").run()
    page.selectbox(key="_ev_class").set_value(-1).run()


def test_calibration_the_temperature_and_ece_before_and_after(
    page: AppTest, pred: metrics.Predictions
) -> None:
    """The shipped model saw every training image: T is fitted on a random half of the test
    split (seed 0) and measured on the other half, as the page says."""
    open_tab(page, "ev_tab", "Calibration")
    order = np.random.default_rng(0).permutation(10_000)
    fit, held = np.sort(order[:5_000]), np.sort(order[5_000:])
    t = temperature_by_hand(pred.probabilities[fit], pred.labels[fit])
    shown = float(metric(page, "Temperature T"))
    assert shown == pytest.approx(t, abs=6e-4)  # shown with three decimals
    p, y = pred.probabilities[held], pred.labels[held]
    assert metric(page, "ECE before") == f"{ece_by_hand(p, y):.2%}"
    after = torch.exp(scaled(p, t)).numpy()
    assert percent(metric(page, "ECE after")) == pytest.approx(ece_by_hand(after, y), abs=6e-5)
    nll = [float(torch.nn.functional.nll_loss(scaled(p, T), torch.as_tensor(y))) for T in (1, t)]
    assert metric(page, "NLL before") == f"{nll[0]:.4f}"
    assert float(metric(page, "NLL after")) == pytest.approx(nll[1], abs=6e-5)
    assert nll[1] < nll[0]  # temperature scaling lowers the NLL of images it was not fitted on
    caption = next(c.value for c in page.caption if c.value.startswith("T was fitted on"))
    assert "a random half of the test split (5,000 images)" in caption
    assert "the other 5,000 test images" in caption

    # the diagram's bars: accuracy per bin of the held half, before scaling
    spec = charts(page)["ev_reliability"]
    confidence, right = p.max(axis=1).astype(np.float64), p.argmax(axis=1) == y
    bins = np.clip(np.ceil(confidence * BINS).astype(int) - 1, 0, BINS - 1)
    filled = sorted(set(bins.tolist()))
    bars = spec["data"][0]
    np.testing.assert_allclose(array(bars["x"]), (np.array(filled) + 0.5) / BINS)
    np.testing.assert_allclose(array(bars["y"]), [right[bins == b].mean() for b in filled])
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    assert titles[0] == f"Before scaling · ECE {metric(page, 'ECE before')}"
    assert (
        titles[1] == f"After T = {metric(page, 'Temperature T')} · ECE {metric(page, 'ECE after')}"
    )


def test_a_model_that_saw_part_of_the_split_is_scaled_on_the_rest(
    lenet5_mnist_checkpoint: Path, mnist: dict[str, data.Split]
) -> None:
    """The fixture's LeNet-5 learned from the first 8,000 training digits: T is fitted on the
    next 5,000 (classified by the page, once), and measured on every test image."""
    key = f"ckpt:{lenet5_mnist_checkpoint}"
    app = run_page(PAGE, extra=True, lens_model=key, lens_dataset="mnist", ev_tab="Calibration")
    assert not app.error, [e.value for e in app.error]
    test = answers(lenet5_mnist_checkpoint, mnist["test"])
    caption = next(c.value for c in app.caption if c.value.startswith("T was fitted on"))
    if mnist["train"].is_sample:  # a fresh clone: the sample is not the split the model saw
        assert "a random half of the test split" in caption
        return
    end = min(13_000, len(mnist["train"]))  # the shipped sample holds 10,000 training digits
    unseen = data.subset(mnist["train"], torch.arange(8_000, end))
    held = answers(lenet5_mnist_checkpoint, unseen)
    t = temperature_by_hand(held.probabilities, held.labels)
    assert float(metric(app, "Temperature T")) == pytest.approx(t, abs=6e-4)
    assert f"{end - 8_000:,} held-out training images" in caption
    assert "all 10,000 test images" in caption
    assert metric(app, "ECE before") == f"{ece_by_hand(test.probabilities, test.labels):.2%}"
    assert metric(app, "ECE before") == metric(app, "ECE")  # the same images


def losses_by_hand(pred: metrics.Predictions) -> np.ndarray:
    return -np.log(pred.probabilities.astype(np.float64)[np.arange(10_000), pred.labels])


def test_top_losses_are_the_highest_cross_entropies(
    page: AppTest, pred: metrics.Predictions
) -> None:
    open_tab(page, "ev_tab", "Top losses")
    loss = losses_by_hand(pred)
    top = np.argsort(-loss, kind="stable")[:20]
    table = page.dataframe[0].value
    assert list(table["Image"]) == top.tolist()
    np.testing.assert_allclose(table["Loss"], loss[top], rtol=1e-12)
    assert list(table["True"]) == [str(pred.labels[i]) for i in top]
    assert list(table["Predicted"]) == [str(pred.predicted[i]) for i in top]
    np.testing.assert_array_equal(table["p(true)"], pred.probabilities[top, pred.labels[top]])
    best = pred.probabilities[top].max(axis=1)
    np.testing.assert_array_equal(table["p(predicted)"], best)
    buttons = [int(b.label.removeprefix("#")) for b in page.button if b.key.startswith("ev_open_")]
    assert buttons == top.tolist()
    captions = [c.value for c in page.caption if re.match(r"\*\*\d → \d\*\*", c.value)]
    assert len(captions) == 20
    for caption, i in zip(captions, top, strict=True):
        true, guess = pred.labels[i], pred.predicted[i]
        p_true, p_guess = (100 * pred.probabilities[i, k] for k in (true, guess))
        lines = caption.split("  \n")
        assert lines[:2] == [f"**{true} → {guess}**", f"loss {loss[i]:.3f}"]
        for line, k, p in ((lines[2], true, p_true), (lines[3], guess, p_guess)):
            shown = re.fullmatch(rf"p\({k}\) ([\d.e+-]+)%", line)
            assert shown, line
            # two decimals, or two significant digits below 1 %
            assert float(shown[1]) == pytest.approx(p, rel=0.05, abs=0.005), line

    # the confidence histogram: each group's share of its own size per 0.05 of confidence
    spec = charts(page)["ev_confidence"]
    confidence = pred.probabilities.max(axis=1).astype(np.float64)
    right = pred.labels == pred.predicted
    for trace, group in zip(spec["data"], (right, ~right), strict=True):
        counts = np.histogram(confidence[group], np.linspace(0, 1, 21))[0]
        np.testing.assert_allclose(array(trace["y"]), counts / group.sum() * 100)
        assert trace["name"].endswith(f"({group.sum():,})")


def test_a_top_loss_opens_on_activations(pred: metrics.Predictions) -> None:
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="mnist", ev_tab="Top losses")
    index = int(np.argsort(-losses_by_hand(pred), kind="stable")[2])
    app.button(key=f"ev_open_{index}").click().run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Activations"
    assert app.session_state["lens_image_index"] == index
    assert app.number_input(key="_lens_image_index").value == index
    assert app.session_state["lens_model"] == SHIPPED


def test_choices_hold_after_another_page() -> None:
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="mnist")
    changes = [
        ("button_group", "_ev_kind", "roc"),
        ("selectbox", "_ev_class", 7),
    ]
    holds(app, PAGE, changes, away=SHAPE)
    open_tab(app, "ev_tab", "Top losses")
    holds(app, PAGE, [("select_slider", "_ev_top", 40), ("toggle", "_ev_share", False)], SHAPE)
    assert app.session_state["ev_tab"] == "Top losses"
    assert len([b for b in app.button if b.key.startswith("ev_open_")]) == 40


def test_a_link_opens_the_same_view(pred: metrics.Predictions) -> None:
    query = {"view": "Curves", "curve": "roc", "class": "4"}
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="mnist", query=query)
    truth = pred.labels == 4
    (curve, _) = charts(app)["ev_curves"]["data"]
    assert curve["name"] == f"4 (AUC {roc_auc_score(truth, pred.probabilities[:, 4]):.4f})"
    assert {k: app.query_params[k] for k in query} == query
    app.selectbox(key="_ev_class").set_value(-1).run()  # all classes: no class in the link
    assert "class" not in app.query_params
    nonsense = run_page(PAGE, lens_model=SHIPPED, query={"view": "Nope", "class": "10"})
    assert nonsense.session_state["ev_tab"] == "Curves"
    assert nonsense.selectbox(key="_ev_class").value == -1


def test_an_untrained_model_is_evaluated_with_a_warning(mnist: dict[str, data.Split]) -> None:
    """Random weights saw no image: T is fitted on the first 5,000 training images."""
    app = run_page(PAGE, lens_model="arch:lenet5", lens_dataset="mnist", ev_tab="Calibration")
    assert next(w.value for w in app.warning).startswith("**Untrained — random weights.**")
    assert not app.error, [e.value for e in app.error]
    caption = next(c.value for c in app.caption if c.value.startswith("T was fitted on"))
    assert f"{min(5_000, len(mnist['train'])):,} held-out training images" in caption


def test_bad_input_is_one_message(tmp_path: Path, shared_datasets: Path) -> None:
    app = run_page(PAGE, lens_model=SHIPPED, lens_dataset="cifar10")
    accuracy = checkpoints.read_card(REPO_ROOT / SHIPPED.split(":", 1)[1]).metrics["test_accuracy"]
    assert [e.value for e in app.error] == [
        f"lenet5-mnist — {accuracy:.2%} on mnist takes 1-channel images but CIFAR-10 has 3: "
        "pick a dataset with 1-channel images"
    ]
    assert not app.get("plotly_chart")

    # 1,000 ImageNet outputs: refused from the shape flow, before 10,000 images at 224 px load
    app = run_page(PAGE, lens_model="arch:alexnet", lens_dataset="cifar10")
    assert [e.value for e in app.error] == [
        "the model has 1000 outputs but the dataset has 10 classes: pick a dataset with 1000 "
        "classes or a model trained on this one"
    ]

    write_cifar100(tmp_path, per_class=3)
    app = run_page(
        PAGE, lens_model="arch:alexnet-small", lens_dataset="cifar100", lens_data_root=str(tmp_path)
    )
    assert [e.value for e in app.error] == [
        "the model has 10 outputs but the dataset has 100 classes: pick a dataset with 10 "
        "classes or a model trained on this one"
    ]
    assert not app.get("plotly_chart")


def test_a_small_folder_missing_two_classes_in_its_test_split(
    allowed_tmp_path: Path, mnist: dict[str, data.Split]
) -> None:
    """Real digits as PNG files: 20 per class to train on, one each of 0–7 to test (8 and 9
    have no test image, so no curve: their AP and AUC are blank, never a made-up number).
    The folder is another dataset than the card's: every training image is unseen, and T is
    fitted on them."""
    names = [str(k) for k in range(10)]
    train, test = mnist["train"], mnist["test"]
    picked = np.concatenate([np.flatnonzero(train.labels.numpy() == k)[:20] for k in range(10)])
    image_folder(allowed_tmp_path / "digits" / "train", names, train.images[picked, 0].numpy(),
                 train.labels[picked].numpy())  # fmt: skip
    shown = np.array([np.flatnonzero(test.labels.numpy() == k)[0] for k in range(8)])
    folder = image_folder(allowed_tmp_path / "digits" / "test", names,
                          test.images[shown, 0].numpy(), test.labels[shown].numpy())  # fmt: skip
    state = {"lens_dataset": ui.FOLDER_CHOICE, "lens_folder": str(Path(folder).parent)}
    app = run_page(PAGE, lens_model=SHIPPED, **state)
    assert not app.error, [e.value for e in app.error]
    assert metric(app, "Test images") == "8"
    table = app.dataframe[0].value
    assert list(table["Images"]) == [1] * 8 + [0] * 2
    assert table["AP"][8:].isna().all()
    assert table["ROC AUC"][8:].isna().all()
    split = data.load_split(f"folder:{Path(folder).parent}", "test", input_size=28)
    few = answers(REPO_ROOT / "trained" / "lenet5-mnist.safetensors", split)
    for k in range(8):
        truth, scores = few.labels == k, few.probabilities[:, k]
        assert table["AP"][k] == pytest.approx(average_precision_score(truth, scores), abs=1e-12)
        assert table["ROC AUC"][k] == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)

    open_tab(app, "ev_tab", "Calibration")
    caption = next(c.value for c in app.caption if c.value.startswith("T was fitted on"))
    assert "200 held-out training images" in caption
    open_tab(app, "ev_tab", "Top losses")
    assert not app.get("select_slider")  # 8 images: all shown, no slider of one position
    assert len([b for b in app.button if b.key.startswith("ev_open_")]) == 8
