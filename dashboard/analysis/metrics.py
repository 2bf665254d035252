"""Predictions and the numbers read from them: scikit-learn's confusion matrix and report.

`predict` runs a model over a split once (batched, no autograd, eval mode) and keeps the softmax
probabilities, so every view of the mistakes — the matrix, the report, the images in one cell —
comes from the same arrays without running the model again. It runs a private inference copy of
the model (batch norm folded into the convolution before it, ReLUs in place, channels-last on
the CPU): the same answers as a plain forward pass, up to 6× faster than one in batches of
1,000; the caller's model is never touched.

`cached_predict` keeps the probabilities in the on-disk result cache (`base.cache`), keyed by
the model's content and the split's identity: a checkpoint is classified once per split, ever,
and a restarted server, another session and the command line read the same entry.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dashboard.base import cache
from dashboard.data import Split, iterate_batches, take_first

# progress(done, total) after each batch, and (0, total) before the first; counts are images.
Progress = Callable[[int, int], None]

# Batches of 256 keep a small net's feature maps near the caches: bn-cnn's 10,000 MNIST test
# images go ~2× faster than in batches of 1,000 on the CPU (bench/benchmark.py, section c).
PREDICT_BATCH = 256
MAX_BATCH_VALUES = 4_000_000  # input numbers per batch (float32: 16 MB), for big images
# How far the inference copy's probabilities may stray from the model's own (float rounding of
# the folded batch norm and of the channels-last kernels is ~1e-6); beyond it, predict falls back.
INFERENCE_COPY_ATOL = 1e-5
CHECK_IMAGES = 32  # images run through both the inference copy and the model, to compare


@dataclass(frozen=True)
class Predictions:
    """A model's answers on a split, aligned with the split's images by index."""

    labels: np.ndarray  # (N,) int64 true classes
    predicted: np.ndarray  # (N,) int64 argmax of the probabilities
    probabilities: np.ndarray  # (N, K) float32 softmax
    classes: tuple[str, ...]  # K class names
    source: str  # where the images came from (the split's source), for captions
    # What these answers are of (model content and split identity, see cached_predict): caches
    # of anything computed from them are keyed by it. "" when not known (predict alone).
    key: str = ""

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predicted).mean()) if len(self.labels) else 0.0


@contextlib.contextmanager
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


def _channels_last(model: nn.Module, device: str | torch.device) -> bool:
    """Conv nets on the CPU run faster channels-last (oneDNN's vectorised layout)."""
    return torch.device(device).type == "cpu" and any(
        isinstance(m, nn.Conv2d) for m in model.modules()
    )


# Layers whose output is a fresh tensor (never a view of a tensor another layer reads), so a
# ReLU fed by one of them alone may overwrite it in place.
_FRESH_OUTPUT = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
)  # fmt: skip


def _relu_in_place(graph_module: torch.fx.GraphModule) -> None:
    """ReLU modules overwrite their input when every call of them reads a fresh tensor that
    nothing else reads: no new (B, C, H, W) buffer per batch, whose page faults cost more than
    the ReLU itself (bn-cnn: 0.8 of 1.7 CPU s)."""
    modules = dict(graph_module.named_modules())
    safe: dict[str, bool] = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.ReLU):
            continue
        source = node.args[0]
        fresh = (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], _FRESH_OUTPUT)
            and len(source.users) == 1
        )
        safe[node.target] = safe.get(node.target, True) and fresh
    for name, ok in safe.items():
        if ok:
            modules[name].inplace = True


def inference_copy(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """A copy of the model for fast inference, in eval mode on `device`; the model is untouched.

    torch.fx traces the real data flow, then: batch norm fed by a convolution alone is folded
    into its weights, ReLUs overwrite a fresh input no other layer reads, and conv nets on the
    CPU get channels-last weights. bn-cnn on 10,000 MNIST images: 1.9 → 0.9 CPU s. A model fx
    cannot trace (control flow on values) is only copied (and laid out channels-last)."""
    import torch.fx  # imported when first needed: keeps the app's start-up light
    from torch.fx.experimental.optimization import fuse

    fast = copy.deepcopy(model).eval().to(device)
    with contextlib.suppress(Exception):  # untraceable: the copy as it is still answers
        fast = fuse(fast, inplace=True)
        _relu_in_place(fast)
    if _channels_last(fast, device):
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def _softmax_batches(
    model: nn.Module,
    split: Split,
    batch_size: int,
    device: str | torch.device,
    layout: torch.memory_format,
) -> Iterator[torch.Tensor]:
    """Softmax probabilities per batch, float32 on the CPU, in the split's order."""
    with torch.inference_mode():
        for x, _ in iterate_batches(
            split,
            batch_size,
            shuffle=False,
            generator=None,
            augment=False,
            device=device,
            memory_format=layout,
        ):
            yield torch.softmax(model(x).float(), dim=1).cpu()


def _probabilities(
    model: nn.Module,
    split: Split,
    batch_size: int,
    device: str | torch.device,
    layout: torch.memory_format = torch.contiguous_format,
    progress: Progress | None = None,
) -> torch.Tensor:
    chunks = []
    done = 0
    for chunk in _softmax_batches(model, split, batch_size, device, layout):
        chunks.append(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, len(split))
    return torch.cat(chunks) if chunks else torch.zeros((0, len(split.info.classes)))


def _plain(model: nn.Module, device: str | torch.device) -> nn.Module:
    """The model as it is, in eval mode on `device`: itself when it already is (only read, under
    inference mode), else a copy, so a model in training mode is not switched."""
    if not model.training and all(p.device == torch.device(device) for p in model.parameters()):
        return model
    return copy.deepcopy(model).eval().to(device)


def fast_model(
    model: nn.Module, split: Split, device: str | torch.device
) -> tuple[nn.Module, torch.memory_format]:
    """(model, input layout): the inference copy when it answers like the model itself on the
    split's first images, else the plain model: a model whose forward uses its layers other
    than in the traced order can make predict slower, never wrong."""
    fast = inference_copy(model, device)
    layout = torch.channels_last if _channels_last(fast, device) else torch.contiguous_format
    sample = take_first(split, CHECK_IMAGES)
    plain = _plain(model, device)
    expected = _probabilities(plain, sample, CHECK_IMAGES, device)
    got = _probabilities(fast, sample, CHECK_IMAGES, device, layout)
    agree = got.shape == expected.shape and torch.allclose(
        got, expected, rtol=0, atol=INFERENCE_COPY_ATOL
    )
    return (fast, layout) if agree else (plain, torch.contiguous_format)


def default_batch(split: Split) -> int:
    """PREDICT_BATCH images, fewer when they are big (224-px: 26), so a batch's input stays
    ~16 MB and the feature maps of big models fit in memory."""
    channels, height, width = split.info.input_shape
    return max(1, min(PREDICT_BATCH, MAX_BATCH_VALUES // (channels * height * width)))


def predict(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> Predictions:
    """The model's softmax over every image of the split, in order, in batches of `batch_size`
    (default: `default_batch`). A private inference copy runs (see `inference_copy`): the model
    itself, shared by the app's sessions, is untouched. `progress(done, total)` hears of every
    batch (images done of the split's)."""
    if progress is not None:
        progress(0, len(split))
    fast, layout = fast_model(model, split, device)
    batch = batch_size or default_batch(split)
    probs = _probabilities(fast, split, batch, device, layout, progress).numpy()
    return _answers(split, probs.astype(np.float32, copy=False), key="")


def _answers(split: Split, probabilities: np.ndarray, key: str) -> Predictions:
    return Predictions(
        labels=split.labels.cpu().numpy().astype(np.int64),
        predicted=probabilities.argmax(axis=1).astype(np.int64),
        probabilities=probabilities,
        classes=tuple(split.info.classes),
        source=split.source,
        key=key,
    )


PREDICTIONS_KIND = "predictions"


def prediction_key_parts(model_id: str, split: Split) -> dict:
    """Everything a model's predictions on a split depend on: the model's content
    (`cache.checkpoint_digest` or `cache.state_digest`) and the split's identity."""
    return {"model": model_id, "split": cache.split_identity(split)}


def cached_predict(
    model: nn.Module,
    split: Split,
    model_id: str,
    *,
    persist: bool = True,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> Predictions:
    """`predict`, computed once per (model content, split) and kept in the result cache (on
    disk when `persist`; a model that exists only in this process need not be). `model_id`
    names the model's content; `progress` hears of the batches only when they really run.
    The batch size and device change nothing in the answers, so they are not in the key."""
    parts = prediction_key_parts(model_id, split)

    def compute() -> dict[str, np.ndarray]:
        pred = predict(model, split, batch_size=batch_size, device=device, progress=progress)
        return {"probabilities": pred.probabilities}

    arrays = cache.cached_arrays(PREDICTIONS_KIND, parts, compute, persist=persist)
    key = cache.entry_key(PREDICTIONS_KIND, parts)
    return _answers(split, arrays["probabilities"], key=key)


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
