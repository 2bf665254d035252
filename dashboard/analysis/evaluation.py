"""How sure the model is, from its predictions: per-class curves, calibration, top losses.

Everything here reads `metrics.Predictions` (true labels and softmax probabilities) and runs no
model, so a page redraws it from cached predictions in milliseconds.

- Precision–recall and ROC curves per class, one class against the rest, from scikit-learn's
  `precision_recall_curve` and `roc_curve`; average precision and the ROC AUC are computed from
  those curves with scikit-learn's own formulas (Σ (Rₙ − Rₙ₋₁)·Pₙ; the trapezoid rule), the
  numbers `average_precision_score` and `roc_auc_score` give, without sorting twice. A class
  with no image (or only images) of its own in the split has no curve: its scores are NaN.
- Calibration (Guo et al. 2017): the reliability diagram and the expected calibration error
  over 15 equal-width confidence bins, bin b holding the confidences in (b/15, (b+1)/15];
  ECE = Σ_b (n_b / N)·|accuracy_b − confidence_b|.
- Temperature scaling divides the logits by one number T fitted by L-BFGS on the negative
  log-likelihood of held-out images. `Predictions` keeps softmax probabilities, not logits;
  log-probabilities serve instead: log softmax(z) = z − logsumexp(z) differs from the logits z
  by one constant per row, which softmax(·/T) ignores, so softmax(log p / T) = softmax(z / T)
  exactly (up to probabilities that underflowed to 0 in float32, clipped at 1e-45).
  The held-out images are training images the model never saw (those after the first
  `train_images` of the card); a model trained on the whole training split (every shipped
  checkpoint) has none, and then T is fitted on a random half of the test split and every
  number "after" is measured on the other half — said in `Calibration.fitted_on` and
  `evaluated_on`.
- Top losses (fastai's ClassificationInterpretation): the images with the highest cross-entropy
  −log p(true class), with the true and predicted class and both probabilities.
- Confidence histograms: the top probability of right and of wrong predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dashboard.analysis.metrics import Predictions
from dashboard.base.errors import LensError

CALIBRATION_BINS = 15
HISTOGRAM_BINS = 20
TOP_LOSSES = 20
HELD_OUT_IMAGES = 5_000  # unseen training images to fit the temperature on (a few hundred do)
TINY = 1e-45  # the smallest float32 (denormal) probability: log(0) is clipped here


# ---------------------------------------------------------------------------------------------
# Per-class curves


@dataclass(frozen=True)
class Curve:
    """One class against the rest: PR (x recall, y precision) or ROC (x FPR, y TPR)."""

    cls: int
    name: str
    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray
    score: float  # average precision (PR) or area under the ROC curve; NaN without a curve
    positives: int  # images of the class
    negatives: int

    @property
    def defined(self) -> bool:
        return self.positives > 0 and self.negatives > 0


def _classes(pred: Predictions, classes: Sequence[int] | None) -> list[int]:
    K = pred.probabilities.shape[1]
    chosen = list(range(K)) if classes is None else [int(k) for k in classes]
    bad = [k for k in chosen if not 0 <= k < K]
    if bad:
        raise LensError(f"class {bad[0]} is out of range: the model has {K} classes")
    return chosen


def _name(pred: Predictions, k: int) -> str:
    return str(pred.classes[k]) if k < len(pred.classes) else str(k)


def _one_vs_rest(
    pred: Predictions,
    classes: Sequence[int] | None,
    curve: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, float]],
) -> list[Curve]:
    """`curve(truth, scores)` → (x, y, thresholds, score) for each class against the rest."""
    out = []
    for k in _classes(pred, classes):
        truth = pred.labels == k
        counts = (int(truth.sum()), int((~truth).sum()))  # positives, negatives
        if 0 in counts:  # no curve: every image is of the class, or none is
            none = np.zeros(0)
            out.append(Curve(k, _name(pred, k), none, none, none, math.nan, *counts))
        else:
            x, y, thresholds, score = curve(truth, pred.probabilities[:, k])
            out.append(Curve(k, _name(pred, k), x, y, thresholds, score, *counts))
    return out


def _pr(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(truth, scores)
    average_precision = float(-np.sum(np.diff(recall) * precision[:-1]))  # sklearn's formula
    return recall, precision, thresholds, average_precision


def _roc(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, thresholds = roc_curve(truth, scores)
    return fpr, tpr, thresholds, float(auc(fpr, tpr))


def pr_curves(pred: Predictions, classes: Sequence[int] | None = None) -> list[Curve]:
    """Precision–recall curve and average precision of each class (all by default)."""
    return _one_vs_rest(pred, classes, _pr)


def roc_curves(pred: Predictions, classes: Sequence[int] | None = None) -> list[Curve]:
    """ROC curve and its area for each class (all by default)."""
    return _one_vs_rest(pred, classes, _roc)


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True)
class Reliability:
    """Accuracy against confidence in equal-width bins, and the expected calibration error."""

    edges: np.ndarray  # (bins + 1,) 0 … 1
    counts: np.ndarray  # (bins,) predictions per bin
    accuracy: np.ndarray  # (bins,) share right; NaN for an empty bin
    confidence: np.ndarray  # (bins,) mean top probability; NaN for an empty bin
    ece: float

    @property
    def gaps(self) -> np.ndarray:
        """confidence − accuracy per bin: > 0 overconfident."""
        return self.confidence - self.accuracy


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> Reliability:
    """The reliability diagram's bins; bin b holds confidences in (edges[b], edges[b+1]]."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise LensError("no predictions to measure calibration on")
    confidence = probabilities.max(axis=1)
    right = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=right, minlength=bins) / counts
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / len(labels) * np.abs(accuracy - mean_conf)[filled]))
    return Reliability(edges, counts, accuracy, mean_conf, ece)


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log p in float64, 0 clipped to TINY: logits up to a constant per row (module docstring)."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), TINY, None))


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    logp = log_probabilities(probabilities)
    return float(-logp[np.arange(len(labels)), labels].mean())


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities after temperature scaling."""
    z = log_probabilities(probabilities) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(log p / T): L-BFGS (SciPy's) on log T, with
    the exact gradient. NumPy rather than torch: a 1-D problem over 10⁵ numbers, where torch's
    thread pool costs 10× the arithmetic on a loaded machine."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    if len(labels) == 0:
        raise LensError("no held-out predictions to fit the temperature on")
    z = log_probabilities(probabilities)
    rows = np.arange(len(labels))
    z_true = z[rows, np.asarray(labels)]

    def nll_and_gradient(log_t: np.ndarray) -> tuple[float, np.ndarray]:
        t = float(np.exp(log_t[0]))
        logp = log_softmax(z / t, axis=1)
        loss = -float(logp[rows, labels].mean())
        # d loss / d log T = mean over images of (z_true − E_softmax[z]) / T
        expected = (np.exp(logp) * z).sum(axis=1)
        return loss, np.array([float(((z_true - expected) / t).mean())])

    result = minimize(nll_and_gradient, np.zeros(1), jac=True, method="L-BFGS-B")
    return float(np.exp(result.x[0]))


@dataclass(frozen=True)
class Calibration:
    """Reliability before and after temperature scaling, on the same images."""

    temperature: float
    before: Reliability
    after: Reliability
    nll_before: float  # on the evaluated images
    nll_after: float
    fit_nll_before: float  # on the images T was fitted on
    fit_nll_after: float
    fitted_on: str  # in words: which images T was fitted on
    evaluated_on: str
    evaluated: np.ndarray  # indices into the test predictions that `before`/`after` measure


def held_out_range(train_size: int, trained_on: int | None, limit: int = HELD_OUT_IMAGES) -> range:
    """Training images the model never saw: those after the first `trained_on` (training takes
    the first N of the split), at most `limit`; empty when it saw them all or nobody knows."""
    if trained_on is None or trained_on >= train_size:
        return range(0)
    return range(trained_on, min(train_size, trained_on + limit))


def calibrate(
    test: Predictions,
    held_out: Predictions | None = None,
    *,
    bins: int = CALIBRATION_BINS,
    seed: int = 0,
) -> Calibration:
    """Temperature scaling fitted on `held_out` (unseen training images) and measured on the
    test predictions; without `held_out`, fitted on a random half of the test predictions and
    measured on the other half."""
    n = len(test.labels)
    if held_out is not None and len(held_out.labels):
        fit_p, fit_y = held_out.probabilities, held_out.labels
        evaluated = np.arange(n)
        fitted_on = f"{len(fit_y):,} held-out training images"
        evaluated_on = f"all {n:,} test images"
    else:
        if n < 2:
            raise LensError("temperature scaling needs at least 2 test images to split")
        order = np.random.default_rng(seed).permutation(n)
        fit_idx, evaluated = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
        fit_p, fit_y = test.probabilities[fit_idx], test.labels[fit_idx]
        fitted_on = (
            f"a random half of the test split ({len(fit_idx):,} images): no training image "
            "is known to be unseen by the model"
        )
        evaluated_on = f"the other {len(evaluated):,} test images"
    temperature = fit_temperature(fit_p, fit_y)
    p, y = test.probabilities[evaluated], test.labels[evaluated]
    scaled = with_temperature(p, temperature)
    return Calibration(
        temperature=temperature,
        before=reliability(p, y, bins),
        after=reliability(scaled, y, bins),
        nll_before=nll(p, y),
        nll_after=nll(scaled, y),
        fit_nll_before=nll(fit_p, fit_y),
        fit_nll_after=nll(with_temperature(fit_p, temperature), fit_y),
        fitted_on=fitted_on,
        evaluated_on=evaluated_on,
        evaluated=evaluated,
    )


# ---------------------------------------------------------------------------------------------
# Losses and confidence


@dataclass(frozen=True)
class Loss:
    """One test image's cross-entropy, with what the model answered."""

    index: int  # in the split
    loss: float  # −log p(true)
    true: int
    predicted: int
    true_probability: float
    predicted_probability: float


def losses(pred: Predictions) -> np.ndarray:
    """(N,) cross-entropy −log p(true class) per image."""
    logp = log_probabilities(pred.probabilities)
    return -logp[np.arange(len(pred.labels)), pred.labels]


def top_losses(pred: Predictions, k: int = TOP_LOSSES) -> list[Loss]:
    """The k images with the highest cross-entropy, highest first (ties in split order)."""
    loss = losses(pred)
    order = np.argsort(-loss, kind="stable")[:k]
    p = pred.probabilities
    return [
        Loss(
            index=int(i),
            loss=float(loss[i]),
            true=int(pred.labels[i]),
            predicted=int(pred.predicted[i]),
            true_probability=float(p[i, pred.labels[i]]),
            predicted_probability=float(p[i, pred.predicted[i]]),
        )
        for i in order
    ]


@dataclass(frozen=True)
class ConfidenceHistogram:
    """How confident right and wrong answers are: counts of the top probability per bin."""

    edges: np.ndarray  # (bins + 1,) 0 … 1
    correct: np.ndarray  # (bins,)
    wrong: np.ndarray  # (bins,)


def confidence_histogram(pred: Predictions, bins: int = HISTOGRAM_BINS) -> ConfidenceHistogram:
    confidence = pred.probabilities.max(axis=1).astype(np.float64)
    right = pred.labels == pred.predicted
    edges = np.linspace(0.0, 1.0, bins + 1)
    return ConfidenceHistogram(
        edges=edges,
        correct=np.histogram(confidence[right], edges)[0],
        wrong=np.histogram(confidence[~right], edges)[0],
    )


# ---------------------------------------------------------------------------------------------
# The command line's numbers


def _number(value: float) -> float | None:
    """NaN (a class without a curve) as JSON null: the JSON stays strict."""
    return None if math.isnan(value) else value


def per_class_scores(pred: Predictions) -> dict[str, dict[str, float | None]]:
    """Class name → ROC AUC and average precision (null for a class without a curve)."""
    roc, pr = roc_curves(pred), pr_curves(pred)
    return {
        r.name: {"roc_auc": _number(r.score), "average_precision": _number(p.score)}
        for r, p in zip(roc, pr, strict=True)
    }


def summary(pred: Predictions, calibration: Calibration | None, *, top: int = TOP_LOSSES) -> dict:
    """What `python -m dashboard evaluate` adds to its JSON (besides `per_class_scores`);
    without a calibration (too few images to fit a temperature on) its numbers are null."""
    return {
        "ece": reliability(pred.probabilities, pred.labels).ece if len(pred.labels) else None,
        "temperature": calibration and calibration.temperature,
        "ece_before_temperature": calibration and calibration.before.ece,  # on the images
        "ece_after_temperature": calibration and calibration.after.ece,  # measured after
        "temperature_fitted_on": calibration and calibration.fitted_on,
        "calibration_measured_on": calibration and calibration.evaluated_on,
        "top_losses": [
            {
                "index": loss.index,
                "loss": loss.loss,
                "true": _name(pred, loss.true),
                "predicted": _name(pred, loss.predicted),
                "true_probability": loss.true_probability,
                "predicted_probability": loss.predicted_probability,
            }
            for loss in top_losses(pred, top)
        ],
    }
