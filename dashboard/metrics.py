"""Predictions and the numbers read from them: scikit-learn's confusion matrix and report.

`predict` runs a model over a split once (batched, no autograd, eval mode) and keeps the softmax
probabilities, so every view of the mistakes — the matrix, the report, the images in one cell —
comes from the same arrays without running the model again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dashboard.data import Split, iterate_batches

# Small batches keep activations in cache: 128 evaluates bn-cnn's 10,000 test images ~3× faster
# than 1000 on the CPU (bench/benchmark.py, section c).
PREDICT_BATCH = 128


@dataclass(frozen=True)
class Predictions:
    """A model's answers on a split, aligned with the split's images by index."""

    labels: np.ndarray  # (N,) int64 true classes
    predicted: np.ndarray  # (N,) int64 argmax of the probabilities
    probabilities: np.ndarray  # (N, K) float32 softmax
    classes: tuple[str, ...]  # K class names
    source: str  # where the images came from (the split's source), for captions

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predicted).mean()) if len(self.labels) else 0.0


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd for the block; the model's own mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def logits_in_batches(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = PREDICT_BATCH,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) per batch in the split's order: normalized on the device, eval mode."""
    with evaluating(model):
        for x, y in iterate_batches(
            split, batch_size, shuffle=False, generator=None, augment=False, device=device
        ):
            yield model(x), y  # (B, K), (B,)


def predict(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = PREDICT_BATCH,
    device: str | torch.device = "cpu",
) -> Predictions:
    """The model's softmax over every image of the split, in order."""
    probabilities = [
        torch.softmax(logits.float(), dim=1).cpu()
        for logits, _ in logits_in_batches(model, split, batch_size=batch_size, device=device)
    ]
    classes = tuple(split.info.classes)
    probs = (
        torch.cat(probabilities).numpy()
        if probabilities
        else np.zeros((0, len(classes)), dtype=np.float32)
    )
    return Predictions(
        labels=split.labels.cpu().numpy().astype(np.int64),
        predicted=probs.argmax(axis=1).astype(np.int64),
        probabilities=probs.astype(np.float32, copy=False),
        classes=classes,
        source=split.source,
    )


def confusion(pred: Predictions) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted; every class has its row."""
    from sklearn.metrics import confusion_matrix  # 2 s to import: only when asked for

    return confusion_matrix(pred.labels, pred.predicted, labels=list(range(len(pred.classes))))


def report(pred: Predictions) -> dict:
    """scikit-learn's classification report keyed by class name (plus accuracy and averages)."""
    from sklearn.metrics import classification_report

    return classification_report(
        pred.labels,
        pred.predicted,
        labels=list(range(len(pred.classes))),
        target_names=list(pred.classes),
        output_dict=True,
        zero_division=0,
    )


def top_confusions(
    cm: np.ndarray, classes: tuple[str, ...] | list[str], k: int = 10
) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first.

    Ties keep row-major order (true class, then predicted class); empty cells are left out.
    """
    off = np.array(cm, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    # A stable sort on the negated counts keeps ties in row-major order.
    order = np.argsort(-flat, kind="stable")[:k]
    K = off.shape[1]
    return [(str(classes[i // K]), str(classes[i % K]), int(flat[i])) for i in order if flat[i] > 0]


def misclassified(pred: Predictions) -> np.ndarray:
    """Indices of the images the model got wrong, in split order."""
    return np.flatnonzero(pred.labels != pred.predicted)


def cell_indices(pred: Predictions, true_class: int, predicted_class: int) -> np.ndarray:
    """Indices of the images in one confusion-matrix cell, in split order."""
    return np.flatnonzero((pred.labels == true_class) & (pred.predicted == predicted_class))
