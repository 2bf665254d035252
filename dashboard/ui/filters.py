"""The Filters page's cached work: a conv layer's weights (now or at a saved epoch), the figures
drawn from them, and a test image as the filters see it.

The caches take weights and images unhashed (`_weights`, `_image`) and are keyed by `source`
(model key, modification time, layer, epoch) and the image's place: no megabytes hashed.
cache_resource hands back the same read-only objects: st.cache_data would unpickle each
figure on every rerun, and unpickling a plotly Figure validates it all over again."""

import numpy as np
import streamlit as st
import torch

from dashboard import data, figures
from dashboard.analysis import filters

RESPONSE_PIXELS = 40_000  # response mosaics are thinned beyond this: keeps reruns fast
GRID_SIDE, KERNEL_SIDE = 440, 250  # pixel budgets, so the figures fit their columns
RESPONSE_SIDE = (260, 380)  # classic, learned
THUMBNAIL = 140  # pixels of the input image shown beside the responses


@st.cache_resource(max_entries=64, show_spinner=False)
def weights_of(_model, _history, model_key: str, mtime: float, layer: str, epoch) -> np.ndarray:
    """The layer's weights, now (epoch None) or at a saved epoch of training (read only)."""
    weights = filters.layer_weights(_model, layer, _history, epoch).numpy()
    weights.setflags(write=False)
    return weights


@st.cache_resource(max_entries=64, show_spinner=False)
def grid_figure(_weights: np.ndarray, source: tuple, scale: str, channel: int | None, title: str):
    return figures.filter_grid(
        _weights, scale=scale, channel=channel, title=title, max_side=GRID_SIDE
    )


@st.cache_resource(max_entries=32, show_spinner=False)
def histogram(_weights: np.ndarray, source: tuple, title: str):
    figure = figures.weight_histogram(_weights, title=title)
    return figure, filters.weight_stats(_weights)


@st.cache_resource(max_entries=16, show_spinner=False)
def rgb_figure(_weights: np.ndarray, source: tuple, title: str):
    return figures.rgb_filters(_weights, title=title, max_side=GRID_SIDE)


@st.cache_resource(show_spinner=False)
def classic_figure():
    kernels = filters.classic_kernels()
    return figures.labelled_grid(
        np.stack(list(kernels.values())),
        list(kernels),
        scale="shared",
        values=True,
        title="Classic edge detectors",
        subtitle="Prewitt and Sobel, same colour map (scale ±2)",
        value_name="weight",
        max_side=KERNEL_SIDE,
    )


@st.cache_resource(max_entries=16, show_spinner="Applying the filters to the image…")
def responses(_weights: np.ndarray, source: tuple, _image: np.ndarray, image_key: tuple):
    """Figures of the classic kernels' and the learned filters' responses, and the matches."""
    x = torch.from_numpy(_image)  # (C, H, W) normalized
    matches = filters.classic_matches(_weights)
    classic = figures.labelled_grid(
        filters.classic_responses(x),
        list(filters.classic_kernels()),
        title="Classic kernels",
        subtitle="on the gray image",
        value_name="response",
        max_side=RESPONSE_SIDE[0],
        max_pixels=RESPONSE_PIXELS,
        colorbar=False,
    )
    learned = figures.labelled_grid(
        filters.filter_responses(_weights, x),
        [f"filter {m.filter}" for m in matches],
        title=f"{source[2]} filters",
        subtitle="bias left out · each map scaled by its max |response|",
        value_name="response",
        max_side=RESPONSE_SIDE[1],
        max_pixels=RESPONSE_PIXELS,
    )
    return classic, learned, matches


@st.cache_resource(max_entries=16, show_spinner=False)
def sample_image(_split, split_id: str, index: int, size: int, mean: tuple, std: tuple):
    """(thumbnail, normalized image): test image `index` at the model's size, as the model
    sees it, and enlarged with square pixels to about THUMBNAIL wide for display."""
    pixels = filters.sized_image(_split.images[index], size)  # (C, H, W) uint8
    k = max(1, THUMBNAIL // size)
    shown = pixels.permute(1, 2, 0).numpy().repeat(k, axis=0).repeat(k, axis=1)
    normalized = data.normalize(pixels, mean, std).numpy()
    return (shown[..., 0] if shown.shape[-1] == 1 else shown), normalized
