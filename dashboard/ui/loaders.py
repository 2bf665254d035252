"""Cached loaders: the selected model (cached by its key and files' modification time, never by
object), its shape flow, dataset splits, and predictions (kept on disk by content,
dashboard.base.cache). Everything returned is shared by every session: never modify it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.base.work import seeded
from dashboard.ui.choices import (
    ARCH_PREFIX,
    CKPT_PREFIX,
    ZOO_PREFIX,
    Selection,
    card_for,
    checkpoint_path,
    model_label,
)
from dashboard.ui.data_roots import data_root
from dashboard.ui.show import progress_bar, show_error

if TYPE_CHECKING:  # torch-heavy modules load on first use: the home page paints before them
    from dashboard import data
    from dashboard.analysis import metrics, probe


@dataclass(frozen=True)
class ModelView:
    """What pages need to know about the selected model, apart from the module itself."""

    key: str
    label: str
    architecture: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]  # empty when unknown (untrained architecture: the dataset's)
    dataset: str  # the card's dataset ("" when unknown)
    untrained: bool
    card: object | None  # checkpoints.Card for checkpoints
    warnings: tuple[str, ...] = ()  # one line each: non-finite weights, an invalid card
    # The checkpoint's training dynamics (models.dynamics.DynamicsLog), None when it has none.
    dynamics: object | None = field(default=None, compare=False, repr=False)


def mtime_of(model_key: str) -> float:
    """Latest modification time of a checkpoint choice's weights and card, so caches notice
    either file changing (a card renamed or re-described keeps its weights file as it was)."""
    if not model_key.startswith(CKPT_PREFIX):
        return 0.0  # architectures and zoo models are built the same every time (see loaded_model)
    path = checkpoint_path(model_key)
    times = [p.stat().st_mtime for p in (path, path.with_suffix(".json")) if p.exists()]
    return max(times, default=0.0)


UNTRAINED_SEED = 0  # an untrained architecture's random weights: the same in every session


def _untrained(name: str, pretrained: bool):  # -> nn.Module
    """A registry or zoo model. Random weights are drawn from a fixed seed (the global random
    state untouched), so `arch:NAME` is one model: every session, link, cache entry and
    restarted server sees the same weights, and caches keyed by the choice stay true."""

    from dashboard import models

    with seeded(UNTRAINED_SEED):
        return models.build_model(name, pretrained=pretrained)


@st.cache_resource(max_entries=6, show_spinner="Loading the model…")
def loaded_model(model_key: str, mtime: float) -> tuple[object, ModelView, dict]:
    """(model in eval mode, its view, its filter history). Shared by every session: read only."""
    from dashboard import models

    if model_key.startswith(CKPT_PREFIX):
        from dashboard.models import checkpoints

        loaded = checkpoints.load_checkpoint(checkpoint_path(model_key))
        card = loaded.card
        view = ModelView(
            key=model_key,
            label=model_label(model_key),
            architecture=card.architecture,
            input_shape=tuple(card.input_shape or models.model_info(card.architecture).input_shape),
            classes=tuple(card.classes),
            dataset=card.dataset,
            untrained=False,
            card=card,
            warnings=tuple(loaded.warnings),
            dynamics=loaded.dynamics,
        )
        return loaded.model, view, loaded.filter_history
    pretrained = model_key.startswith(ZOO_PREFIX)
    name = model_key.removeprefix(ZOO_PREFIX if pretrained else ARCH_PREFIX)
    info = models.model_info(name)
    model = _untrained(name, pretrained)
    model.eval()
    view = ModelView(
        model_key, model_label(model_key), name, info.input_shape, (), "", not pretrained, None
    )
    return model, view, {}


def load_model(selection: Selection) -> tuple[object, ModelView]:
    """The selected model (cached, shared: never train or mutate it) and what it is."""
    model, view, _ = loaded_model(selection.model_key, mtime_of(selection.model_key))
    return model, view


def model_or_stop(selection: Selection) -> tuple[object, ModelView]:
    """The selected model, or its one-line reason on the page, which then stops there."""
    try:
        return load_model(selection)
    except LensError as err:
        show_error(err)
        st.stop()
        raise  # st.stop() ends the run; this line is never reached


def model_id(selection: Selection) -> str:
    """The selected model's content, for caches that outlive the process (dashboard.base.cache): a
    checkpoint's weights file and the architecture it is loaded as; another model's tensors."""
    from dashboard.base import cache

    model, view = load_model(selection)
    if selection.is_checkpoint and view.card is not None:
        card = view.card
        return cache.checkpoint_digest(
            checkpoint_path(selection.model_key), card.architecture, card.model_args
        )
    return cache.state_digest(model)


def filter_history(selection: Selection) -> dict:
    """Per-epoch first-layer filter snapshots saved with the checkpoint ({} if none)."""
    return loaded_model(selection.model_key, mtime_of(selection.model_key))[2]


def input_shape_for(selection: Selection) -> tuple[int, int, int]:
    from dashboard import models

    if selection.is_checkpoint:
        card = card_for(selection.model_key)
        if card.problem:  # the card cannot say: the weights do
            return load_model(selection)[1].input_shape
        if card.input_shape:
            return tuple(card.input_shape)  # type: ignore[return-value]
    return models.model_info(selection.architecture).input_shape


@st.cache_data(max_entries=32, show_spinner="Tracing shapes…")
def shape_flow(model_key: str, input_shape: tuple[int, int, int], mtime: float) -> probe.ShapeFlow:
    """Shape flow for a sidebar choice; `mtime` invalidates it when a checkpoint changes."""
    from dashboard.analysis import probe

    model, _, _ = loaded_model(model_key, mtime)
    return probe.shape_flow(model, input_shape)


@st.cache_resource(max_entries=8, show_spinner="Loading the dataset…")
def _split(
    dataset: str, split: str, input_size: int | None, root: str, folder_signature: tuple
) -> data.Split:
    """A split as uint8 tensors in memory; shared by every session, never modified.
    `folder_signature` is part of the key only (see `split_of`)."""
    from dashboard import data

    return data.load_split(dataset, split, data_root=root, input_size=input_size)


def _folder_signature(dataset: str) -> tuple:
    """An image folder's class folders and their modification times (`PATH/<class>` and
    `PATH/{train,test}/<class>`): a class added, removed or renamed, or an image added to or
    removed from a class, gives the folder a new cache key. A few stat calls; the images
    themselves are not listed (one rewritten in place under its name is read after a restart)."""
    if not dataset.startswith("folder:"):
        return ()
    root = Path(dataset.removeprefix("folder:"))
    folders = [root]
    for parent in (root, root / "train", root / "test"):
        with contextlib.suppress(OSError), os.scandir(parent) as entries:
            folders += sorted(Path(e.path) for e in entries if e.is_dir())
    signature = []
    for folder in folders:
        try:
            signature.append((str(folder), folder.stat().st_mtime_ns))
        except OSError:  # missing or unreadable: loading says why
            signature.append((str(folder), -1))
    return tuple(signature)


def split_of(dataset: str, split: str, input_size: int | None, root: str) -> data.Split:
    """The cached split, loaded again when an image folder's classes or files changed."""
    return _split(dataset, split, input_size, root, _folder_signature(dataset))


def model_input_size(selection: Selection, view: ModelView) -> int | None:
    """The side the dataset must be resized to for this model (None: as stored)."""
    from dashboard import data

    info = data.dataset_info(selection.dataset, data_root=data_root())
    channels, height, _ = view.input_shape
    if info.channels != channels:
        raise LensError(
            f"{view.label} takes {channels}-channel images but {info.title} has "
            f"{info.channels}: pick a dataset with {channels}-channel images"
        )
    return None if height == info.size else height


def load_data(selection: Selection, view: ModelView, split: str = "test") -> data.Split:
    """The selected dataset's split, sized for the selected model; mismatches are LensErrors."""
    return split_of(selection.dataset, split, model_input_size(selection, view), data_root())


def dataset_split(dataset: str, split: str, input_size: int | None = None) -> data.Split:
    """A dataset's split at its own size (or resized), cached and shared: never modify it."""
    return split_of(dataset, split, input_size, data_root())


def data_id(split: data.Split) -> str:
    """A split's identity for cache keys: its pixels, labels, size, class names and
    normalization (dashboard.base.cache.split_identity), so two folders, uploads or data roots with
    the same name but other files never share an entry. Computed once per split."""
    from dashboard.base import cache

    return cache.entry_key("split", cache.split_identity(split))


def info_key(info: data.DatasetInfo) -> tuple:
    """What an image prepared for a dataset depends on (its size, channels, class names and
    normalization), for cache keys: a dataset's name alone does not fix them (a folder's
    normalization comes from its images)."""
    return (info.name, info.classes, info.channels, info.size, info.mean, info.std)


def predictions(selection: Selection, split: str = "test") -> metrics.Predictions:
    """The selected model's answers on the selected split: computed once per checkpoint content
    and split, ever, and kept on disk (metrics.cached_predict); a bar with counts shows while
    they are first computed."""
    from dashboard.analysis import metrics

    model, view = load_model(selection)
    images = load_data(selection, view, split)
    with progress_bar(f"Classifying the {split} images of {images.info.title}") as progress:
        return metrics.cached_predict(model, images, model_id(selection), progress=progress)
