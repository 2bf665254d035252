"""What the confusion-matrix page shows, apart from drawing it.

- class orders that keep a large matrix legible: by name, by recall (worst first), and clustered
  (classes the model mixes up placed next to each other, by average-linkage agglomeration on
  how often two classes are mistaken for each other — no SciPy needed for 100 classes);
- CIFAR-100's superclass view of a fine-label model (predictions and labels mapped with the data
  layer's published table, probabilities summed per superclass);
- two models on the same images: their difference, and the classes whose recall rose or fell;
- the images behind one cell (the gallery), with their true and predicted classes and the
  probabilities the model gave both;
- the per-class report and the matrix as tables (and CSV).

Pure: NumPy and pandas in and out, no Streamlit; the comparison page and the HTML report reuse it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboard.analysis import metrics
from dashboard.base.errors import ShapeError

AS_IS, BY_NAME, BY_RECALL, CLUSTERED = "as is", "by name", "by recall", "clustered"
ORDERS = (AS_IS, BY_NAME, BY_RECALL, CLUSTERED)
CIFAR100_NAMES = ("cifar100", "cifar100-coarse")
MATRIX_CORNER = "true \\ predicted"  # the CSV's top-left cell: rows are true classes


# ---------------------------------------------------------------------------------------------
# Class orders


def recall(cm: np.ndarray) -> np.ndarray:
    """Per-class recall (diagonal over row total); 0 for a class with no images."""
    c = np.asarray(cm, dtype=np.float64)
    support = c.sum(axis=1)
    return np.divide(np.diag(c), support, out=np.zeros(len(c)), where=support > 0)


def _natural_key(name: str) -> list[object]:
    """ "class2" before "class10": digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def order_by_name(classes: Sequence[str]) -> np.ndarray:
    return np.array(sorted(range(len(classes)), key=lambda k: _natural_key(str(classes[k]))))


def order_by_recall(cm: np.ndarray) -> np.ndarray:
    """Worst-recognised classes first; ties keep the class order."""
    return np.argsort(recall(cm), kind="stable")


def confusability(cm: np.ndarray) -> np.ndarray:
    """Symmetric (K, K): the share of class i taken for j plus of j taken for i; diagonal 0."""
    c = np.asarray(cm, dtype=np.float64)
    support = c.sum(axis=1, keepdims=True)
    rates = np.divide(c, support, out=np.zeros_like(c), where=support > 0)
    np.fill_diagonal(rates, 0.0)
    return rates + rates.T


def order_clustered(cm: np.ndarray) -> np.ndarray:
    """Classes the model confuses placed side by side.

    Average-linkage agglomeration on `confusability`: the two most confused groups merge first,
    and each merge joins the two chains end to end in the orientation whose touching ends are
    the most confused pair. Ties resolve to the lower class index, so a matrix without mistakes
    keeps its order."""
    sim = confusability(cm)
    K = len(sim)
    chains: list[list[int]] = [[k] for k in range(K)]
    sizes = np.ones(K)
    link = sim.copy()
    np.fill_diagonal(link, -np.inf)
    active = list(range(K))
    while len(active) > 1:
        sub = link[np.ix_(active, active)]
        r, c = np.unravel_index(int(np.argmax(sub)), sub.shape)
        a, b = active[min(r, c)], active[max(r, c)]
        first, second = chains[a], chains[b]
        joins = [
            first + second,
            first + second[::-1],
            first[::-1] + second,
            first[::-1] + second[::-1],
        ]
        touching = [sim[j[len(first) - 1], j[len(first)]] for j in joins]
        chains[a] = joins[int(np.argmax(touching))]
        merged = (sizes[a] * link[a] + sizes[b] * link[b]) / (sizes[a] + sizes[b])
        link[a], link[:, a] = merged, merged
        link[a, a] = -np.inf
        sizes[a] += sizes[b]
        active.remove(b)
    return np.array(chains[active[0]] if K else [], dtype=np.int64)


def class_order(cm: np.ndarray, classes: Sequence[str], how: str) -> np.ndarray:
    """A permutation of the classes: `order[k]` is the class drawn at position k."""
    if how == AS_IS:
        return np.arange(len(classes))
    if how == BY_NAME:
        return order_by_name(classes)
    if how == BY_RECALL:
        return order_by_recall(cm)
    if how == CLUSTERED:
        return order_clustered(cm)
    raise ValueError(f"unknown class order {how!r}; choose {', '.join(ORDERS)}")


def reorder(cm: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The matrix with rows and columns both permuted: cell (k, l) is (order[k], order[l])."""
    return np.asarray(cm)[np.ix_(order, order)]


# ---------------------------------------------------------------------------------------------
# Predictions that fit, and CIFAR-100's superclasses


def check_outputs(pred: metrics.Predictions) -> None:
    """A model whose outputs are not the dataset's classes cannot make a confusion matrix."""
    check_output_count(pred.probabilities.shape[1], len(pred.classes))


def check_output_count(outputs: int, K: int, dataset: str = "") -> None:
    """The same check before any image is classified (10,000 224-px images take minutes): a
    CIFAR-100 model or dataset may also be read at the other class level (20 or 100)."""
    if outputs != K and not (dataset in CIFAR100_NAMES and {outputs, K} <= {20, 100}):
        raise ShapeError(
            f"the model has {outputs} outputs but the dataset has {K} classes: pick a dataset "
            f"with {outputs} classes or a model trained on this one"
        )


def coarse_predictions(
    pred: metrics.Predictions, fine_to_coarse: Sequence[int], coarse_classes: Sequence[str]
) -> metrics.Predictions:
    """Answers read at the superclass level. Whichever side is fine (the labels of `cifar100`,
    the outputs of a 100-class model) is mapped; the other is kept. A fine prediction counts as
    its superclass, and the superclass's probability is the sum over its members."""
    mapping = np.asarray(fine_to_coarse, dtype=np.int64)
    F, C = len(mapping), len(coarse_classes)
    outputs = pred.probabilities.shape[1]
    if len(pred.classes) not in (F, C) or outputs not in (F, C):
        raise ShapeError(
            f"a superclass view needs {F} fine or {C} coarse classes; got {len(pred.classes)} "
            f"labels and {outputs} model outputs"
        )
    labels = mapping[pred.labels] if len(pred.classes) == F else pred.labels
    if outputs == F:
        predicted = mapping[pred.predicted]
        members = np.zeros((F, C), dtype=np.float32)  # (fine, coarse) one-hot
        members[np.arange(F), mapping] = 1.0
        probabilities = pred.probabilities @ members  # (N, C): summed over each superclass
    else:
        predicted, probabilities = pred.predicted, pred.probabilities
    return metrics.Predictions(
        labels=labels,
        predicted=predicted,
        probabilities=probabilities,
        classes=tuple(coarse_classes),
        source=f"{pred.source}; read as {C} superclasses",
        key=f"{pred.key}:superclasses" if pred.key else "",
    )


# ---------------------------------------------------------------------------------------------
# Cells and their images


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: images of class `true` the model called `predicted`."""

    true: int
    predicted: int
    count: int

    def label(self, classes: Sequence[str]) -> str:
        s = "" if self.count == 1 else "s"
        return f"{classes[self.true]} → {classes[self.predicted]}: {self.count:,} image{s}"


def top_cells(cm: np.ndarray, k: int = 10) -> list[Cell]:
    """The k fullest off-diagonal cells, largest first; ties in row-major order; none empty.
    (`metrics.top_confusions` gives the same cells by name.)"""
    off = np.array(cm, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    K = off.shape[1]
    return [Cell(int(i // K), int(i % K), int(flat[i])) for i in order if flat[i] > 0]


@dataclass(frozen=True)
class GalleryItem:
    """One image in a cell, with what the model made of it."""

    index: int  # into the split
    true: int
    predicted: int
    p_predicted: float  # the probability the model gave its answer
    p_true: float  # the probability it gave the right class

    def caption(self, classes: Sequence[str]) -> str:
        """Two short lines (Markdown): the probability of the answer, then of the truth."""
        answer = f"p({classes[self.predicted]}) = {self.p_predicted:.2f}"
        if self.true == self.predicted:
            return answer
        return f"{answer}  \ntrue p({classes[self.true]}) = {self.p_true:.2f}"


def gallery(pred: metrics.Predictions, true: int, predicted: int) -> list[GalleryItem]:
    """Exactly the images in cell (true, predicted), in split order."""
    indices = metrics.cell_indices(pred, true, predicted)
    p_pred = pred.probabilities[indices, predicted]
    p_true = pred.probabilities[indices, true]
    return [
        GalleryItem(int(i), true, predicted, float(a), float(b))
        for i, a, b in zip(indices, p_pred, p_true, strict=True)
    ]


def page_count(n: int, per_page: int) -> int:
    return max(1, -(-n // per_page))


def page_of(items: Sequence, page: int, per_page: int) -> list:
    """Items of one page (0-based; clamped to the last page)."""
    page = min(max(page, 0), page_count(len(items), per_page) - 1)
    return list(items[page * per_page : (page + 1) * per_page])


def thumbnail(image: np.ndarray, side: int = 112) -> np.ndarray:
    """(C, H, W) uint8 → (h, w) or (h, w, 3), enlarged by a whole factor with square pixels,
    so browsers never blur a 28-pixel digit."""
    a = np.asarray(image)
    pixels = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    scale = max(1, side // max(pixels.shape[:2]))
    return np.ascontiguousarray(pixels.repeat(scale, axis=0).repeat(scale, axis=1))


# ---------------------------------------------------------------------------------------------
# Two models on the same images


def _same_images(cm_a: np.ndarray, cm_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(cm_a, dtype=np.int64), np.asarray(cm_b, dtype=np.int64)
    if a.shape != b.shape or not np.array_equal(a.sum(axis=1), b.sum(axis=1)):
        raise ShapeError(
            "the two confusion matrices do not count the same images: compare two models "
            "on the same dataset and split"
        )
    return a, b


def difference(cm_a: np.ndarray, cm_b: np.ndarray) -> np.ndarray:
    """B − A, cell by cell (int64)."""
    a, b = _same_images(cm_a, cm_b)
    return b - a


def improvement(diff: np.ndarray) -> np.ndarray:
    """The difference signed so that positive is better: more on the diagonal, fewer off it."""
    better = -np.asarray(diff)
    np.fill_diagonal(better, np.diag(diff))
    return better


@dataclass(frozen=True)
class RecallChange:
    index: int
    name: str
    recall_a: float
    recall_b: float
    support: int  # images of this class (the same for both models)

    @property
    def delta(self) -> float:
        return self.recall_b - self.recall_a

    @property
    def images(self) -> int:
        """Images of this class B gets right that A did not (net)."""
        return round(self.delta * self.support)


def recall_changes(
    cm_a: np.ndarray, cm_b: np.ndarray, classes: Sequence[str]
) -> list[RecallChange]:
    """Every class's recall under A and B, largest gain first (ties by class index)."""
    a, b = _same_images(cm_a, cm_b)
    ra, rb, support = recall(a), recall(b), a.sum(axis=1)
    order = sorted(range(len(classes)), key=lambda k: (-(rb[k] - ra[k]), k))
    return [
        RecallChange(k, str(classes[k]), float(ra[k]), float(rb[k]), int(support[k])) for k in order
    ]


def improved(changes: Sequence[RecallChange]) -> list[RecallChange]:
    """Classes B recognises better than A, largest gain first."""
    return [c for c in changes if c.delta > 0]


def got_worse(changes: Sequence[RecallChange]) -> list[RecallChange]:
    """Classes B recognises worse than A, largest loss first."""
    return sorted((c for c in changes if c.delta < 0), key=lambda c: (c.delta, c.index))


def changes_table(changes: Sequence[RecallChange]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Class": [c.name for c in changes],
            "Recall A": [c.recall_a for c in changes],
            "Recall B": [c.recall_b for c in changes],
            "Δ recall (points)": [100 * c.delta for c in changes],
            "Δ images": [c.images for c in changes],
            "Support": [c.support for c in changes],
        }
    )


# ---------------------------------------------------------------------------------------------
# Tables


def report_table(
    report: dict, classes: Sequence[str], *, order: np.ndarray | None = None, averages: bool = False
) -> pd.DataFrame:
    """scikit-learn's report (`metrics.report`) as rows: class, precision, recall, F1, support;
    in `order` when given; with the macro and weighted averages appended when asked."""
    names = [str(classes[k]) for k in (range(len(classes)) if order is None else order)]
    if averages:
        names += ["macro avg", "weighted avg"]
    return pd.DataFrame(
        {
            "Class": names,
            "Precision": [report[n]["precision"] for n in names],
            "Recall": [report[n]["recall"] for n in names],
            "F1": [report[n]["f1-score"] for n in names],
            "Support": [int(report[n]["support"]) for n in names],
        }
    )


def matrix_table(cm: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Rows = true class, columns = predicted class, labelled with the class names."""
    names = [str(c) for c in classes]
    frame = pd.DataFrame(np.asarray(cm), index=names, columns=names)
    frame.index.name = MATRIX_CORNER
    return frame


def matrix_csv(cm: np.ndarray, classes: Sequence[str]) -> str:
    return matrix_table(cm, classes).to_csv()


def report_csv(report: dict, classes: Sequence[str]) -> str:
    table = report_table(report, classes, averages=True)
    accuracy = pd.DataFrame(
        {"Class": ["accuracy"], "F1": [report["accuracy"]], "Support": [table["Support"].iloc[-1]]}
    )
    return pd.concat([table, accuracy], ignore_index=True).to_csv(index=False)
