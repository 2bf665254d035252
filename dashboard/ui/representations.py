"""Cached computations of the Representations page: the layers a model's representations are
read at, and their features for a sample of a split (kept in the result cache by content).
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from dashboard.ui.choices import Selection
from dashboard.ui.loaders import load_data, load_model, loaded_model, model_id, mtime_of
from dashboard.ui.show import progress_bar


@st.cache_resource(max_entries=8, show_spinner="Finding the layers…")
def _representation_layers(model_key: str, mtime: float, input_shape: tuple[int, ...]):
    from dashboard.analysis import representations

    model, _, _ = loaded_model(model_key, mtime)
    return representations.projector_layers(model, input_shape)


def representation_layers(selection: Selection):  # -> (list[representations.Block], str)
    """The selected model's blocks in forward order (plus the last linear layer's input) and
    the projector's default layer; traced once per checkpoint and input shape."""
    _, view = load_model(selection)
    key = selection.model_key
    return _representation_layers(key, mtime_of(key), tuple(view.input_shape))


def layer_features(
    selection: Selection, blocks: Sequence, count: int | None, split: str = "test"
):  # -> (representations.Features, features key)
    """The selected model's features at `blocks` for a seeded sample of `count` images of the
    split (all when None), in one forward pass: computed once per model content, split,
    blocks and images, ever (the result cache); a bar with counts shows while they run."""
    from dashboard.analysis import representations

    model, view = load_model(selection)
    images = load_data(selection, view, split)
    chosen = representations.sample_indices(len(images), count)
    key = representations.features_key(model_id(selection), images, blocks, chosen, False)
    n = len(chosen)
    with progress_bar(f"Reading every layer of {n:,} {split} images") as progress:
        found = representations.cached_features(
            model,
            key["model"],
            images,
            blocks,
            indices=chosen,
            on_progress=lambda fraction, _: progress(round(fraction * n), n),
        )
    return found, key
