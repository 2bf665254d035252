"""One input's feature maps as the Activations page shows them: the forward pass summarized
(logits, probabilities, every leaf layer's maps and their global range), a layer's maps before
or after its activation, channel order and shared colour ranges, the per-channel table, and
how many test images judge a channel dead."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from dashboard.analysis import inputs, probe

BATCH_IMAGES = 256  # dead channels are judged over this many test images …
BATCH_MULT_ADDS = 4e10  # … or fewer, so big models spend at most a few seconds on it
SHOWN_IN_ALL = ("Conv", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")


def forward_summary(model: nn.Module, x: torch.Tensor) -> dict:
    """One forward pass: logits, softmax, every leaf layer's maps, and their global range."""
    logits, acts = probe.forward_with_activations(model, x)
    maps = {key: tensor[0].float().numpy() for key, tensor in acts.items()}
    spatial = [m for m in maps.values() if m.ndim == 3] or list(maps.values())
    low = min(float(m.min()) for m in spatial)
    high = max(float(m.max()) for m in spatial)
    return {
        "logits": logits[0].float().numpy(),
        "probabilities": torch.softmax(logits[0].float(), dim=0).numpy(),
        "maps": maps,
        "range": (low, high),
    }


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 → (H, W) or (H, W, 3) for figures."""
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def layer_label(record: probe.LayerRecord) -> str:
    return f"{inputs.layer_key(record)} · {record.type} · {'×'.join(map(str, record.output_shape))}"


def dead_image_count(images: int, mult_adds: int) -> int:
    """How many test images judge a channel dead: BATCH_IMAGES, fewer for big models."""
    return int(min(BATCH_IMAGES, images, max(8, BATCH_MULT_ADDS // max(mult_adds, 1))))


def layer_maps(
    result: dict, layer: str, partner: inputs.Partner | None, after: bool, model: nn.Module
) -> np.ndarray:
    """An input's maps of `layer`, before or after its activation."""
    own = result["maps"][layer]
    if not after or partner is None:
        return own
    if partner.direct:
        return result["maps"][partner.key]
    return inputs.after_activation(model, partner, torch.from_numpy(own)[None])[0].numpy()


def channel_order(maps: np.ndarray) -> np.ndarray:
    """Channels by decreasing mean activation."""
    return np.argsort(-maps.reshape(len(maps), -1).mean(axis=1), kind="stable")


def shared_range(
    layer_maps: Sequence[np.ndarray], global_ranges: Sequence[tuple[float, float]], scale: str
) -> tuple[float, float] | None:
    """One colour range for several inputs' maps (None when each map has its own): the
    layer's range over all of them for "per layer", all their maps' for "global"."""
    if scale == "per map":
        return None
    if scale == "global":
        ranges = list(global_ranges)
    else:
        ranges = [(float(m.min()), float(m.max())) for m in layer_maps]
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def stats_table(
    maps: np.ndarray, order: np.ndarray | None, dead: np.ndarray | None, dead_count: int
) -> pd.DataFrame:
    """Each channel's (or unit's) mean, max and share at or below zero for this input, and
    whether it is dead over the test images, in the order shown."""
    stats = probe.channel_stats(torch.from_numpy(maps)[None])
    rows = order if order is not None else range(len(stats))
    unit = "Channel" if maps.ndim == 3 else "Unit"
    return pd.DataFrame(
        {
            unit: [stats[c].channel for c in rows],
            "Mean": [stats[c].mean for c in rows],
            "Max": [stats[c].max for c in rows],
            "Zero or below (%)": [100 * stats[c].zero_fraction for c in rows],
            f"Dead over {dead_count} test images": [bool(dead[c]) for c in rows]
            if dead is not None
            else ["—"] * len(stats),
        }
    )


def every_layer_maps(
    layers: Sequence[probe.LayerRecord], result: dict
) -> list[tuple[str, np.ndarray]]:
    """(key, maps) of each conv, pooling and activation layer with spatial maps, in order."""
    return [
        (inputs.layer_key(r), result["maps"][inputs.layer_key(r)])
        for r in layers
        if len(r.output_shape) == 3 and (r.type.startswith(SHOWN_IN_ALL) or inputs.is_activation(r))
    ]
