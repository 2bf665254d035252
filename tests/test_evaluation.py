"""Evaluation from predictions against independent computations, on the shipped LeNet-5's real
answers for MNIST test digits: curves and their scores = scikit-learn's, ECE = the formula by
hand, temperature scaling = softmax(logits / T) and the NLL's minimum, top losses = torch's
cross-entropy sorted; and `python -m dashboard evaluate`'s new numbers the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn import metrics as skm

from dashboard import cli, data
from dashboard.analysis import evaluation
from dashboard.analysis.metrics import Predictions
from dashboard.base.errors import LensError
from dashboard.models import checkpoints

REPO = Path(__file__).resolve().parent.parent
LENET5 = REPO / "trained" / "lenet5-mnist.safetensors"
IMAGES = 600


@pytest.fixture(scope="module")
def answers(shared_datasets: Path) -> tuple[torch.Tensor, Predictions]:
    """(logits, predictions) of the shipped LeNet-5 on the first test digits, by a plain
    forward pass with the card's normalization (not `metrics.predict`)."""
    loaded = checkpoints.load_checkpoint(LENET5)
    split = data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), IMAGES)
    norm = loaded.card.normalization
    x = (split.images.float() / 255 - norm["mean"][0]) / norm["std"][0]
    with torch.no_grad():
        logits = loaded.model.eval()(x).double()
    probabilities = torch.softmax(logits, dim=1).float().numpy()
    pred = Predictions(
        labels=split.labels.numpy().astype(np.int64),
        predicted=probabilities.argmax(axis=1),
        probabilities=probabilities,
        classes=tuple(split.info.classes),
        source="test",
    )
    return logits, pred


def test_curves_and_scores_are_scikit_learns(answers) -> None:
    _, pred = answers
    pr, roc = evaluation.pr_curves(pred), evaluation.roc_curves(pred)
    assert [c.cls for c in pr] == [c.cls for c in roc] == list(range(10))
    for p, r in zip(pr, roc, strict=True):
        truth = pred.labels == p.cls
        scores = pred.probabilities[:, p.cls]
        precision, recall, thresholds = skm.precision_recall_curve(truth, scores)
        np.testing.assert_array_equal(p.y, precision)
        np.testing.assert_array_equal(p.x, recall)
        np.testing.assert_array_equal(p.thresholds, thresholds)
        assert p.score == pytest.approx(skm.average_precision_score(truth, scores), abs=1e-12)
        fpr, tpr, _ = skm.roc_curve(truth, scores)
        np.testing.assert_array_equal(r.x, fpr)
        np.testing.assert_array_equal(r.y, tpr)
        assert r.score == pytest.approx(skm.roc_auc_score(truth, scores), abs=1e-12)
        assert p.positives == r.positives == int(truth.sum())
    scores = evaluation.per_class_scores(pred)
    assert scores["7"]["roc_auc"] == pytest.approx(roc[7].score)
    # A class without images of its own has no curve: NaN, and null in the JSON.
    no_nines = pred.labels != 9
    partial = Predictions(
        pred.labels[no_nines],
        pred.predicted[no_nines],
        pred.probabilities[no_nines],
        pred.classes,
        "test",
    )
    nine = evaluation.roc_curves(partial, [9])[0]
    assert not nine.defined
    assert np.isnan(nine.score)
    assert nine.positives == 0
    assert evaluation.per_class_scores(partial)["9"] == {
        "roc_auc": None,
        "average_precision": None,
    }
    with pytest.raises(LensError, match="out of range"):
        evaluation.pr_curves(pred, [10])


def hand_ece(confidence: list[float], right: list[bool], bins: int = 15) -> float:
    """Σ_b n_b/N · |accuracy_b − confidence_b| over bins (b/bins, (b+1)/bins], by a loop."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0)]
        if inside:
            accuracy = sum(right[i] for i in inside) / len(inside)
            mean_conf = sum(confidence[i] for i in inside) / len(inside)
            total += len(inside) / len(confidence) * abs(accuracy - mean_conf)
    return total


def test_ece_is_the_formula_by_hand() -> None:
    # Three classes, six answers: confidences 0.9, 0.9, 0.6, 0.5, 0.4 (on the edge 6/15),
    # 0.98; right, wrong, right, wrong, right, right.
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.05, 0.9, 0.05],
            [0.2, 0.2, 0.6],
            [0.5, 0.3, 0.2],
            [0.4, 0.3, 0.3],
            [0.01, 0.98, 0.01],
        ]
    )
    labels = np.array([0, 0, 2, 1, 0, 1])
    result = evaluation.reliability(probabilities, labels)
    confidence = probabilities.max(axis=1).tolist()
    right = (probabilities.argmax(axis=1) == labels).tolist()
    # Bins: 0.4 → (5/15, 6/15] = bin 5; 0.5 and 0.6 → bins 7 and 8; 0.9 → 13; 0.98 → 14.
    assert result.counts.tolist() == [0] * 5 + [1, 0, 1, 1, 0, 0, 0, 0, 2, 1]
    expected = (
        1 / 6 * abs(1 - 0.4)
        + 1 / 6 * abs(0 - 0.5)
        + 1 / 6 * abs(1 - 0.6)
        + 2 / 6 * abs(0.5 - 0.9)
        + 1 / 6 * abs(1 - 0.98)
    )
    assert result.ece == pytest.approx(expected, abs=1e-12)
    assert result.ece == pytest.approx(hand_ece(confidence, right), abs=1e-12)
    assert result.accuracy[13] == 0.5
    assert result.confidence[13] == pytest.approx(0.9)
    assert np.isnan(result.accuracy[0])  # an empty bin has no accuracy


def test_ece_of_real_predictions_and_the_confidence_histogram(answers) -> None:
    _, pred = answers
    confidence = pred.probabilities.max(axis=1).astype(np.float64).tolist()
    right = (pred.predicted == pred.labels).tolist()
    ece = evaluation.reliability(pred.probabilities, pred.labels).ece
    assert ece == pytest.approx(hand_ece(confidence, right), abs=1e-12)
    histogram = evaluation.confidence_histogram(pred)
    assert histogram.correct.sum() == sum(right)
    assert histogram.wrong.sum() == len(right) - sum(right)
    top = np.asarray(confidence)
    assert histogram.correct[-1] == int(((top >= 0.95) & np.asarray(right)).sum())


def test_temperature_scaling_is_softmax_of_logits_over_t_and_minimises_the_nll(answers) -> None:
    logits, pred = answers
    # softmax(log p / T) equals softmax(logits / T) (log p differs by a constant per row).
    for t in (0.5, 1.7, 4.0):
        expected = torch.softmax(logits / t, dim=1).numpy()
        np.testing.assert_allclose(
            evaluation.with_temperature(pred.probabilities, t), expected, atol=2e-6
        )
    labels = torch.as_tensor(pred.labels)
    temperature = evaluation.fit_temperature(pred.probabilities, pred.labels)

    def nll(t: float) -> float:  # torch's cross-entropy of the real logits
        return float(F.cross_entropy(logits / t, labels))

    best = minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-6})
    assert temperature == pytest.approx(best.x, rel=1e-3)
    assert nll(temperature) <= nll(1.0)
    # Fitted on one half, measured on the other: the fitting half's NLL goes down.
    calibration = evaluation.calibrate(pred)
    assert calibration.fit_nll_after < calibration.fit_nll_before
    assert len(calibration.evaluated) == IMAGES - IMAGES // 2
    assert "random half" in calibration.fitted_on
    # With held-out images, T is fitted on them and every test image is measured.
    held_out = Predictions(
        pred.labels[:300], pred.predicted[:300], pred.probabilities[:300], pred.classes, "t"
    )
    measured = evaluation.calibrate(pred, held_out)
    assert measured.temperature == pytest.approx(
        evaluation.fit_temperature(held_out.probabilities, held_out.labels)
    )
    assert len(measured.evaluated) == IMAGES
    assert "300 held-out" in measured.fitted_on
    assert measured.fit_nll_after < measured.fit_nll_before
    whole = evaluation.reliability(pred.probabilities, pred.labels)
    assert measured.before.ece == pytest.approx(whole.ece)


def test_held_out_images_are_those_training_never_saw() -> None:
    assert evaluation.held_out_range(60_000, 60_000) == range(0)
    assert evaluation.held_out_range(60_000, None) == range(0)
    assert evaluation.held_out_range(60_000, 8_000) == range(8_000, 13_000)
    assert evaluation.held_out_range(10_000, 8_000) == range(8_000, 10_000)


def test_top_losses_are_torchs_cross_entropy_sorted(answers) -> None:
    logits, pred = answers
    labels = torch.as_tensor(pred.labels)
    by_torch = F.cross_entropy(logits, labels, reduction="none")
    order = torch.argsort(by_torch, descending=True, stable=True)[:20]
    top = evaluation.top_losses(pred)
    assert [t.index for t in top] == order.tolist()
    for t in top:
        assert t.loss == pytest.approx(float(by_torch[t.index]), rel=1e-5, abs=1e-5)
        assert t.true == int(labels[t.index])
        assert t.predicted == int(logits[t.index].argmax())
        p = torch.softmax(logits[t.index], dim=0)
        assert t.true_probability == pytest.approx(float(p[t.true]), abs=1e-6)
        assert t.predicted_probability == pytest.approx(float(p[t.predicted]), abs=1e-6)
    assert top[0].true != top[0].predicted  # the worst loss is a mistake


def test_evaluate_prints_curves_calibration_and_top_losses(
    answers, shared_datasets, capsys
) -> None:
    logits, pred = answers
    argv = ["evaluate", str(LENET5), "--limit", str(IMAGES), "--device", "cpu"]
    assert cli.main([*argv, "--data-root", str(shared_datasets)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["images"] == IMAGES
    for k, name in enumerate(pred.classes):
        truth = pred.labels == k
        scores = pred.probabilities[:, k]
        row = payload["per_class"][name]
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, scores), abs=1e-5)
        assert row["average_precision"] == pytest.approx(
            skm.average_precision_score(truth, scores), abs=1e-5
        )
    confidence = pred.probabilities.max(axis=1).astype(np.float64).tolist()
    right = (pred.predicted == pred.labels).tolist()
    assert payload["ece"] == pytest.approx(hand_ece(confidence, right), abs=1e-6)
    # The shipped model saw the whole training split: T comes from half of the test images.
    assert "random half" in payload["temperature_fitted_on"]
    assert payload["temperature"] > 0
    by_torch = F.cross_entropy(logits, torch.as_tensor(pred.labels), reduction="none")
    worst = torch.argsort(by_torch, descending=True, stable=True)[:20].tolist()
    assert [t["index"] for t in payload["top_losses"]] == worst
    first = payload["top_losses"][0]
    assert first["loss"] == pytest.approx(float(by_torch[worst[0]]), rel=1e-4)
    assert first["true"] == pred.classes[pred.labels[worst[0]]]
    # One image: nothing to fit a temperature on, so null, and the command still answers.
    assert cli.main([*argv[:2], "--limit", "1", "--data-root", str(shared_datasets)]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["temperature"] is None
    assert single["top_losses"][0]["index"] == 0


def test_evaluate_fits_the_temperature_on_training_images_the_model_never_saw(
    shared_datasets, capsys, tmp_path
) -> None:
    # The shipped LeNet-5 with a card saying it saw only the first 50,000 training digits.
    card = json.loads(LENET5.with_suffix(".json").read_text())
    card["training"]["train_images"] = 50_000
    (tmp_path / "partial.json").write_text(json.dumps(card))
    (tmp_path / "partial.safetensors").write_bytes(LENET5.read_bytes())
    argv = ["evaluate", str(tmp_path / "partial.safetensors"), "--limit", "200"]
    assert cli.main([*argv, "--device", "cpu", "--data-root", str(shared_datasets)]) == 0
    payload = json.loads(capsys.readouterr().out)
    train = data.load_split("mnist", "train", data_root=shared_datasets)
    if train.is_sample or len(train) < 55_000:  # the shipped sample: no unseen digit
        assert "random half" in payload["temperature_fitted_on"]
        return
    assert payload["temperature_fitted_on"] == "5,000 held-out training images"
    norm = card["normalization"]
    x = (train.images[50_000:55_000].float() / 255 - norm["mean"][0]) / norm["std"][0]
    with torch.no_grad():
        logits = checkpoints.load_checkpoint(LENET5).model.eval()(x).double()
    labels = train.labels[50_000:55_000]

    def nll(t: float) -> float:
        return float(F.cross_entropy(logits / t, labels))

    best = minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-6})
    assert payload["temperature"] == pytest.approx(best.x, rel=1e-3)


def test_the_figures_draw_the_numbers_computed(answers) -> None:
    from dashboard.figures import evaluation as evaluation_figures

    _, pred = answers
    curves = evaluation.roc_curves(pred)
    fig = evaluation_figures.class_curves(curves, kind="roc")
    drawn = [t for t in fig.data if t.name != "chance"]
    assert len(drawn) == 10
    for trace, curve in zip(drawn, curves, strict=True):
        truth = pred.labels == curve.cls
        fpr, tpr, _ = skm.roc_curve(truth, pred.probabilities[:, curve.cls])
        auc = skm.roc_auc_score(truth, pred.probabilities[:, curve.cls])
        assert trace.name == f"{curve.name} (AUC {auc:.4f})"
        assert len(trace.x) == len(fpr)  # 600 images: every point drawn
        np.testing.assert_array_equal(trace.x, fpr)
        np.testing.assert_array_equal(trace.y, tpr)
    one = evaluation_figures.class_curves(evaluation.pr_curves(pred, [3]), kind="pr")
    share = float((pred.labels == 3).mean())
    assert one.data[-1].y == (share, share)  # the chance line: the class's share of images
    reliability = evaluation.reliability(pred.probabilities, pred.labels)
    bars = evaluation_figures.reliability_diagram(reliability).data[0]
    filled = reliability.counts > 0
    np.testing.assert_array_equal(bars.y, reliability.accuracy[filled])
    hist = evaluation.confidence_histogram(pred)
    right, wrong = evaluation_figures.confidence_histograms(hist, share=False).data
    assert right.name == f"right ({int((pred.predicted == pred.labels).sum()):,})"
    np.testing.assert_array_equal(right.y, hist.correct)
    np.testing.assert_array_equal(wrong.y, hist.wrong)
