"""What the Channels page shows, without Streamlit: which layers have a channel atlas, the
layer's atlas over the first images of a split and its feature visualizations (both kept in the
result cache, `base.cache`, by the model's content, the images and the parameters), and the
pictures made from them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from dashboard import data
from dashboard.analysis import atlas, feature_vis, probe
from dashboard.base import cache

ATLAS_KIND, VISUALIZATION_KIND = "atlas", "feature-vis"
DEFAULT_IMAGES = 2000  # images in the atlas: about a second for LeNet-5 on a CPU …
ATLAS_MULT_ADDS = 5e10  # … or fewer, so a big model's first atlas takes seconds, not minutes
MIN_IMAGES = 100
VIS_STEPS = 64  # feature visualization steps: readable images in a few seconds for LeNet-5
VIS_SECONDS_PER_STEP_CHANNEL = 0.008  # measured for lenet5's conv2 on a busy 2-core CPU
TILE_SIDE = 48  # pixels of each channel's picture in the layer's tiles

Progress = Callable[[int, int], None]


def layer_kinds(model: nn.Module, flow: probe.ShapeFlow) -> dict[str, str]:
    """Every layer with a channel atlas ("conv", "activation", "pooling"), in forward order."""
    modules = dict(model.named_modules())
    return {
        key: atlas.layer_kind(modules[probe._parse_key(key)[0]])
        for key in atlas.atlas_layers(model, flow)
    }


def default_layer(kinds: dict[str, str]) -> str:
    """The last conv layer (its channels are the most meaningful), else the last layer."""
    convs = [key for key, kind in kinds.items() if kind == "conv"]
    return (convs or list(kinds))[-1]


def default_images(mult_adds: int, available: int) -> int:
    """How many test images the atlas reads unless the user asks for more: 2,000, fewer for a
    model whose forward pass is costly (`mult_adds` per image), at least 100."""
    affordable = max(MIN_IMAGES, int(ATLAS_MULT_ADDS // max(mult_adds, 1)))
    return min(available, DEFAULT_IMAGES, affordable)


def unfit_reason(
    model_label: str,
    input_shape: tuple[int, ...],
    outputs: int,
    info: data.DatasetInfo,
) -> str:
    """Why the dataset's images cannot be read by the model ("" when they can)."""
    if info.channels != input_shape[0]:
        return (
            f"{model_label} takes {input_shape[0]}-channel images, {info.title} has {info.channels}"
        )
    if outputs != info.num_classes:
        return f"{model_label} has {outputs:,} outputs, {info.title} {info.num_classes} classes"
    return ""


def layer_atlas(
    model: nn.Module,
    split: data.Split,
    layer: str,
    model_id: str,
    progress: Progress | None = None,
) -> atlas.ChannelAtlas:
    """The atlas of `layer` over `split` (top examples and the most negative ones), computed
    once per model content, split and layer and kept on disk."""
    parts = {"model": model_id, "split": cache.split_identity(split), "layer": layer}
    parts |= {"top": atlas.DEFAULT_TOP, "bins": atlas.HISTOGRAM_BINS, "negatives": True}

    def compute() -> dict[str, np.ndarray]:
        result = atlas.compute_atlas(model, split, layer, progress=progress)
        return result.to_arrays()

    return atlas.ChannelAtlas.from_arrays(cache.cached_arrays(ATLAS_KIND, parts, compute))


def _visualization_parts(
    model_id: str, layer: str, info: data.DatasetInfo, settings: feature_vis.VisSettings
) -> dict:
    shape = list(info.input_shape)
    return {"model": model_id, "layer": layer, "input": shape, "mean": list(info.mean),
            "std": list(info.std), "steps": settings.steps, "seed": settings.seed}  # fmt: skip


def visualization_stored(
    model_id: str, layer: str, info: data.DatasetInfo, settings: feature_vis.VisSettings
) -> bool:
    return cache.is_stored(
        VISUALIZATION_KIND, _visualization_parts(model_id, layer, info, settings)
    )


def visualizations(
    model: nn.Module,
    layer: str,
    info: data.DatasetInfo,
    model_id: str,
    settings: feature_vis.VisSettings,
    progress: Progress | None = None,
) -> feature_vis.FeatureVisualization:
    """Every channel's feature visualization, computed once per model content, layer and
    settings and kept on disk."""

    def compute() -> dict[str, np.ndarray]:
        return feature_vis.visualize_channels(
            model,
            layer,
            info.input_shape,
            info.mean,
            info.std,
            settings=settings,
            progress=progress,
        ).to_arrays()

    parts = _visualization_parts(model_id, layer, info, settings)
    return feature_vis.FeatureVisualization.from_arrays(
        cache.cached_arrays(VISUALIZATION_KIND, parts, compute)
    )


def visualization_seconds(channels: int, steps: int) -> float:
    """A rough forecast of a small model's feature visualization time, for the button."""
    return channels * steps * VIS_SECONDS_PER_STEP_CHANNEL


def best_crops(result: atlas.ChannelAtlas, images) -> np.ndarray:
    """(C, h, w, 3) each channel's best image cropped to its receptive field: the tiles."""
    best = [result.top(c)[0] for c in range(result.channels)]
    return atlas.example_crops(result, images, best)


def tiles_side(channels: int) -> float:
    """Pixels of the layer's tiles' longer side: a few channels make a small picture, 64 or
    more fill the page's width."""
    return float(np.clip(110 * np.sqrt(channels), 360, 900))


def tile_order(result: atlas.ChannelAtlas, by: str) -> np.ndarray:
    """Channels in the order the tiles are drawn: by channel, or by decreasing selectivity or
    mean activation, or increasing dead share (stable: ties keep channel order)."""
    key = {
        "selectivity": -result.selectivity,
        "mean activation": -result.mean_activation,
        "dead share": result.dead_share,
    }.get(by)
    if key is None:
        return np.arange(result.channels)
    return np.argsort(key, kind="stable")


TILE_ORDERS = ("channel", "selectivity", "mean activation", "dead share")


CLASSES_LAYER = "classes"  # the cache's layer name for the class model visualizations


def class_visualizations(
    model: nn.Module,
    info: data.DatasetInfo,
    model_id: str,
    settings: feature_vis.VisSettings,
    progress: Progress | None = None,
) -> feature_vis.FeatureVisualization:
    """Every output class's model visualization (Simonyan et al. 2014), computed once per model
    content and settings and kept on disk."""

    def compute() -> dict[str, np.ndarray]:
        return feature_vis.visualize_classes(
            model, info.input_shape, info.mean, info.std, settings=settings, progress=progress
        ).to_arrays()

    parts = _visualization_parts(model_id, CLASSES_LAYER, info, settings)
    return feature_vis.FeatureVisualization.from_arrays(
        cache.cached_arrays(VISUALIZATION_KIND, parts, compute)
    )


def class_visualization_stored(
    model_id: str, info: data.DatasetInfo, settings: feature_vis.VisSettings
) -> bool:
    return cache.is_stored(
        VISUALIZATION_KIND, _visualization_parts(model_id, CLASSES_LAYER, info, settings)
    )
