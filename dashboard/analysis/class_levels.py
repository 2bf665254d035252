"""The levels a model's predictions can be read at: the classes as the dataset labels them, or
CIFAR-100's 20 superclasses when a fine or coarse CIFAR-100 model meets either labelling."""

from __future__ import annotations

from dashboard import data
from dashboard.analysis import confusion, metrics

LABELLED, COARSE = "labelled", "coarse"  # the classes as the dataset labels them / superclasses


def levels(pred: metrics.Predictions, dataset: str) -> list[str]:
    """The class levels this model and dataset can be read at."""
    outputs, K = pred.probabilities.shape[1], len(pred.classes)
    found = [LABELLED] if outputs == K else []
    if dataset in confusion.CIFAR100_NAMES and 100 in (outputs, K) and {outputs, K} <= {20, 100}:
        found.append(COARSE)
    return found


def at_level(pred: metrics.Predictions, level: str) -> metrics.Predictions:
    """The predictions read at `level`: folded into superclasses, or as they are (checked to
    have one output per class)."""
    if level == COARSE:
        coarse = data.dataset_info("cifar100-coarse").classes
        return confusion.coarse_predictions(pred, data.cifar100_fine_to_coarse(), coarse)
    confusion.check_outputs(pred)
    return pred
